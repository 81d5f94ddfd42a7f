"""Wan 2.2 sampling: two denoising experts split at a boundary timestep (A14B), and TI2V-5B's per-token timesteps.

The A14B models are a pair of DiTs: `transformer` (the original's `high_noise_model`) runs the early, noisy steps and
`transformer_2` (`low_noise_model`) the rest. As `WanT2V.generate` / `WanI2V.generate` decide it (`wan/text2video.py`,
`wan/image2video.py`), a step belongs to the high-noise expert while its integer timestep is `>=` `boundary_ratio *
num_train_timesteps` (875 for T2V-A14B, 900 for I2V-A14B): a timestep of exactly 875 still runs the high-noise expert.
Each expert has its own guidance scale; diffusers' names are kept: `guidance_scale` for `transformer` (high noise),
`guidance_scale_2` for `transformer_2` (low noise). The original's `sample_guide_scale` tuple is (low, high).

TI2V-5B (`wan/textimage2video.py`, `WanTI2V.t2v` / `.i2v`) gives the DiT one timestep per 2 x 2 patch (`[B, tokens]`);
for image-to-video the tokens of latent frame 0, which holds the image's latent, get timestep 0, and that frame is put
back into the latents before the loop and after every solver step.
"""

import torch

from ..tasks import WanTask, wan22_variant
from .checks import check_finite_number


def high_noise_steps(timesteps: list[float], boundary_ratio: float, num_train_timesteps: int) -> list[bool]:
    """For each timestep, whether the high-noise expert (`transformer`) runs it: `t >= boundary_ratio * T`.

    The boundary is computed as the original does (`self.boundary * self.num_train_timesteps`, a float) and compared
    with the timestep the solver hands out (an integer for the original schedules).
    """
    boundary = boundary_ratio * num_train_timesteps
    return [t >= boundary for t in timesteps]


def check_expert_inputs(boundary_ratio, transformer, transformer_2, guidance_scale_2) -> None:
    """The two-expert arguments of a pipeline and a call, checked before anything runs."""
    if boundary_ratio is not None:
        if not isinstance(boundary_ratio, (int, float)) or not 0 <= boundary_ratio <= 1:
            raise ValueError(f"`boundary_ratio` must be a number in [0, 1], got {boundary_ratio!r}")
        # boundary_ratio 0 gives every step (t >= 0) to `transformer`: diffusers accepts it without `transformer_2`
        if transformer_2 is None and boundary_ratio > 0:
            raise ValueError(
                f"`boundary_ratio` ({boundary_ratio}) splits the steps between `transformer` and `transformer_2`, "
                "but the pipeline has no `transformer_2`: load the low-noise expert or set `boundary_ratio=None`"
            )
    elif transformer is None:
        raise ValueError(
            "The pipeline has no `transformer`: without `boundary_ratio` every step runs `transformer`; set "
            "`boundary_ratio` to run `transformer_2`"
        )
    if guidance_scale_2 is not None:
        if boundary_ratio is None:
            raise ValueError(
                f"`guidance_scale_2` ({guidance_scale_2}) is the low-noise expert's guidance and needs a two-expert "
                "pipeline (`transformer_2` and `boundary_ratio`); this one has no `boundary_ratio`"
            )
        if not isinstance(guidance_scale_2, (int, float)):
            raise ValueError(f"`guidance_scale_2` must be a number, got {guidance_scale_2!r}")
        check_finite_number("guidance_scale_2", guidance_scale_2)


def token_timestep_scale(
    latent_shape: tuple, patch_size: tuple[int, int, int], image_frame: bool, device=None
) -> torch.Tensor:
    """Per-token factors [tokens] that turn a step's timestep into TI2V's per-token timesteps: 0 on the tokens of
    latent frame 0 when it holds a given image, else 1.

    The original builds `mask2[0][0][:, ::2, ::2] * t` from a float32 mask of the latent's shape, one value per 2 x 2
    patch in token order (frame, row, column).
    """
    frames, height, width = latent_shape[2:]
    p_t, p_h, p_w = patch_size
    scale = torch.ones(frames // p_t, height // p_h, width // p_w, dtype=torch.float32, device=device)
    if image_frame:
        scale[0] = 0
    return scale.flatten()


def put_image_frame(latents: torch.Tensor, image_latent: torch.Tensor) -> torch.Tensor:
    """Latents [B, C, F, h, w] with frame 0 replaced by the image's latent [B or 1, C, 1, h, w] (a new tensor).

    `(1 - mask2) * z + mask2 * latent` in `WanTI2V.i2v` with the 0/1 mask is exactly this replacement.
    """
    image_latent = image_latent.to(latents).expand(latents.shape[0], -1, -1, -1, -1)
    return torch.cat([image_latent, latents[:, :, 1:]], dim=2)


def wan22_variant_of(pipe) -> WanTask | None:
    """The Wan 2.2 record of `wan_diffusers.tasks` a pipeline runs (two experts, or per-token timesteps), from its
    `task` and config; None for Wan 2.1."""
    two_experts = pipe.config.get("boundary_ratio") is not None
    per_token = bool(pipe.config.get("expand_timesteps"))
    if not (two_experts or per_token):
        return None
    return wan22_variant(pipe.task, two_experts=two_experts, per_token_timesteps=per_token)
