"""WanVACETransformer3DModel: the Wan 2.1 transformer plus VACE's control branch (all-in-one video creation/editing).

VACE adds a second, shorter stack of transformer blocks (the "hint" blocks) that reads a control input: 96 channels
per latent position, the VAE latents of the inactive and reactive parts of a source video (16 + 16) and the
space-to-depth pixel mask (64). Hint block 0 starts from `proj_in(control tokens) + video tokens`, every hint block
runs the ordinary block computation on the control stream and emits `proj_out(stream)` as its hint, and hint n is
added (times a scale) to the output of main block `vace_layers[n]`. All hints are computed from the patch-embedded
video tokens *before* the main blocks run, as the original `VaceWanModel` does.

The main blocks, attention, RoPE, conditioning and output head are those of `WanTransformer3DModel` (this class
subclasses it); a hint block is a `WanTransformerBlock` with the two projections added. Weights, config fields and
the forward signature are those of diffusers' Hub format (`Wan-AI/Wan2.1-VACE-*-diffusers`), the numerics those of
the original, with one difference from diffusers beyond the base model's (float64 timestep sinusoid, float32 residual
stream): hint n goes to main block `vace_layers[n]` as the original maps it, also when `vace_layers` is not sorted
(diffusers hands the hints out in the order the main blocks run).
"""

import torch
import torch.nn as nn
from diffusers.configuration_utils import register_to_config
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput
from diffusers.models.modeling_outputs import Transformer2DModelOutput

# diffusers' generic `DiffusionPipeline.from_pretrained` finds how to load a component by looking its base classes up
# in the module that model_index.json names, so `ModelMixin` must be a name of this module.
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401
from diffusers.utils import apply_lora_scale
from diffusers.utils.torch_utils import maybe_allow_in_graph

from .transformer_wan import WanTransformer3DModel, WanTransformerBlock, patch_tokens

# diffusers' default: the 14B layout, a hint after every fifth of 40 blocks.
_DEFAULT_VACE_LAYERS = (0, 5, 10, 15, 20, 25, 30, 35)


