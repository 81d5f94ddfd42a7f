"""WanTransformer3DModel: the Wan 2.1 diffusion transformer for text-to-video, image-to-video and first-last-frame.

The file reads top to bottom: the two position encodings (timestep sinusoid, 3-D RoPE), attention, the conditioning
embedder, the transformer block, and the model.

Weights, config fields and the forward signature are those of diffusers' Hub format, so the `transformer/` folder of
any `Wan-AI/Wan2.1-*-Diffusers` repo loads unchanged. The numerics are those of the original Wan2.1 code, which
differs from diffusers in three places:

- the timestep sinusoid is computed in float64 (diffusers: float32, ~5e-6 relative difference in the output);
- the text context is zero-padded to 512 rows by the model itself and attended to without a mask, as the original
  does, so a caller that passes only the real tokens still gets the original result;
- in reduced precision the residual stream stays in float32 (matmuls run in the weight dtype), which is what the
  original's float32 autocast regions around every residual update amount to; diffusers rounds it to bf16 after
  every block.

The modulations and gated residual updates are fused multiply-adds (`addcmul` rounds once where the original rounds
the product and then the sum: rounding-level differences, 2.5e-7 relative on a 2-block model's output). Without
autograd they, the RoPE rotation and the GELU overwrite tensors made in the same call instead of allocating new
ones; these fast paths live in one section ("Fast paths" below) and the rule that makes them safe is stated once,
at `WanTransformerBlock.forward`.
"""

import dataclasses

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.hooks import SeaCacheConfig
from diffusers.hooks._helpers import (
    AttentionProcessorMetadata,
    AttentionProcessorRegistry,
    TransformerBlockMetadata,
    TransformerBlockRegistry,
)
from diffusers.loaders import PeftAdapterMixin
from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput
from diffusers.models.attention import AttentionMixin, AttentionModuleMixin, FeedForward
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.embeddings import PixArtAlphaTextProjection, TimestepEmbedding
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import FP32LayerNorm
from diffusers.utils import apply_lora_scale
from diffusers.utils.torch_utils import maybe_allow_in_graph, unwrap_module

from ..loaders.single_file import TransformerSingleFileMixin

