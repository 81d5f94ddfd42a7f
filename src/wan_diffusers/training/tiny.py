"""The tiny shapes model set: its tokenizer, frozen text encoder, VAE and DiT configurations.

`scripts/train_tiny_shapes.py` builds these, trains the VAE (`training.vae.train_vae`) and the DiT (`wan-diffusers
train`) on `training.shapes` clips (the text encoder stays frozen), and writes the result to
`wan_diffusers/assets/tiny_shapes/`, which `wan_diffusers.tiny_model_path()` returns.

Sizes are chosen for a 2-core CPU: 64 x 64 x 17-frame videos become 8 x 5 x 16 x 16 latents (a VAE with 4x spatial
and 4x temporal compression), which the DiT sees as 5 x 8 x 8 = 320 tokens.
"""

import torch

from .shapes import COLOURS, DIRECTIONS, EXTRA_COLOURS, SHAPES

HEIGHT = WIDTH = 64
NUM_FRAMES = 17
TEXT_DIM = 32
TEXT_OUTPUT_SCALE = 10.0  # see `shapes_text_encoder`
SHIFT = 5.0  # the timestep shift it is trained and sampled with: Wan's default
# what `wan-diffusers generate` uses with this model when not told otherwise
DEFAULT_PROMPT = "a red circle moves right"
SAMPLING_DEFAULTS = {"height": HEIGHT, "width": WIDTH, "frames": NUM_FRAMES, "steps": 20, "max_area": HEIGHT * WIDTH}
# Whole words the tokenizer keeps as one token: the grammar, the LoRA task's extra colours and a few spares. Any other
# text still tokenizes, character by character.
WORDS = ("a", "moves", *COLOURS, *EXTRA_COLOURS, *SHAPES, *DIRECTIONS, "diamond", "star", "orange", "purple")


def shapes_tokenizer():
    """The demo's umT5-style character tokenizer (`pipelines.demo.demo_tokenizer`) with `WORDS` kept whole."""
    from ..pipelines.demo import demo_tokenizer

    return demo_tokenizer(words=WORDS)


def shapes_text_encoder(vocab_size: int, seed: int = 0):
    """A 2-layer umT5 encoder with frozen random weights (the DiT learns to read its features), its output scaled up.

    Wan's cross-attention attends to all 512 context rows, and a 6-token prompt leaves 506 of them zero padding that
    the text embedding turns into one shared row: at initialisation the prompt's rows make about 1 % of the attention
    output. The final norm's weight is `TEXT_OUTPUT_SCALE` instead of 1, so their values stand out from the start;
    with it the DiT's loss gap between right and shuffled captions was 1.6x larger after 1,000 steps and 1.4x after
    2,000 (0.093 against 0.059, 0.130 against 0.093).
    """
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=TEXT_DIM,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",
    )
    encoder = UMT5EncoderModel(config).eval().requires_grad_(False)
    encoder.encoder.final_layer_norm.weight.data.fill_(TEXT_OUTPUT_SCALE)
    return encoder


def shapes_vae(seed: int = 0):
    """A 640k-parameter Wan 2.1 VAE: 8 latent channels, 4x spatial and 4x temporal compression."""
    from ..models.autoencoder_kl_wan import AutoencoderKLWan

    torch.manual_seed(seed)
    z_dim = 8
    return AutoencoderKLWan(
        base_dim=16,
        z_dim=z_dim,
        dim_mult=[1, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[True, True],
        latents_mean=[0.0] * z_dim,  # measured on the data after training (`training.vae.latent_statistics`)
        latents_std=[1.0] * z_dim,
        scale_factor_temporal=4,
        scale_factor_spatial=4,
    )


def shapes_transformer(z_dim: int = 8, seed: int = 0):
    """A 4-layer Wan 2.1 DiT, 64 wide (2 heads of 32), 2 x 2 latent patches."""
    from ..models.transformer_wan import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=32,
        in_channels=z_dim,
        out_channels=z_dim,
        text_dim=TEXT_DIM,
        freq_dim=64,
        ffn_dim=128,
        num_layers=4,
    )