@maybe_allow_in_graph
class WanVACETransformerBlock(WanTransformerBlock):
    """A transformer block on the control stream that also emits a hint for the main stream.

    The body (self-attention, cross-attention to the text, feed-forward, with the same timestep modulation) is the
    parent's. Hint block 0 first adds the projected control tokens to the video tokens (`proj_in`, the original's
    `before_proj`); every hint block projects its output into a hint (`proj_out`, the original's `after_proj`).
    """

    def __init__(
        self,
        dim: int,
        ffn_dim: int,
        num_heads: int,
        cross_attn_norm: bool = True,
        eps: float = 1e-6,
        added_kv_proj_dim: int | None = None,
        apply_input_projection: bool = False,
    ):
        super().__init__(dim, ffn_dim, num_heads, cross_attn_norm, eps, added_kv_proj_dim)
        self.proj_in = nn.Linear(dim, dim) if apply_input_projection else None
        self.proj_out = nn.Linear(dim, dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        control_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        rotary_emb: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (hint, control_hidden_states), both (B, S, D) float32.

        hidden_states (B, S, D): the patch-embedded video tokens (read by block 0 only); control_hidden_states
        (B, S, D): the control stream, float32; the rest as in `WanTransformerBlock`.
        """
        compute_dtype = encoder_hidden_states.dtype
        if self.proj_in is not None:
            control_hidden_states = self.proj_in(control_hidden_states.to(compute_dtype)).float() + hidden_states
        control_hidden_states = super().forward(
            control_hidden_states, encoder_hidden_states, temb, rotary_emb, encoder_hidden_states_image
        )
        hint = self.proj_out(control_hidden_states.to(compute_dtype)).float()
        return hint, control_hidden_states


class WanVACETransformer3DModel(WanTransformer3DModel):
    r"""The Wan 2.1 VACE transformer: `WanTransformer3DModel` plus the control (hint) branch.

    Args:
        patch_size, num_attention_heads, attention_head_dim, in_channels, out_channels, text_dim, freq_dim, ffn_dim,
        num_layers, cross_attn_norm, qk_norm, eps, image_dim, added_kv_proj_dim, rope_max_seq_len, pos_embed_seq_len:
            as in `WanTransformer3DModel` (the released VACE models have no image embedder).
        vace_layers (`list[int]`, defaults to `[0, 5, 10, 15, 20, 25, 30, 35]`): the main blocks that receive a
            hint, one hint block each, in this order; must contain 0. The releases: every 2nd of 30 blocks (1.3B),
            every 5th of 40 (14B).
        vace_in_channels (`int`, defaults to 96): control channels: inactive latent 16, reactive latent 16, mask 64.

    Example:
        ```py
        >>> import torch
        >>> from wan_diffusers import WanVACETransformer3DModel

        >>> model = WanVACETransformer3DModel(num_attention_heads=2, attention_head_dim=16, text_dim=32, ffn_dim=64,
        ...                                   num_layers=2, freq_dim=32, vace_layers=[0, 1])
        >>> latents = torch.randn(1, 16, 3, 8, 8)  # (batch, channels, latent frames, height, width)
        >>> control = torch.randn(1, 96, 3, 8, 8)  # inactive 16 | reactive 16 | mask 64
        >>> text = torch.randn(1, 7, 32)
        >>> model(latents, torch.tensor([999]), text, control_hidden_states=control).sample.shape
        torch.Size([1, 16, 3, 8, 8])
        ```
    """

    _skip_layerwise_casting_patterns = ["patch_embedding", "vace_patch_embedding", "condition_embedder", "norm"]
    _no_split_modules = ["WanTransformerBlock", "WanVACETransformerBlock"]
    _repeated_blocks = ["WanTransformerBlock", "WanVACETransformerBlock"]
    # Context parallelism (diffusers' engine): the hint blocks run on the video tokens before the main blocks do, so
    # the video tokens are split where hint block 0 reads them, and again where block 0 does; the control stream is
    # split with them, so every hint is already the rank's share of tokens when a main block adds it. Only
    # self-attention sees other ranks' tokens (the engine's all-to-all or ring); the head's output is gathered.
    _cp_plan = {
        "rope": {0: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True)},
        "vace_blocks.0": {
            "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False),
            "control_hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False),
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
        vace_layers: list[int] = _DEFAULT_VACE_LAYERS,
        vace_in_channels: int = 96,
    ):
        vace_layers = list(vace_layers)
        if not vace_layers or any(not isinstance(layer, int) or layer < 0 for layer in vace_layers):
            raise ValueError(f"`vace_layers` must be a non-empty list of block indices, got {vace_layers}")
        if max(vace_layers) >= num_layers:
            raise ValueError(f"`vace_layers` must name blocks below `num_layers` ({num_layers}), got {vace_layers}")
        # the random number state the initial weights are drawn from (see `_redraw_initial_weights`)
        rng_state = torch.random.get_rng_state()
        if 0 not in vace_layers:
            raise ValueError(f"`vace_layers` must contain block 0 (hint block 0 feeds it), got {vace_layers}")
        if len(set(vace_layers)) != len(vace_layers):
            raise ValueError(f"`vace_layers` must not repeat a block, got {vace_layers}")
        super().__init__(
            patch_size=patch_size,
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            in_channels=in_channels,
            out_channels=out_channels,
            text_dim=text_dim,
            freq_dim=freq_dim,
            ffn_dim=ffn_dim,
            num_layers=num_layers,
            cross_attn_norm=cross_attn_norm,
            qk_norm=qk_norm,
            eps=eps,
            image_dim=image_dim,
            added_kv_proj_dim=added_kv_proj_dim,
            rope_max_seq_len=rope_max_seq_len,
            pos_embed_seq_len=pos_embed_seq_len,
        )
        inner_dim = num_attention_heads * attention_head_dim

        # 1. control patch embedding
        self.vace_patch_embedding = nn.Conv3d(vace_in_channels, inner_dim, kernel_size=patch_size, stride=patch_size)

        # 2. hint blocks, one per entry of `vace_layers`; only the first reads the video tokens
        self.vace_blocks = nn.ModuleList(
            WanVACETransformerBlock(
                inner_dim,
                ffn_dim,
                num_attention_heads,
                cross_attn_norm,
                eps,
                added_kv_proj_dim,
                apply_input_projection=position == 0,
            )
            for position in range(len(vace_layers))
        )
        # main block index -> the hint it receives
        self._hint_positions = {layer: position for position, layer in enumerate(vace_layers)}
        self._redraw_initial_weights(rng_state)

    @torch.no_grad()
    def _redraw_initial_weights(self, rng_state: torch.Tensor) -> None:
        """Draw the random initial weights again from `rng_state`, in the order diffusers' `WanVACETransformer3DModel`
        builds its modules (the control patch embedding right after the video's, the hint blocks right after the
        main ones, a hint block's `proj_in` first and its `proj_out` before its modulation table), so that one seed
        gives both classes the same weights, as diffusers' tests expect. Only the draws change, never a module, key
        or shape; loaded weights replace them. Skipped where the weights are not on the CPU (meta tensors while
        `from_pretrained` loads, or another device's generator)."""
        if any(parameter.device.type != "cpu" for parameter in self.parameters()):
            return
        torch.random.set_rng_state(rng_state)
        _redraw(self.patch_embedding)
        _redraw(self.vace_patch_embedding)
        _redraw(self.condition_embedder)
        _redraw(self.blocks)
        for block in self.vace_blocks:
            if block.proj_in is not None:
                block.proj_in.reset_parameters()
            for name, child in block.named_children():
                if name not in ("proj_in", "proj_out"):
                    _redraw(child)
            block.proj_out.reset_parameters()
            _redraw_table(block.scale_shift_table)
        _redraw(self.norm_out)
        _redraw(self.proj_out)
        _redraw_table(self.scale_shift_table)

    @apply_lora_scale("attention_kwargs")
    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None = None,
        control_hidden_states: torch.Tensor | None = None,
        control_hidden_states_scale: torch.Tensor | list[float] | float | None = None,
        return_dict: bool = True,
        attention_kwargs: dict | None = None,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        r"""Predict the flow of a batch of video latents under a VACE control input.

        Args:
            hidden_states (`torch.Tensor`): noisy latents [B, in_channels, F, H, W] (reference frames included).
            timestep (`torch.Tensor`): [B] or a scalar, on the 0-1000 scale.
            encoder_hidden_states (`torch.Tensor`): T5 embeddings [B, L <= 512, text_dim], zero-padded to 512 rows
                here as the original does.
            encoder_hidden_states_image (`torch.Tensor`, *optional*): CLIP tokens, only for a model built with
                `image_dim` (no released VACE model has one).
            control_hidden_states (`torch.Tensor`): the VACE context [B, vace_in_channels, F_c, H, W], F_c <= F
                (missing trailing frames count as zero control tokens, as diffusers pads them).
            control_hidden_states_scale (`float`, list or `torch.Tensor`, *optional*): hint scale, one value for all
                hint layers (the original's `vace_context_scale`) or one per entry of `vace_layers`; default 1.
            return_dict (`bool`, defaults to `True`): return a `Transformer2DModelOutput` instead of a tuple.
            attention_kwargs (`dict`, *optional*): `{"scale": s}` scales LoRA adapters.

        Returns:
            `Transformer2DModelOutput` with `sample` [B, out_channels, F, H, W] in float32, or `(sample,)`.
        """
        timestep = self._check_inputs(hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image)
        hint_scales = self._check_control_inputs(hidden_states, control_hidden_states, control_hidden_states_scale)

        # 1. patchify the video and the control input: (B, C, F, H, W) -> (B, S, D), float32
        grid = self._patch_grid(hidden_states)
        rotary_emb = self.rope(hidden_states)
        hidden_states, compute_dtype = self._embed_patches(hidden_states)
        control_hidden_states = self._embed_control(control_hidden_states, hidden_states.shape[1])

        # 2. conditioning
        temb, timestep_proj, encoder_hidden_states, encoder_hidden_states_image = self.condition_embedder(
            timestep, encoder_hidden_states, encoder_hidden_states_image, compute_dtype
        )
        timestep_proj = timestep_proj.unflatten(-1, (6, -1))  # (B, 6, D) or, per token, (B, S, 6, D)
        encoder_hidden_states, encoder_hidden_states_image = self._join_image_tokens(
            encoder_hidden_states, encoder_hidden_states_image
        )

        # 3. hints, all computed from the patch-embedded video tokens before the main blocks run
        hints = []
        for block in self.vace_blocks:
            hint, control_hidden_states = self._run_block(
                block,
                hidden_states,
                encoder_hidden_states,
                control_hidden_states,
                timestep_proj,
                rotary_emb,
                encoder_hidden_states_image,
            )
            hints.append(hint)

        # 4. main blocks; block `vace_layers[n]` adds hint n times its scale to its output
        for index, block in enumerate(self.blocks):
            position = self._hint_positions.get(index)
            hint = None if position is None else hints[position].to(hidden_states.device) * hint_scales[position]
            hidden_states = self._run_block(
                block,
                hidden_states,
                encoder_hidden_states,
                timestep_proj,
                rotary_emb,
                encoder_hidden_states_image,
                hint,
            )

        # 5. output head and unpatchify
        output = self._unpatchify(self._output_head(hidden_states, temb, compute_dtype), grid)
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)

    def _check_control_inputs(
        self,
        hidden_states: torch.Tensor,
        control_hidden_states: torch.Tensor | None,
        control_hidden_states_scale: torch.Tensor | list[float] | float | None,
    ) -> torch.Tensor:
        """Validate the control input's shape and return the hint scales as a float32 tensor [len(vace_layers)]."""
        num_hints = len(self.config.vace_layers)
        channels = self.config.vace_in_channels
        if control_hidden_states is None:
            raise ValueError(
                f"`control_hidden_states` is required: the VACE context [B, {channels}, F, H, W] (for plain "
                "text-to-video, the context of an all-zero video with an all-ones mask)"
            )
        batch_size, _, num_frames, height, width = hidden_states.shape
        if (
            control_hidden_states.ndim != 5
            or control_hidden_states.shape[:2] != (batch_size, channels)
            or control_hidden_states.shape[3:] != (height, width)
            or control_hidden_states.shape[2] > num_frames
        ):
            raise ValueError(
                f"`control_hidden_states` must have shape [{batch_size}, {channels}, F <= {num_frames}, {height}, "
                f"{width}] to match `hidden_states`, got {tuple(control_hidden_states.shape)}"
            )
        if control_hidden_states.shape[2] % self.config.patch_size[0]:
            raise ValueError(
                f"`control_hidden_states` frames ({control_hidden_states.shape[2]}) must be divisible by the patch "
                f"size {self.config.patch_size[0]}"
            )

        scale = 1.0 if control_hidden_states_scale is None else control_hidden_states_scale
        if isinstance(scale, torch.Tensor):
            scale = scale.to(device=hidden_states.device, dtype=torch.float32)
        else:
            scale = torch.tensor(scale, dtype=torch.float32, device=hidden_states.device)
        if scale.ndim == 0:
            scale = scale.expand(num_hints)
        if scale.shape != (num_hints,):
            raise ValueError(
                f"`control_hidden_states_scale` must be a number or hold one value per VACE layer ({num_hints}, "
                f"`vace_layers` = {list(self.config.vace_layers)}), got shape {tuple(scale.shape)}"
            )
        return scale

    def _embed_control(self, control_hidden_states: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """(B, C_vace, F_c, H, W) -> (B, S, D) float32; tokens of missing trailing frames are zeros."""
        control_hidden_states = self.vace_patch_embedding(
            control_hidden_states.to(self.vace_patch_embedding.weight.dtype)
        )
        control_hidden_states = patch_tokens(control_hidden_states)
        padding_tokens = num_tokens - control_hidden_states.shape[1]
        if padding_tokens:
            control_hidden_states = nn.functional.pad(control_hidden_states, (0, 0, 0, padding_tokens))
        return control_hidden_states


# diffusers' hooks look blocks up by class. The stream a hint block carries forward is the control stream, returned
# second (after the hint).
TransformerBlockRegistry.register(
    WanVACETransformerBlock,
    TransformerBlockMetadata(
        return_hidden_states_index=1,
        return_encoder_hidden_states_index=None,
        hidden_states_argument_name="control_hidden_states",
    ),
)


def _redraw(module: nn.Module) -> None:
    """Draw a module's random initial weights again, in the order it built them: its submodules in registration
    order (linear and convolution layers as their constructors draw them), then its own modulation table."""
    if isinstance(module, (nn.Linear, nn.Conv3d)):
        module.reset_parameters()
        return
    for child in module.children():
        _redraw(child)
    if isinstance(getattr(module, "scale_shift_table", None), nn.Parameter):
        _redraw_table(module.scale_shift_table)


def _redraw_table(table: nn.Parameter) -> None:
    """A modulation table as the constructors draw it: `torch.randn(shape) / dim**0.5`."""
    table.copy_(torch.randn(table.shape) / table.shape[-1] ** 0.5)