# Wan 2.1 was trained with every T5 context zero-padded to 512 rows; the padded rows go through the text embedding
# (whose biases make them non-zero) and are attended to. Feeding only the real tokens changes the output by 30-50 %.
TEXT_CONTEXT_LENGTH = 512

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def timestep_sinusoid(timestep: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal timestep embedding `[cos | sin]` with frequencies 10000^(-i / (dim/2)), computed in float64.

    The original computes it in float64 (diffusers in float32, which moves the DiT output by up to ~5e-6 relative);
    fractional timesteps are therefore embedded exactly. MPS has no float64, so it falls back to float32 there.

    Shapes: timestep [...] -> [..., dim] float32 (one timestep per sample [B], or per token [B, S] for Wan 2.2).
    """
    dtype = torch.float32 if timestep.device.type == "mps" else torch.float64
    half = dim // 2
    frequencies = torch.pow(10000.0, -torch.arange(half, dtype=dtype, device=timestep.device) / half)
    angles = timestep.to(dtype)[..., None] * frequencies
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1).float()


# ---------------------------------------------------------------------------------------------------------------------
# Fast paths: every in-place update of the model is one of the functions below, behind an `in_place` flag that the
# callers set to `_updates_in_place()`. In place or not, each computes the same float32 operations (the outputs are
# equal bit for bit, `test_in_place_updates_without_autograd_give_the_same_output_and_leave_the_block_input_alone`).
# Which tensors may be overwritten: the aliasing rule at `WanTransformerBlock.forward`.


def _updates_in_place() -> bool:
    """Whether this forward may overwrite the tensors it makes: only when autograd records nothing (the backward pass
    would need the overwritten values). Inference then holds fewer activations and, on the CPU, spends less time
    faulting in fresh memory."""
    return not torch.is_grad_enabled()


def apply_rotary_emb(hidden_states: torch.Tensor, rotary_emb: torch.Tensor, in_place: bool = False) -> torch.Tensor:
    """Rotate adjacent channel pairs (2j, 2j+1) as complex numbers, in float32.

    `rotary_emb` holds (cos, sin) of each pair's angle interleaved, i.e. the complex rotations as real numbers. Eager
    mode multiplies complex numbers, one pass over the tensor; under `torch.compile` (Inductor generates no code for
    complex tensors and would fall back to eager kernels) and on MPS it spells the same products and sums out in
    real arithmetic, which Inductor fuses with its neighbours. Both compute in float32 and agree to rounding.
    `in_place` lets eager mode overwrite a float32 `hidden_states` instead of allocating the result (see above).

    Shapes: hidden_states [B, S, N, d]; rotary_emb [1, S, 1, d] float32 -> [B, S, N, d] in the input dtype.
    """
    pairs = hidden_states.float().unflatten(-1, (-1, 2))  # (B, S, N, d/2, 2)
    rotations = rotary_emb.unflatten(-1, (-1, 2))  # (1, S, 1, d/2, 2): (cos, sin)
    if torch.compiler.is_compiling() or hidden_states.device.type == "mps":
        real, imag = pairs.unbind(-1)
        cos, sin = rotations.unbind(-1)
        rotated = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1)
    elif in_place:
        rotated = torch.view_as_real(torch.view_as_complex(pairs).mul_(torch.view_as_complex(rotations)))
    else:
        rotated = torch.view_as_real(torch.view_as_complex(pairs) * torch.view_as_complex(rotations))
    return rotated.flatten(-2).type_as(hidden_states)


def modulate(
    hidden_states: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, in_place: bool = False
) -> torch.Tensor:
    """`hidden_states * (1 + scale) + shift` in one fused pass (rounded once: a fused multiply-add on CPU).

    `in_place` writes the result over `hidden_states` (a norm's output).
    """
    return torch.addcmul(shift, hidden_states, 1 + scale, out=hidden_states if in_place else None)


def _residual_add(
    residual: torch.Tensor, update: torch.Tensor, gate: torch.Tensor | None = None, in_place: bool = False
) -> torch.Tensor:
    """`residual + update * gate` (or `+ update`) in float32, in one pass; `in_place` writes it over `residual`.

    `update` may be in the compute dtype: the kernel reads it as float32, as `update.float()` would, without a copy.
    """
    if gate is None:
        return residual.add_(update) if in_place else residual + update
    return residual.addcmul_(update, gate) if in_place else torch.addcmul(residual, update, gate)


def _gelu(activation: nn.Module, hidden_states: torch.Tensor, in_place: bool = False) -> torch.Tensor:
    """The GELU of diffusers' `activation` module (`FeedForward.net[0]`); `in_place` overwrites `hidden_states`.

    The FFN's hidden activation [B, S, ffn_dim] is the largest tensor of a block; a second one costs more in fresh
    memory than the GELU costs in arithmetic (CPU, 1950 x 8960 float32: 46 ms out of place, 10 ms in place).
    """
    if in_place:
        return torch.ops.aten.gelu_(hidden_states, approximate=activation.approximate)
    return activation.gelu(hidden_states)


# ---------------------------------------------------------------------------------------------------------------------
# Layers


def per_token_modulation(table: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The learned table plus the projected timestep embedding, in float32, split into its named vectors.

    Shapes: table [1, n, D]; temb [B, n, D] (one timestep per sample) or [B, S, n, D] (one per token, as Wan 2.2's
    `WanModel.forward` computes for TI2V) -> n tensors [B, 1, D] or [B, S, D], which broadcast over the tokens.
    """
    if temb.ndim == 3:
        temb = temb[:, None]  # (B, 1, n, D)
    return (table.float()[:, None] + temb.float()).unbind(dim=2)


def _matmul_dtype(layer: nn.Module, fallback: torch.dtype) -> torch.dtype:
    """The dtype to feed a Linear: its weight dtype, or `fallback` when the weight is stored quantized."""
    dtype = layer.weight.dtype
    return dtype if dtype in _FLOAT_DTYPES else fallback


def patch_tokens(patches: torch.Tensor) -> torch.Tensor:
    """Patch embeddings [B, D, F', H', W'] -> contiguous float32 tokens [B, F'*H'*W', D], in one copy.

    Contiguous matters: element-wise ops give their output the layout of their first input, so a strided residual
    stream would stay strided through every block and every LayerNorm would copy it. (`.to(torch.float32,
    memory_format=torch.contiguous_format)` returns a strided float32 tensor as it is.)
    """
    tokens = patches.flatten(2).transpose(1, 2)  # a strided view
    return torch.empty_like(tokens, dtype=torch.float32, memory_format=torch.contiguous_format).copy_(tokens)


class WanRotaryPosEmbed(nn.Module):
    """3-D rotary position embedding over the (frame, row, column) grid of patches.

    The head dimension d is split into d - 4*(d//6) time channels and 2*(d//6) channels for each spatial axis; every
    axis has its own frequencies 1 / theta^(2j / d_axis) and positions start at 0. Angles, cosines and sines are
    computed in float64 once per grid size and kept as one float32 table, so the per-step path only reads it.
    """

    def __init__(
        self, attention_head_dim: int, patch_size: tuple[int, int, int], max_seq_len: int, theta: float = 1e4
    ):
        super().__init__()
        spatial_dim = 2 * (attention_head_dim // 6)
        self.axis_dims = (attention_head_dim - 2 * spatial_dim, spatial_dim, spatial_dim)
        self.patch_size = tuple(patch_size)
        self.max_seq_len = max_seq_len
        self.theta = theta
        # (grid, device) -> table. A plain dict, not buffers: the tables depend on the input size, must stay
        # float32 whatever the model is cast to, and must not be moved or saved by offload hooks and save_pretrained.
        self._tables: dict[tuple, torch.Tensor] = {}

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states [B, C, F, H, W] -> [1, F'*H'*W', 1, head_dim] float32: (cos, sin) of each channel pair."""
        num_frames, height, width = hidden_states.shape[2:]
        p_t, p_h, p_w = self.patch_size
        grid = (num_frames // p_t, height // p_h, width // p_w)
        if torch.compiler.is_compiling():
            return self._build_tables(grid, hidden_states.device)
        key = (grid, hidden_states.device)
        if key not in self._tables:
            if len(self._tables) >= 16:  # a handful of resolutions in practice; don't grow without bound
                self._tables.clear()
            self._tables[key] = self._build_tables(grid, hidden_states.device)
        return self._tables[key]

    def _build_tables(self, grid: tuple[int, int, int], device: torch.device) -> torch.Tensor:
        # Built on the CPU in float64 whatever the device (MPS has no float64), then moved once.
        axis_angles = []
        for size, dim in zip(grid, self.axis_dims):
            inverse_frequencies = 1.0 / torch.pow(
                self.theta, torch.arange(0, dim, 2, dtype=torch.float64, device="cpu") / dim
            )
            positions = torch.arange(size, dtype=torch.float64, device="cpu")
            axis_angles.append(torch.outer(positions, inverse_frequencies))  # [size, dim / 2]
        frames, rows, columns = grid
        time_angles, row_angles, column_angles = axis_angles
        angles = torch.cat(
            [
                time_angles[:, None, None, :].expand(frames, rows, columns, -1),
                row_angles[None, :, None, :].expand(frames, rows, columns, -1),
                column_angles[None, None, :, :].expand(frames, rows, columns, -1),
            ],
            dim=-1,
        ).reshape(1, frames * rows * columns, 1, -1)  # token order (frame, row, column), as the patch embedding
        # (cos, sin) interleaved: the layout of a complex tensor viewed as real, which `apply_rotary_emb` reads.
        return torch.stack((angles.cos(), angles.sin()), dim=-1).flatten(-2).float().to(device)


class WanAttnProcessor:
    """Wan attention, computed through diffusers' attention dispatcher so `set_attention_backend` picks the kernel.

    Self-attention rotates q and k with RoPE. Cross-attention attends to the text context and, for I2V/FLF2V, in a
    second attention with the same queries, to the CLIP image tokens; the two results are summed before the output
    projection. q and k are RMS-normalised over all heads together, before the split into heads.
    """

    _attention_backend = None
    _parallel_config = None

    def __call__(
        self,
        attn: "WanAttention",
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_hidden_states_image: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        is_self_attention = encoder_hidden_states is None
        context = hidden_states if is_self_attention else encoder_hidden_states

        if attn.fused_projections and is_self_attention:
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        elif attn.fused_projections:
            query = attn.to_q(hidden_states)
            key, value = attn.to_kv(context).chunk(2, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)

        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))  # (B, S, N, d)
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))  # (B, L, N, d)
        value = value.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            # q and k are the q/k norms' new tensors (the aliasing rule at WanTransformerBlock.forward)
            in_place = _updates_in_place()
            query = apply_rotary_emb(query, rotary_emb, in_place)
            key = apply_rotary_emb(key, rotary_emb, in_place)

        # Context parallelism shards the video tokens only, so only self-attention gathers across ranks.
        output = dispatch_attention_fn(
            query,
            key,
            value,
            attn_mask=attention_mask,
            backend=self._attention_backend,
            parallel_config=self._parallel_config if is_self_attention else None,
        )
        output = output.flatten(2, 3).type_as(query)  # (B, S, D)

        if encoder_hidden_states_image is not None:
            key_image = attn.norm_added_k(attn.add_k_proj(encoder_hidden_states_image)).unflatten(2, (attn.heads, -1))
            value_image = attn.add_v_proj(encoder_hidden_states_image).unflatten(2, (attn.heads, -1))
            output_image = dispatch_attention_fn(query, key_image, value_image, backend=self._attention_backend)
            output = output + output_image.flatten(2, 3).type_as(query)

        output = attn.to_out[0](output)
        return attn.to_out[1](output)


class WanAttention(nn.Module, AttentionModuleMixin):
    """Multi-head attention with q/k RMS norms; cross-attention may add K/V projections for CLIP image tokens."""

    _default_processor_cls = WanAttnProcessor
    _available_processors = [WanAttnProcessor]

    def __init__(
        self,
        dim: int,
        heads: int,
        eps: float,
        is_cross_attention: bool = False,
        added_kv_proj_dim: int | None = None,
        processor: WanAttnProcessor | None = None,
    ):
        super().__init__()
        self.heads = heads
        self.inner_dim = dim
        self.is_cross_attention = is_cross_attention  # read by AttentionModuleMixin.fuse_projections
        self.use_bias = True

        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)

        self.add_k_proj = self.add_v_proj = self.norm_added_k = None
        if added_kv_proj_dim is not None:
            self.add_k_proj = nn.Linear(added_kv_proj_dim, dim)
            self.add_v_proj = nn.Linear(added_kv_proj_dim, dim)
            self.norm_added_k = nn.RMSNorm(dim, eps=eps)

        self.set_processor(processor if processor is not None else self._default_processor_cls())

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_hidden_states_image: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.processor(
            self, hidden_states, encoder_hidden_states, encoder_hidden_states_image, attention_mask, rotary_emb
        )


class WanImageEmbedding(nn.Module):
    """CLIP image tokens -> model width: LayerNorm, MLP with exact GELU, LayerNorm.

    FLF2V first views the first- and last-frame tokens of a sample ([2B, 257, C]) as one sequence ([B, 514, C]) and
    adds a learned position table, so the model can tell the two frames apart.
    """

    def __init__(self, image_dim: int, dim: int, pos_embed_seq_len: int | None = None):
        super().__init__()
        self.norm1 = FP32LayerNorm(image_dim)  # eps 1e-5, the nn.LayerNorm default the original uses here
        self.ff = FeedForward(image_dim, dim, mult=1, activation_fn="gelu")
        self.norm2 = FP32LayerNorm(dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, pos_embed_seq_len, image_dim)) if pos_embed_seq_len else None

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        if self.pos_embed is not None:
            image_embeds = image_embeds.reshape(-1, self.pos_embed.shape[1], image_embeds.shape[-1]) + self.pos_embed
        return self.norm2(self.ff(self.norm1(image_embeds)))


