"""How much accelerator memory a Wan call needs: weights per component, and the working memory of each phase.

Weights are counted from the components themselves (parameters and buffers, in their stored dtypes), which works on
the meta device: the released models are built there from their real configs (`released_memory_model`), no weights
needed. Working memory is a formula per phase, in bytes, for a batch of `batch` videos of `height` x `width` x
`num_frames`:

- DiT forward (`dit_activation_bytes`): `L = latent frames x (height / 16) x (width / 16)` tokens (32,760 at
  480 x 832 x 81, 75,600 at 720 x 1280 x 81). The residual stream is float32 (4·L·D bytes); the block's peak is the
  larger of self-attention (input, q, k, v and the attention output: 5·L·D; the projection's output replaces q, k
  and v) and the feed-forward (input, hidden, output: L·(2D + ffn)) in the compute dtype; plus the RoPE table (L x head dim, float32 cos and sin) and the text K/V of 512
  rows. Attention itself is assumed memory-efficient (flash / cuDNN / efficient SDPA keep O(L) state), as on a GPU.
  The sum is multiplied by `DIT_ACTIVATION_CALIBRATION`, the ratio measured to the formula on the CPU at the 1.3B's
  widths (2 blocks, 1,950 tokens: 126.6 MiB float32 and 75.1 MiB bf16 measured, benchmarks/RESULTS.md).
- VAE decode (`vae_decode_bytes`): the decoded video (3 x frames x H x W in the VAE's dtype) and a working set that
  does not grow with the frame count, `VAE_DECODE_UNITS` frames of `base_dim` channels at full resolution: 1,310 MiB
  beyond the output was measured at 240 x 416 with the released widths in float32 (36 such units; RESULTS.md).
  With tiling the working set is that of one tile (256 x 256 by default). Encoding (I2V, V2V, VACE) is
  `VAE_ENCODE_UNITS` (855 MiB measured at 240 x 416: 23 units).
- Text encoder: its weights, and a forward over 512 tokens (negligible beside them: ~0.1 GB for umT5-XXL).
- Latents and the solver's state: float32, `LATENT_COPIES` latent-sized tensors (latents, two predictions, the
  guided one, UniPC's history).

`RESERVED_BYTES` (CUDA context, cuBLAS workspace, allocator slack) is added to every peak: a budget is what the card
has, not what PyTorch may allocate.
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ..models.transformer_wan import TEXT_CONTEXT_LENGTH

GB = 10**9
RESERVED_BYTES = int(0.6 * GB)
DIT_ACTIVATION_CALIBRATION = 1.2
VAE_DECODE_UNITS = 36
VAE_ENCODE_UNITS = 23
LATENT_COPIES = 8
TEXT_TOKENS = TEXT_CONTEXT_LENGTH  # the DiT pads every text embedding to this many rows
_ROPE_BYTES_PER_TOKEN_AND_CHANNEL = 2 * 4  # cos and sin, float32


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of tensors as stored (works on the meta device; tied weights counted once). optimum-quanto's quantized
    weights count their data and scales (the tensor itself reports the dtype it dequantizes to)."""
    seen, total = set(), 0
    for tensor in tensors:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        data, scale = getattr(tensor, "_data", None), getattr(tensor, "_scale", None)
        if isinstance(data, torch.Tensor) and isinstance(scale, torch.Tensor):
            total += data.numel() * data.element_size() + scale.numel() * scale.element_size()
        else:
            total += tensor.numel() * tensor.element_size()
    return total


def module_bytes(module: torch.nn.Module | None) -> int:
    if module is None:
        return 0
    return tensor_bytes(list(module.parameters()) + list(module.buffers()))


