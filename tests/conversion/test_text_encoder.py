"""The umT5 text encoder's key map and config (conversion/text_encoder.py); parity after conversion is tested on the
converted repos in test_convert.py."""

import pytest
import torch
from transformers import UMT5EncoderModel

from wan_diffusers.conversion.rules import ConversionError, check_state_dict, rename_state_dict
from wan_diffusers.conversion.text_encoder import TEXT_ENCODER_RULES, text_encoder_config_from_shapes

from factories.parity import manifest, original_component_state_dict

T5 = "models_t5_umt5-xxl-enc-bf16.pth"


def released_umt5_xxl_shapes() -> dict[str, tuple[int, ...]]:
    """The key shapes of the released `models_t5_umt5-xxl-enc-bf16.pth` (`umt5_xxl` in the original `wan/modules/t5.py`)."""
    shapes = {"token_embedding.weight": (256384, 4096), "norm.weight": (4096,)}
    for i in range(24):
        shapes |= {f"blocks.{i}.attn.{p}.weight": (4096, 4096) for p in "qkvo"}
        shapes |= {f"blocks.{i}.norm1.weight": (4096,), f"blocks.{i}.norm2.weight": (4096,)}
        shapes |= {f"blocks.{i}.ffn.gate.0.weight": (10240, 4096), f"blocks.{i}.ffn.fc1.weight": (10240, 4096)}
        shapes |= {f"blocks.{i}.ffn.fc2.weight": (4096, 10240), f"blocks.{i}.pos_embedding.embedding.weight": (32, 64)}
    return shapes


def test_config_of_the_tiny_encoder_is_read_from_its_weights():
    state_dict = original_component_state_dict(T5)
    config = text_encoder_config_from_shapes({key: tuple(t.shape) for key, t in state_dict.items()})
    args = manifest("t2v")["t5_args"]
    assert (config.vocab_size, config.d_model, config.num_heads) == (
        args["vocab_size"],
        args["dim"],
        args["num_heads"],
    )
    assert (config.d_kv * config.num_heads, config.d_ff) == (args["dim_attn"], args["dim_ffn"])
    assert (config.num_layers, config.relative_attention_num_buckets) == (args["encoder_layers"], args["num_buckets"])
    assert config.relative_attention_max_distance == args["max_dist"] == 128


def test_config_of_the_released_encoder_is_the_official_one():
    """The values of the `text_encoder/config.json` of the official Wan2.1 Diffusers repos (e.g.
    Wan-AI/Wan2.1-T2V-1.3B-Diffusers on the Hub)."""
    config = text_encoder_config_from_shapes(released_umt5_xxl_shapes())
    sizes = {"d_model": 4096, "d_ff": 10240, "d_kv": 64, "num_heads": 64, "num_layers": 24, "vocab_size": 256384}
    relative_attention = {"relative_attention_num_buckets": 32, "relative_attention_max_distance": 128}
    rest = {"feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu_new", "layer_norm_epsilon": 1e-6}
    official = sizes | relative_attention | rest | {"pad_token_id": 0, "eos_token_id": 1}
    assert {key: getattr(config, key) for key in official} == official
    assert config.architectures == ["UMT5EncoderModel"]


def test_every_original_key_maps_onto_umt5_encoder_model():
    state_dict = original_component_state_dict(T5)
    config = text_encoder_config_from_shapes({key: tuple(t.shape) for key, t in state_dict.items()})
    converted = rename_state_dict(state_dict, TEXT_ENCODER_RULES, what="T5 encoder")
    model = UMT5EncoderModel(config)
    # `encoder.embed_tokens` is `shared` (tied): the map fills `shared` once
    expected = {key: t.shape for key, t in model.state_dict().items() if key != "encoder.embed_tokens.weight"}
    check_state_dict(converted, expected, what="T5 encoder")
    model.load_state_dict(converted, strict=False)
    assert torch.equal(model.encoder.embed_tokens.weight, state_dict["token_embedding.weight"])
    assert torch.equal(
        model.encoder.block[2].layer[1].DenseReluDense.wi_0.weight, state_dict["blocks.2.ffn.gate.0.weight"]
    )


def test_weights_that_are_not_an_umt5_encoder_are_refused():
    shapes = released_umt5_xxl_shapes()
    del shapes["blocks.0.pos_embedding.embedding.weight"]
    with pytest.raises(ConversionError, match="lacks blocks.0.pos_embedding.embedding.weight"):
        text_encoder_config_from_shapes(shapes)
    shapes = released_umt5_xxl_shapes() | {"blocks.0.pos_embedding.embedding.weight": (32, 60)}
    with pytest.raises(
        ConversionError, match="attention width \\(4096\\) is not divisible by its number of heads \\(60"
    ):
        text_encoder_config_from_shapes(shapes)
