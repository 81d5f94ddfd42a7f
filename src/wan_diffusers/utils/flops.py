"""How much arithmetic one Wan DiT forward is, and how fast it could at best run on a given accelerator.

The count is read off the original `wan/modules/model.py` (`WanAttentionBlock`, `WanSelfAttention`, the FFN): every
matrix product counts 2 FLOPs per multiply-accumulate; norms, RoPE, modulation and softmax are left out (they are
memory-bound and cost time, not FLOPs). Per block, with `L` video tokens of width `d`, `C` context rows and an FFN of
width `f`:

- self-attention projections q, k, v, o: `4 d^2` MACs per token;
- self-attention core, `Q K^T` and `P V`: `2 L^2 d` MACs;
- cross-attention q and o on the video tokens, k and v on the `C` context rows, and its core `2 L C d` MACs;
- the FFN: `2 d f` MACs per token.

The patch embedding, the text and image embedding MLPs and the head are counted too (together under 0.1 % at real
sizes); the time embedding works on one row per sample and is left out. For the released T2V-1.3B at 832 x 480 x 81 (32,760 tokens) this gives 283 TFLOP per
forward, 71 % of it in the attention core; for T2V-14B at 1280 x 720 x 81 (75,600 tokens), 6,523 TFLOP.

The floor of a denoising step is its FLOPs over the accelerator's dense bf16 rate: `PEAK_TFLOPS` holds the rates the
reference uses (790 TFLOP/s for the H100 and H200 class, 165 for an RTX 4090); pass your own where the name is not
listed.
"""

from dataclasses import dataclass

# Dense bf16 matrix rate (TFLOP/s) reached in practice, by a substring of `torch.cuda.get_device_name()`.
PEAK_TFLOPS = {"H200": 790.0, "H100": 790.0, "H800": 790.0, "H20": 148.0, "A100": 312.0, "A800": 312.0, "4090": 165.0}


@dataclass(frozen=True)
class ForwardFlops:
    """FLOPs of one DiT forward for one sample, split as the reference table splits them."""

    linear: float
    attention: float
    embeddings: float

    @property
    def total(self) -> float:
        return self.linear + self.attention + self.embeddings


def video_tokens(config: dict, latent_frames: int, latent_height: int, latent_width: int) -> int:
    """Number of patch tokens of a latent video: the sequence length `L` the DiT attends over."""
    patch_t, patch_h, patch_w = config.get("patch_size", (1, 2, 2))
    return (latent_frames // patch_t) * (latent_height // patch_h) * (latent_width // patch_w)


def transformer_forward_flops(
    config: dict, latent_frames: int, latent_height: int, latent_width: int, text_tokens: int = 512
) -> ForwardFlops:
    """FLOPs of one forward of a Wan DiT with `config` (a `WanTransformer3DModel` or VACE config) on one latent video.

    `text_tokens` is the text context length, 512 in every Wan 2.1 model (the DiT pads every prompt to it). An I2V or
    FLF2V config (`image_dim` set) adds 257 CLIP tokens per conditioning image to the cross-attention context (one
    image for I2V, two for FLF2V, told apart by `pos_embed_seq_len`). A VACE config adds its hint blocks.
    """
    d = config["num_attention_heads"] * config["attention_head_dim"]
    ffn = config["ffn_dim"]
    tokens = video_tokens(config, latent_frames, latent_height, latent_width)
    patch_volume = 1
    for size in config.get("patch_size", (1, 2, 2)):
        patch_volume *= size

    image_tokens = 0
    embeddings = 0.0
    if config.get("image_dim"):
        image_tokens = config.get("pos_embed_seq_len") or 257
        image_dim = config["image_dim"]
        embeddings += 2 * image_tokens * (image_dim * image_dim + image_dim * d)
    context = text_tokens + image_tokens

    def block_flops() -> tuple[float, float]:
        self_projections = 4 * d * d * tokens
        cross_projections = 2 * d * d * tokens + 2 * d * d * context
        feed_forward = 2 * d * ffn * tokens
        core = 2 * tokens * tokens * d + 2 * tokens * context * d
        return 2.0 * (self_projections + cross_projections + feed_forward), 2.0 * core

    block_linear, block_attention = block_flops()
    blocks = config["num_layers"] + len(config.get("vace_layers") or ())
    linear, attention = blocks * block_linear, blocks * block_attention

    embeddings += 2 * tokens * patch_volume * (config.get("in_channels", 16) + config.get("out_channels", 16)) * d
    embeddings += 2 * text_tokens * (config.get("text_dim", 4096) * d + d * d)
    if config.get("vace_layers"):
        vace_blocks = len(config["vace_layers"])
        embeddings += 2 * tokens * patch_volume * config.get("vace_in_channels", 96) * d
        embeddings += 2 * (vace_blocks + 1) * tokens * d * d  # every hint block's proj_out, and the first's proj_in
    return ForwardFlops(linear=linear, attention=attention, embeddings=embeddings)


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 rate `PEAK_TFLOPS` lists for an accelerator named `device_name`, or None if it is unknown."""
    # the longest name first, so that "H200" is not read as "H20"
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key in device_name:
            return PEAK_TFLOPS[key]
    return None