class WanConditionEmbedder(nn.Module):
    """Timestep, text and image conditioning.

    Returns the timestep embedding `temb` [B, D] (used by the output head), its projection `timestep_proj` [B, 6D]
    (the six modulations of every block), both float32, and the text [B, 512, D] and image [B, 257 or 514, D] tokens
    in the compute dtype. With one timestep per token ([B, S], Wan 2.2 TI2V) the two are [B, S, D] and [B, S, 6D].
    """

    def __init__(
        self,
        dim: int,
        time_freq_dim: int,
        text_embed_dim: int,
        image_embed_dim: int | None = None,
        pos_embed_seq_len: int | None = None,
    ):
        super().__init__()
        self.time_freq_dim = time_freq_dim
        self.time_embedder = TimestepEmbedding(in_channels=time_freq_dim, time_embed_dim=dim)
        self.act_fn = nn.SiLU()
        self.time_proj = nn.Linear(dim, 6 * dim)
        self.text_embedder = PixArtAlphaTextProjection(text_embed_dim, dim, act_fn="gelu_tanh")
        self.image_embedder = None
        if image_embed_dim is not None:
            self.image_embedder = WanImageEmbedding(image_embed_dim, dim, pos_embed_seq_len)

    def forward(
        self,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None,
        compute_dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        # The original runs the time path in float32 (its weights stay float32 through `_keep_in_fp32_modules`).
        sinusoid = timestep_sinusoid(timestep, self.time_freq_dim)
        temb = self.time_embedder(sinusoid.to(_matmul_dtype(self.time_embedder.linear_1, compute_dtype))).float()
        timestep_proj = self.time_proj(self.act_fn(temb).to(_matmul_dtype(self.time_proj, compute_dtype))).float()

        padding_rows = TEXT_CONTEXT_LENGTH - encoder_hidden_states.shape[1]
        if padding_rows:
            encoder_hidden_states = nn.functional.pad(encoder_hidden_states, (0, 0, 0, padding_rows))
        encoder_hidden_states = self.text_embedder(encoder_hidden_states.to(compute_dtype))

        if encoder_hidden_states_image is not None:
            encoder_hidden_states_image = self.image_embedder(encoder_hidden_states_image.to(compute_dtype))
        return temb, timestep_proj, encoder_hidden_states, encoder_hidden_states_image


class WanFeedForward(FeedForward):
    """diffusers' `FeedForward` with the tanh GELU (same modules and weight names, `net.0.proj` and `net.2`), which
    applies the GELU in place into its own hidden activation when no gradient is recorded (`_gelu`)."""

    def __init__(self, dim: int, ffn_dim: int):
        super().__init__(dim, inner_dim=ffn_dim, activation_fn="gelu-approximate")

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        activation, dropout, proj_out = self.net
        hidden_states = _gelu(activation, activation.proj(hidden_states), in_place=_updates_in_place())
        return proj_out(dropout(hidden_states))


@maybe_allow_in_graph
class WanTransformerBlock(nn.Module):
    """Self-attention with RoPE, cross-attention to text (and image) tokens, feed-forward; adaLN modulation.

    The six modulation vectors (shift, scale and gate for self-attention, then for the feed-forward) are the learned
    `scale_shift_table` plus the projected timestep embedding, in float32. Cross-attention has no modulation and no
    gate. The original calls the affine cross-attention norm `norm3` and the feed-forward norm `norm2`; the Hub format
    swaps the names, so here `norm2` is the cross-attention norm.
    """

    def __init__(
        self,
        dim: int,
        ffn_dim: int,
        num_heads: int,
        cross_attn_norm: bool = True,
        eps: float = 1e-6,
        added_kv_proj_dim: int | None = None,
    ):
        super().__init__()
        # 1. self-attention
        self.norm1 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.attn1 = WanAttention(dim, num_heads, eps)
        # 2. cross-attention
        self.norm2 = FP32LayerNorm(dim, eps, elementwise_affine=True) if cross_attn_norm else nn.Identity()
        self.attn2 = WanAttention(dim, num_heads, eps, is_cross_attention=True, added_kv_proj_dim=added_kv_proj_dim)
        # 3. feed-forward
        self.norm3 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = WanFeedForward(dim, ffn_dim)

        self.scale_shift_table = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        rotary_emb: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None = None,
        hint: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # hidden_states (B, S, D) float32 residual stream; encoder_hidden_states (B, 512, D) in the compute dtype,
        # which is also the dtype every sub-layer is fed; temb (B, 6, D) float32, or (B, S, 6, D) with one timestep
        # per token (Wan 2.2 TI2V); hint (B, S, D) float32: a VACE
        # control hint (already scaled) added to the block's output, inside the block so that cache hooks that
        # skip blocks (FirstBlockCache, MagCache) account for it.
        compute_dtype = encoder_hidden_states.dtype
        shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa = per_token_modulation(
            self.scale_shift_table, temb
        )  # each (B, 1, D), or (B, S, D) with per-token timesteps

        # The aliasing rule of the fast paths (the one place it is stated): without autograd, a tensor may be
        # overwritten when this call of the block (or one of its sub-layers) made it and nothing reads its old value
        # afterwards. Never the block's inputs: cache hooks (FirstBlockCache, MagCache) compare the output with
        # `hidden_states`, and the contexts, `temb` and `rotary_emb` are shared by every block. Hence the first
        # residual update goes into a new tensor, and every later one updates that tensor; each norm's output is
        # modulated in place, q and k (the q/k norms' outputs) are rotated in place, and the FFN's hidden
        # activation goes through the GELU in place. The output head follows the same rule for `norm_out`.
        in_place = _updates_in_place()

        # 1. self-attention
        norm_hidden_states = modulate(self.norm1(hidden_states), shift_msa, scale_msa, in_place).to(compute_dtype)
        attn_output = self.attn1(norm_hidden_states, rotary_emb=rotary_emb)
        hidden_states = torch.addcmul(hidden_states, attn_output, gate_msa)  # a new tensor

        # 2. cross-attention
        norm_hidden_states = self.norm2(hidden_states).to(compute_dtype)
        attn_output = self.attn2(
            norm_hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            encoder_hidden_states_image=encoder_hidden_states_image,
        )
        hidden_states = _residual_add(hidden_states, attn_output, in_place=in_place)

        # 3. feed-forward
        norm_hidden_states = modulate(self.norm3(hidden_states), c_shift_msa, c_scale_msa, in_place)
        norm_hidden_states = norm_hidden_states.to(compute_dtype)
        ff_output = self.ffn(norm_hidden_states)
        hidden_states = _residual_add(hidden_states, ff_output, c_gate_msa, in_place=in_place)
        if hint is not None:
            hidden_states = _residual_add(hidden_states, hint, in_place=in_place)
        return hidden_states


class WanTransformer3DModel(
    ModelMixin, ConfigMixin, PeftAdapterMixin, CacheMixin, AttentionMixin, TransformerSingleFileMixin
):
    r"""The Wan 2.1 diffusion transformer (T2V, I2V and FLF2V), in diffusers' Hub format with the original numerics.

    Args:
        patch_size (`tuple[int, int, int]`, defaults to `(1, 2, 2)`): patch size over (frames, height, width).
        num_attention_heads (`int`, defaults to 40): attention heads.
        attention_head_dim (`int`, defaults to 128): channels per head; the model width is heads x head dim.
        in_channels (`int`, defaults to 16): latent channels in; 36 for I2V/FLF2V (noisy latent 16, mask 4,
            condition latent 16).
        out_channels (`int`, defaults to 16): latent channels out.
        text_dim (`int`, defaults to 4096): width of the T5 text embeddings.
        freq_dim (`int`, defaults to 256): size of the timestep sinusoid.
        ffn_dim (`int`, defaults to 13824): hidden size of the feed-forward.
        num_layers (`int`, defaults to 40): transformer blocks.
        cross_attn_norm (`bool`, defaults to `True`): affine LayerNorm before cross-attention.
        qk_norm (`str`, defaults to `"rms_norm_across_heads"`): the only normalisation Wan 2.1 uses.
        eps (`float`, defaults to 1e-6): epsilon of the norms.
        image_dim (`int`, *optional*): width of the CLIP image tokens (1280) for Wan 2.1 I2V/FLF2V (Wan 2.2 has no
            CLIP branch).
        added_kv_proj_dim (`int`, *optional*): input width of the image K/V projections (the model width). Left
            unset with `image_dim` set, the image tokens are prepended to the text tokens and share the text K/V
            projections, as diffusers' `WanTransformer3DModel` does with that configuration.
        rope_max_seq_len (`int`, defaults to 1024): RoPE positions per axis the model was built for.
        pos_embed_seq_len (`int`, *optional*): FLF2V's learned position table over the 2 x 257 image tokens.

    Example:
        ```py
        >>> import torch
        >>> from wan_diffusers import WanTransformer3DModel

        >>> model = WanTransformer3DModel(num_attention_heads=2, attention_head_dim=16, text_dim=32, ffn_dim=64,
        ...                               num_layers=2, freq_dim=32)
        >>> latents = torch.randn(1, 16, 3, 8, 8)  # (batch, channels, latent frames, height, width)
        >>> text = torch.randn(1, 7, 32)  # T5 embeddings, zero-padded to 512 rows inside the model
        >>> model(latents, timestep=torch.tensor([999]), encoder_hidden_states=text).sample.shape
        torch.Size([1, 16, 3, 8, 8])
        ```
    """

    _supports_gradient_checkpointing = True
    _skip_layerwise_casting_patterns = ["patch_embedding", "condition_embedder", "norm"]
    _no_split_modules = ["WanTransformerBlock"]
    # Loading in bf16 keeps these float32, as the original's float32 autocast regions do (diffusers does not keep
    # `time_proj`; its output feeds every modulation).
    _keep_in_fp32_modules = ["time_embedder", "time_proj", "scale_shift_table", "norm1", "norm2", "norm3"]
    _keys_to_ignore_on_load_unexpected = ["norm_added_q"]
    _repeated_blocks = ["WanTransformerBlock"]
    # Context parallelism (diffusers' engine): shard the video tokens and their RoPE table, gather at the output.
    # The text and image contexts are not sharded (769 tokens for I2V would not divide evenly).
    _cp_plan = {
        "rope": {0: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True)},
        # Per-token timesteps (Wan 2.2 TI2V) are split with the tokens where their sinusoids [B, S, 256] enter the
        # time MLP, so that the modulations of every block and of the head are the rank's share; one timestep per
        # sample ([B, 256]) is left whole (diffusers logs once that it skips it).
        "condition_embedder.time_embedder": {
            "sample": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False)
        },
        "blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False)},
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, int, int] = (1, 2, 2),
        num_attention_heads: int = 40,
        attention_head_dim: int = 128,
        in_channels: int = 16,
        out_channels: int = 16,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 13824,
        num_layers: int = 40,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        image_dim: int | None = None,
        added_kv_proj_dim: int | None = None,
        rope_max_seq_len: int = 1024,
        pos_embed_seq_len: int | None = None,
    ):
        super().__init__()
        if qk_norm != "rms_norm_across_heads":
            raise ValueError(f"`qk_norm` must be 'rms_norm_across_heads' (the Wan 2.1 architecture), got {qk_norm!r}")
        if added_kv_proj_dim is not None and image_dim is None:
            raise ValueError(
                f"`added_kv_proj_dim` ({added_kv_proj_dim}) projects CLIP image tokens and needs `image_dim`, their "
                "width (1280 for I2V/FLF2V); set both or neither"
            )
        if pos_embed_seq_len is not None and image_dim is None:
            raise ValueError("`pos_embed_seq_len` (FLF2V) needs `image_dim`, the CLIP token width")
        out_channels = out_channels or in_channels
        inner_dim = num_attention_heads * attention_head_dim

        # 1. patch and position embeddings
        self.rope = WanRotaryPosEmbed(attention_head_dim, patch_size, rope_max_seq_len)
        self.patch_embedding = nn.Conv3d(in_channels, inner_dim, kernel_size=patch_size, stride=patch_size)

        # 2. timestep, text and image conditioning
        self.condition_embedder = WanConditionEmbedder(
            dim=inner_dim,
            time_freq_dim=freq_dim,
            text_embed_dim=text_dim,
            image_embed_dim=image_dim,
            pos_embed_seq_len=pos_embed_seq_len,
        )

        # 3. transformer blocks
        self.blocks = nn.ModuleList(
            WanTransformerBlock(inner_dim, ffn_dim, num_attention_heads, cross_attn_norm, eps, added_kv_proj_dim)
            for _ in range(num_layers)
        )

        # 4. output head: adaLN with (shift, scale) from the unprojected timestep embedding
        self.norm_out = FP32LayerNorm(inner_dim, eps, elementwise_affine=False)
        self.proj_out = nn.Linear(inner_dim, out_channels * patch_size[0] * patch_size[1] * patch_size[2])
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, inner_dim) / inner_dim**0.5)

        self.gradient_checkpointing = False

    def enable_cache(self, config) -> None:
        """diffusers' `CacheMixin.enable_cache`. A `SeaCacheConfig` without `raw_vision_callback` gets this model's
        (`sea_cache_raw_vision`): SeaCache has built-in adapters only for its own classes, which it finds with
        `isinstance`, and on any other model it runs every block (with only a warning) unless given the callback."""
        if isinstance(config, SeaCacheConfig) and config.raw_vision_callback is None:
            config = dataclasses.replace(config, raw_vision_callback=sea_cache_raw_vision)
        super().enable_cache(config)

    @apply_lora_scale("attention_kwargs")
    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None = None,
        return_dict: bool = True,
        attention_kwargs: dict | None = None,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        r"""Predict the flow (noise minus clean latent) of a batch of video latents.

        Args:
            hidden_states (`torch.Tensor`): latents [B, in_channels, F, H, W]; for I2V/FLF2V the noisy latent, the
                4 mask channels and the condition latent concatenated on channels.
            timestep (`torch.Tensor`): [B] or a scalar, on the 0-1000 scale (the original feeds int64(sigma * 1000));
                or one per token, [B, F'*H'*W'] in token order (frame, row, column), as Wan 2.2 TI2V feeds it (0 on
                the tokens of a given image frame).
            encoder_hidden_states (`torch.Tensor`): T5 embeddings [B, L <= 512, text_dim]; zero-padded to 512 rows
                here, as the original does.
            encoder_hidden_states_image (`torch.Tensor`, *optional*): CLIP tokens (penultimate layer) [B, 257,
                image_dim]; for FLF2V [2B, 257, image_dim] with each sample's first- and last-frame tokens adjacent.
                Required when the model has an image embedder.
            return_dict (`bool`, defaults to `True`): return a `Transformer2DModelOutput` instead of a tuple.
            attention_kwargs (`dict`, *optional*): `{"scale": s}` scales LoRA adapters.

        Returns:
            `Transformer2DModelOutput` with `sample` [B, out_channels, F, H, W] in float32, or `(sample,)`.
        """
        timestep = self._check_inputs(hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image)

        # 1. patchify: (B, C, F, H, W) -> (B, F'*H'*W', D) and the RoPE tables of that grid
        grid = self._patch_grid(hidden_states)
        rotary_emb = self.rope(hidden_states)
        hidden_states, compute_dtype = self._embed_patches(hidden_states)

        # 2. conditioning
        temb, timestep_proj, encoder_hidden_states, encoder_hidden_states_image = self.condition_embedder(
            timestep, encoder_hidden_states, encoder_hidden_states_image, compute_dtype
        )
        timestep_proj = timestep_proj.unflatten(-1, (6, -1))  # (B, 6, D) or, per token, (B, S, 6, D)

        encoder_hidden_states, encoder_hidden_states_image = self._join_image_tokens(
            encoder_hidden_states, encoder_hidden_states_image
        )

        # 3. transformer blocks
        for block in self.blocks:
            hidden_states = self._run_block(
                block, hidden_states, encoder_hidden_states, timestep_proj, rotary_emb, encoder_hidden_states_image
            )

        # 4. output head and unpatchify
        output = self._unpatchify(self._output_head(hidden_states, temb, compute_dtype), grid)
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)

    # The pieces of `forward`, shared with WanVACETransformer3DModel.

    def _check_inputs(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None,
    ) -> torch.Tensor:
        """Validate shapes (never values: no host synchronisation) and return the timestep as [B] or [B, S]."""
        config = self.config
        if hidden_states.ndim != 5 or hidden_states.shape[1] != config.in_channels:
            raise ValueError(
                f"`hidden_states` must have shape [B, {config.in_channels}, F, H, W], got {tuple(hidden_states.shape)}"
            )
        for size, patch, name in zip(hidden_states.shape[2:], config.patch_size, ("frames", "height", "width")):
            if size % patch:
                raise ValueError(f"latent {name} ({size}) must be divisible by the patch size {patch}")
        batch_size = hidden_states.shape[0]
        timestep = torch.as_tensor(timestep, device=hidden_states.device)
        if timestep.ndim == 0 or timestep.shape == (1,):
            timestep = timestep.reshape(1).expand(batch_size)
        if timestep.ndim == 2:
            # one timestep per token (Wan 2.2 TI2V: `WanModel.forward` takes t as [B, seq_len])
            tokens = self._patch_grid(hidden_states)
            tokens = tokens[0] * tokens[1] * tokens[2]
            if timestep.shape != (batch_size, tokens):
                raise ValueError(
                    f"`timestep` per token must have shape [{batch_size}, {tokens}] (batch, latent patches), got "
                    f"{tuple(timestep.shape)}"
                )
        elif timestep.shape != (batch_size,):
            raise ValueError(
                f"`timestep` must be a scalar or have shape [{batch_size}] (or [{batch_size}, tokens] per token), "
                f"got {tuple(timestep.shape)}"
            )
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] != batch_size:
            raise ValueError(
                f"`encoder_hidden_states` must have shape [{batch_size}, L, {config.text_dim}], "
                f"got {tuple(encoder_hidden_states.shape)}"
            )
        if encoder_hidden_states.shape[1] > TEXT_CONTEXT_LENGTH:
            raise ValueError(
                f"`encoder_hidden_states` has {encoder_hidden_states.shape[1]} rows; Wan 2.1 takes at most "
                f"{TEXT_CONTEXT_LENGTH} text tokens"
            )
        if config.image_dim is not None and encoder_hidden_states_image is None:
            raise ValueError(
                "This model has an image embedder (I2V/FLF2V): pass the CLIP tokens as `encoder_hidden_states_image`"
            )
        if config.image_dim is None and encoder_hidden_states_image is not None:
            raise ValueError("`encoder_hidden_states_image` was given, but this model has no image embedder (T2V)")
        if encoder_hidden_states_image is not None:
            images_per_sample = 2 if config.pos_embed_seq_len is not None else 1
            expected = images_per_sample * batch_size
            if encoder_hidden_states_image.ndim != 3 or encoder_hidden_states_image.shape[0] != expected:
                raise ValueError(
                    f"`encoder_hidden_states_image` must have shape [{expected}, tokens, {config.image_dim}] "
                    f"({images_per_sample} image(s) per sample), got {tuple(encoder_hidden_states_image.shape)}"
                )
        return timestep

    def _join_image_tokens(
        self, encoder_hidden_states: torch.Tensor, encoder_hidden_states_image: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Without image K/V projections (`image_dim` set, `added_kv_proj_dim` not) the embedded image tokens go in
        front of the text tokens and cross-attention treats them as context: diffusers' meaning of that config."""
        if encoder_hidden_states_image is None or self.config.added_kv_proj_dim is not None:
            return encoder_hidden_states, encoder_hidden_states_image
        return torch.cat([encoder_hidden_states_image, encoder_hidden_states], dim=1), None

    def _patch_grid(self, hidden_states: torch.Tensor) -> tuple[int, int, int]:
        """Patches along (frames, height, width) of a latent [B, C, F, H, W]."""
        return tuple(size // patch for size, patch in zip(hidden_states.shape[2:], self.config.patch_size))

    def _embed_patches(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.dtype]:
        """(B, C, F, H, W) -> the float32 residual stream (B, S, D), and the dtype the sub-layers compute in."""
        hidden_states = self.patch_embedding(hidden_states.to(self.patch_embedding.weight.dtype))
        return patch_tokens(hidden_states), hidden_states.dtype

    def _run_block(self, block: nn.Module, hidden_states: torch.Tensor, *args) -> torch.Tensor:
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(block, hidden_states, *args)
        return block(hidden_states, *args)

    def _output_head(self, hidden_states: torch.Tensor, temb: torch.Tensor, compute_dtype: torch.dtype):
        """adaLN (shift, scale from the unprojected timestep embedding), then the linear head: (B, S, p*C) float32."""
        temb = temb[:, None] if temb.ndim == 2 else temb  # (B, 1 or S, D)
        shift, scale = per_token_modulation(self.scale_shift_table, temb[:, :, None])  # each (B, 1 or S, D)
        # With a multi-device `device_map` the head may live on another device than the last block.
        shift, scale = shift.to(hidden_states.device), scale.to(hidden_states.device)
        hidden_states = modulate(self.norm_out(hidden_states), shift, scale, in_place=_updates_in_place())
        return self.proj_out(hidden_states.to(compute_dtype)).float()

    def _unpatchify(self, hidden_states: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """(B, F'*H'*W', p_t*p_h*p_w*C) -> (B, C, F'*p_t, H'*p_h, W'*p_w); the head's outputs vary channel-fastest."""
        p_t, p_h, p_w = self.config.patch_size
        frames, rows, columns = grid
        hidden_states = hidden_states.reshape(hidden_states.shape[0], frames, rows, columns, p_t, p_h, p_w, -1)
        hidden_states = hidden_states.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, F', p_t, H', p_h, W', p_w)
        return hidden_states.flatten(6, 7).flatten(4, 5).flatten(2, 3)


def _skipped_attention_output(attention: WanAttention, *args, **kwargs) -> torch.Tensor:
    """What a skipped attention returns under diffusers' layer-skip guidance: its input, unchanged."""
    return kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]


def sea_cache_raw_vision(module: nn.Module, args: tuple, kwargs: dict) -> list[torch.Tensor] | None:
    """SeaCache's `raw_vision_callback` (`diffusers.hooks.SeaCacheConfig`) for our DiTs: per sample, the latent the
    output continues, [out_channels, F, H, W]: the first `out_channels` channels of `hidden_states`. I2V and FLF2V
    append the mask and the condition latent, which are not part of the output; Wan 2.2 TI2V's clean first frame is.
    (diffusers' own adapter takes the whole input and only for T2V, where the two are the same.)"""
    hidden_states = kwargs["hidden_states"] if "hidden_states" in kwargs else (args[0] if args else None)
    if not isinstance(hidden_states, torch.Tensor) or hidden_states.ndim != 5:
        return None
    return list(hidden_states[:, : unwrap_module(module).config.out_channels].unbind(0))


# diffusers' cache and guidance hooks (FirstBlockCache, MagCache, SeaCache, layer skipping) look blocks and attention
# processors up by class, so ours are registered next to diffusers' own.
TransformerBlockRegistry.register(
    WanTransformerBlock,
    TransformerBlockMetadata(return_hidden_states_index=0, return_encoder_hidden_states_index=None),
)
AttentionProcessorRegistry.register(
    WanAttnProcessor, AttentionProcessorMetadata(skip_processor_output_fn=_skipped_attention_output)
)
