"""Key map and config of the text encoder: the release's umT5-XXL encoder `.pth` -> transformers `UMT5EncoderModel`.

The original encoder (`wan/modules/t5.py`) and transformers' umT5 compute the same thing: pre-norm blocks with an
RMS norm, attention without 1/sqrt(d) scaling plus a relative-position bias table per layer, a gated-GELU (tanh)
feed-forward, a final norm. Only the names differ. Every size is read from the weights:

| original key                                   | shape              | gives                        |
|------------------------------------------------|--------------------|------------------------------|
| `token_embedding.weight`                       | [vocab, d_model]   | vocab_size, d_model          |
| `blocks.{i}.attn.q.weight`                     | [heads*d_kv, d_model] | heads*d_kv                |
| `blocks.{i}.ffn.fc1.weight`                    | [d_ff, d_model]    | d_ff                         |
| `blocks.{i}.pos_embedding.embedding.weight`    | [buckets, heads]   | num_heads, num_buckets       |

The maximum relative distance (128) is a constant of the original code, not stored anywhere.
"""

import re

from transformers import UMT5Config

from .rules import ConversionError, Rule, require_keys

_I = r"(?P<i>\d+)"
_LAYER = r"encoder.block.\g<i>.layer"

TEXT_ENCODER_RULES: tuple[Rule, ...] = (
    # transformers ties `encoder.embed_tokens` to `shared` and saves the table once, under `shared`
    Rule(r"token_embedding\.weight", "shared.weight"),
    Rule(rf"blocks\.{_I}\.norm1\.weight", rf"{_LAYER}.0.layer_norm.weight"),
    Rule(rf"blocks\.{_I}\.attn\.(?P<proj>[qkvo])\.weight", rf"{_LAYER}.0.SelfAttention.\g<proj>.weight"),
    Rule(
        rf"blocks\.{_I}\.pos_embedding\.embedding\.weight", rf"{_LAYER}.0.SelfAttention.relative_attention_bias.weight"
    ),
    Rule(rf"blocks\.{_I}\.norm2\.weight", rf"{_LAYER}.1.layer_norm.weight"),
    # FFN: fc2(fc1(x) * gelu(gate(x))); transformers: wo(wi_1(x) * gelu(wi_0(x)))
    Rule(rf"blocks\.{_I}\.ffn\.gate\.0\.weight", rf"{_LAYER}.1.DenseReluDense.wi_0.weight"),
    Rule(rf"blocks\.{_I}\.ffn\.fc1\.weight", rf"{_LAYER}.1.DenseReluDense.wi_1.weight"),
    Rule(rf"blocks\.{_I}\.ffn\.fc2\.weight", rf"{_LAYER}.1.DenseReluDense.wo.weight"),
    Rule(r"norm\.weight", "encoder.final_layer_norm.weight"),
)

# `T5RelativeEmbedding(..., max_dist=128)` in the original; not derivable from the weights
RELATIVE_ATTENTION_MAX_DISTANCE = 128


def text_encoder_config_from_shapes(shapes: dict[str, tuple[int, ...]]) -> UMT5Config:
    """The `UMT5Config` of an original umT5 encoder checkpoint, from its weight shapes alone."""
    needed = ("token_embedding.weight", "blocks.0.attn.q.weight", "blocks.0.ffn.fc1.weight")
    needed += ("blocks.0.pos_embedding.embedding.weight",)
    require_keys(shapes, needed, what="the T5 checkpoint is not an umT5 encoder as Wan 2.1 releases it")
    vocab_size, d_model = shapes["token_embedding.weight"]
    inner_dim = shapes["blocks.0.attn.q.weight"][0]
    num_buckets, num_heads = shapes["blocks.0.pos_embedding.embedding.weight"]
    if inner_dim % num_heads:
        raise ConversionError(
            f"The T5 attention width ({inner_dim}) is not divisible by its number of heads ({num_heads}, the width of "
            "`blocks.0.pos_embedding.embedding.weight`)"
        )
    num_layers = 1 + max(int(m.group(1)) for key in shapes if (m := re.match(r"blocks\.(\d+)\.", key)))
    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=inner_dim // num_heads,
        d_ff=shapes["blocks.0.ffn.fc1.weight"][0],
        num_layers=num_layers,
        num_decoder_layers=num_layers,
        num_heads=num_heads,
        relative_attention_num_buckets=num_buckets,
        relative_attention_max_distance=RELATIVE_ATTENTION_MAX_DISTANCE,
        feed_forward_proj="gated-gelu",  # gelu with the tanh approximation, as the original's
        layer_norm_epsilon=1e-6,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    config.architectures = ["UMT5EncoderModel"]
    return config
