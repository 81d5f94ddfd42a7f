"""Wan's flow-matching training objective.

Follows DiffSynth-Studio's Wan training (`diffsynth/diffusion/flow_match.py`: `FlowMatchScheduler.set_timesteps_wan`,
`add_noise`, `training_target`, `set_training_weight`; `diffsynth/diffusion/loss.py`: `FlowMatchSFTLoss`), which is
the schedule Wan samples with (`wan/utils/fm_solvers.py` in the original, shift 5 by default):

- 1000 training sigmas `linspace(1, 0, 1001)[:-1]`, shifted as `shift * s / (1 + (shift - 1) * s)`; timestep
  `t = 1000 * sigma`. A training step draws one grid point per sample uniformly, so the shift moves the draws
  towards high noise, as it does at inference.
- noisy latents `x_t = (1 - sigma) * x_0 + sigma * noise`; the model predicts the velocity `noise - x_0`.
- mean squared error, weighted by DiffSynth's bell-shaped curve over timesteps (mean 1 over the grid), which
  de-emphasises the nearly-clean and nearly-pure-noise ends; `weighting="none"` turns it off.

DiffSynth draws one timestep per batch; this draws one per sample (the same distribution, lower variance).
"""

import torch

NUM_TRAIN_TIMESTEPS = 1000
WEIGHTINGS = ("bell", "none")


def training_sigmas(shift: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """The shifted sigma grid [num_train_timesteps], from (nearly) 1 down to (nearly) 0, float64."""
    sigmas = torch.linspace(1.0, 0.0, num_train_timesteps + 1, dtype=torch.float64)[:-1]
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def bell_weights(sigmas: torch.Tensor, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """DiffSynth's `set_training_weight`: exp(-2 ((t - 500) / 1000)^2), shifted to start at 0, mean 1."""
    timesteps = sigmas * num_train_timesteps
    curve = torch.exp(-2 * ((timesteps - num_train_timesteps / 2) / num_train_timesteps) ** 2)
    curve = curve - curve.min()
    return curve * (len(curve) / curve.sum())


class FlowMatchingObjective:
    """Draws timesteps and noise, builds the model input and target, and weighs the loss.

    Args:
        shift (`float`): the timestep shift (5 for Wan 2.1 480p/720p; use the shift you will sample with).
        weighting (`str`): "bell" (DiffSynth's) or "none".
        sigma_range (`tuple[float, float]`): keep only the grid points with `low <= sigma <= high`. A Wan 2.2 A14B
            expert is trained on its own part of the schedule: the high-noise one on sigmas at or above the
            boundary (`boundary_ratio`, 0.875 for text-to-video), the low-noise one below it.
    """

    def __init__(self, shift: float = 5.0, weighting: str = "bell", sigma_range: tuple[float, float] = (0.0, 1.0)):
        if shift <= 0:
            raise ValueError(f"`shift` must be positive, got {shift}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"`weighting` must be one of {WEIGHTINGS}, got {weighting!r}")
        self.shift = shift
        sigmas = training_sigmas(shift)
        weights = bell_weights(sigmas) if weighting == "bell" else torch.ones_like(sigmas)
        low, high = sigma_range
        keep = (sigmas >= low) & (sigmas <= high)
        if not keep.any():
            raise ValueError(f"no training timestep has a sigma in {sigma_range} (shift {shift})")
        self.sigmas, self.weights = sigmas[keep], weights[keep]

    def sample(self, latents: torch.Tensor, generator: torch.Generator | None = None):
        """Clean `latents` [B, C, F, H, W] -> (noisy latents, timesteps [B] on the 0-1000 scale, target, weights [B]).

        Noise is drawn on the CPU from `generator` (so that a seed gives the same run on any device).
        """
        batch = latents.shape[0]
        index = torch.randint(0, len(self.sigmas), (batch,), generator=generator)
        noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(latents.device)
        sigma = self.sigmas[index].float().to(latents.device).view(batch, 1, 1, 1, 1)
        clean = latents.float()
        noisy = (1 - sigma) * clean + sigma * noise
        target = noise - clean
        timesteps = (sigma.view(batch) * 1000).to(latents.device)
        return noisy, timesteps, target, self.weights[index].float().to(latents.device)

    @staticmethod
    def loss(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Weighted mean squared error: per-sample MSE times its timestep weight, averaged over the batch."""
        per_sample = (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)
        return (per_sample * weights).mean()