@dataclass(frozen=True)
class MemoryModel:
    """The sizes a memory estimate needs, read from a pipeline's components (or the released configs).

    Weights in bytes as they will sit on the device; `dit_blocks` is the bytes of each block (what block-level group
    offloading moves at once) and `dit_largest_leaf` the largest single layer (leaf-level offloading).
    """

    text_encoder_weights: int
    image_encoder_weights: int
    dit_weights: int
    dit_blocks: tuple[int, ...]
    dit_largest_leaf: int
    vae_weights: int
    # DiT geometry
    dim: int
    ffn_dim: int
    head_dim: int
    patch_size: tuple[int, int, int]
    compute_itemsize: int  # bytes per element of the DiT's activations (2 for bf16)
    # VAE geometry
    vae_base_dim: int
    vae_itemsize: int
    latent_channels: int
    scale_factor_spatial: int
    scale_factor_temporal: int
    encodes_video: bool = False  # I2V, V2V and VACE encode a video (or image) before denoising
    num_experts: int = 1  # Wan 2.2 A14B: two DiTs of one size (`transformer`, `transformer_2`), one running at a time

    @property
    def dit_other_weights(self) -> int:
        """What block-level offloading keeps as one extra group: embeddings, output head, modulation."""
        return self.dit_weights - sum(self.dit_blocks)

    # ---- working memory per phase -------------------------------------------------------------------------------

    def num_tokens(self, height: int, width: int, num_frames: int) -> int:
        frames = (num_frames - 1) // self.scale_factor_temporal + 1
        patch_t, patch_h, patch_w = self.patch_size
        rows = height // self.scale_factor_spatial // patch_h
        columns = width // self.scale_factor_spatial // patch_w
        return math.ceil(frames / patch_t) * rows * columns

    def dit_activation_bytes(self, height: int, width: int, num_frames: int, batch: int = 1) -> int:
        tokens = batch * self.num_tokens(height, width, num_frames)
        item = self.compute_itemsize
        residual = 4 * tokens * self.dim
        block = item * tokens * max(5 * self.dim, 2 * self.dim + self.ffn_dim)
        rope = _ROPE_BYTES_PER_TOKEN_AND_CHANNEL * tokens * self.head_dim
        text = 2 * item * batch * TEXT_TOKENS * self.dim
        return int(DIT_ACTIVATION_CALIBRATION * (residual + block + rope + text))

    def latent_bytes(self, height: int, width: int, num_frames: int, batch: int = 1) -> int:
        frames = (num_frames - 1) // self.scale_factor_temporal + 1
        latent = (
            self.latent_channels
            * frames
            * (height // self.scale_factor_spatial)
            * (width // self.scale_factor_spatial)
        )
        return LATENT_COPIES * 4 * batch * latent

    def vae_decode_bytes(
        self, height: int, width: int, num_frames: int, batch: int = 1, tile: tuple[int, int] | None = None
    ) -> int:
        """The decoded video plus the decoder's working set (one tile's when `tile` (height, width) is given)."""
        output = 3 * batch * num_frames * height * width * self.vae_itemsize
        area = height * width if tile is None else min(tile[0], height) * min(tile[1], width)
        return output + VAE_DECODE_UNITS * self.vae_base_dim * area * self.vae_itemsize

    def vae_encode_bytes(self, height: int, width: int, num_frames: int, batch: int = 1) -> int:
        if not self.encodes_video:
            return 0
        video = 3 * batch * num_frames * height * width * self.vae_itemsize
        return video + VAE_ENCODE_UNITS * self.vae_base_dim * height * width * self.vae_itemsize


def memory_model_from_components(
    transformer: torch.nn.Module | None,
    vae: torch.nn.Module,
    text_encoder: torch.nn.Module | None = None,
    image_encoder: torch.nn.Module | None = None,
    *,
    transformer_2: torch.nn.Module | None = None,
    compute_dtype: torch.dtype | None = None,
    encodes_video: bool = False,
) -> MemoryModel:
    """A `MemoryModel` for these components (on any device, the meta device included). With two experts, the sizes
    are those of `transformer` (the Wan 2.2 experts have the same architecture)."""
    experts = [model for model in (transformer, transformer_2) if model is not None]
    transformer = experts[0]
    config = transformer.config
    blocks = [module_bytes(block) for name in ("blocks", "vace_blocks") for block in getattr(transformer, name, [])]
    leaves = [module_bytes(m) for m in transformer.modules() if not list(m.children())]
    if compute_dtype is None:
        compute_dtype = _most_common_float_dtype(transformer)
    vae_config = vae.config
    return MemoryModel(
        text_encoder_weights=module_bytes(text_encoder),
        image_encoder_weights=module_bytes(image_encoder),
        dit_weights=module_bytes(transformer),
        dit_blocks=tuple(blocks),
        dit_largest_leaf=max(leaves, default=0),
        vae_weights=module_bytes(vae),
        dim=config.num_attention_heads * config.attention_head_dim,
        ffn_dim=config.ffn_dim,
        head_dim=config.attention_head_dim,
        patch_size=tuple(config.patch_size),
        compute_itemsize=torch.empty((), dtype=compute_dtype).element_size(),
        vae_base_dim=vae_config.base_dim,
        vae_itemsize=_most_common_float_dtype(vae).itemsize,
        latent_channels=vae_config.z_dim,
        scale_factor_spatial=vae_config.scale_factor_spatial,
        scale_factor_temporal=vae_config.scale_factor_temporal,
        encodes_video=encodes_video,
        num_experts=len(experts),
    )


def _most_common_float_dtype(module: torch.nn.Module) -> torch.dtype:
    counts: dict[torch.dtype, int] = {}
    for parameter in module.parameters():
        if parameter.dtype in (torch.float32, torch.float16, torch.bfloat16):
            counts[parameter.dtype] = counts.get(parameter.dtype, 0) + parameter.numel()
    return max(counts, key=counts.get) if counts else torch.float32


# ----------------------------------------------------------------------------------------------------------------
# The released models, on the meta device

# The original `WanModel` sizes of the released DiTs (their `config.json`): width, feed-forward, layers.
RELEASED_DITS = {"1.3B": (1536, 8960, 30), "14B": (5120, 13824, 40)}
# umT5-XXL, the text encoder of every release (`models_t5_umt5-xxl-enc-bf16.pth`)
UMT5_XXL = dict(
    vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, feed_forward_proj="gated-gelu"
)


def released_transformer(size: str, dtype: torch.dtype = torch.bfloat16) -> torch.nn.Module:
    """The T2V DiT of a released size ("1.3B", "14B") on the meta device, in `dtype` with its
    `_keep_in_fp32_modules` in float32 (as `from_pretrained(torch_dtype=dtype)` loads it)."""
    from ..conversion.transformer import transformer_config_from_original
    from ..loaders.single_file import WAN_ATTENTION_HEAD_DIM
    from ..models.transformer_wan import WanTransformer3DModel

    dim, ffn_dim, num_layers = RELEASED_DITS[size]
    original = dict(dim=dim, ffn_dim=ffn_dim, num_layers=num_layers, num_heads=dim // WAN_ATTENTION_HEAD_DIM)
    original.update(in_dim=16, out_dim=16, freq_dim=256, eps=1e-6)
    config = transformer_config_from_original(original, {"text_embedding.0.weight": (dim, UMT5_XXL["d_model"])})
    with torch.device("meta"):
        transformer = WanTransformer3DModel.from_config(config)
    keep = set(transformer._keep_in_fp32_modules)
    for name, parameter in transformer.named_parameters():
        if not keep & set(name.split(".")):
            parameter.data = parameter.data.to(dtype)
    return transformer


def released_memory_model(size: str, dtype: torch.dtype = torch.bfloat16) -> MemoryModel:
    """The T2V pipeline of a released size ("1.3B", "14B"): DiT (`released_transformer`) and text encoder in
    `dtype`, the VAE in float32, all built on the meta device from the real configs."""
    from transformers import UMT5Config, UMT5EncoderModel

    from ..models.autoencoder_kl_wan import AutoencoderKLWan

    transformer = released_transformer(size, dtype)
    with torch.device("meta"):
        vae = AutoencoderKLWan()  # the defaults are the released VAE's
        text_encoder = UMT5EncoderModel(UMT5Config(**UMT5_XXL))
    text_encoder.to(dtype)
    return memory_model_from_components(transformer, vae, text_encoder, compute_dtype=dtype)
