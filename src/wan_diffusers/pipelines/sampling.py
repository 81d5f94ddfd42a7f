"""Noise schedules: the original Wan2.1 samplers as diffusers schedulers, and a task's default scheduler.

The original `generate.py` offers two solvers (`--sample_solver unipc | dpm++`). Their maths is diffusers' UniPC
(bh2, order 2) and DPM-Solver++ (midpoint, order 2) on flow-matching sigmas, but their sigma *lists* (the original's
`FlowUniPCMultistepScheduler.set_timesteps` in `wan/utils/fm_solvers_unipc.py` and `get_sampling_sigmas` in
`wan/utils/fm_solvers.py`) differ from what diffusers' schedulers build for `use_flow_sigmas=True`:

| solver | original sigmas before the shift (N steps) | diffusers `use_flow_sigmas` |
|---|---|---|
| unipc | `linspace(float32(0.999), 0, N + 1)[:-1]` | `linspace(1, 1/1000, N + 1)[:-1]` (first one minus 1e-6) |
| dpm++ | `linspace(1, 0, N + 1)[:N]` (starts at exactly 1) | `linspace(0.999, 0, N + 1)[:-1]` |

Both then shift `s * sigma / (1 + (s - 1) * sigma)`, append a final 0, and hand the DiT `int64(sigma * 1000)`
(truncated) while stepping with the float32 sigmas. On a 3-step run the different lists move the final latents by
5-8 %, so `FlowUniPCMultistepScheduler` and `FlowDPMSolverMultistepScheduler` below are diffusers' schedulers with
the original lists as their default. `original_scheduler("unipc", shift=5.0)` builds one; every pipeline of this
package has `pipe.use_original_sampling(...)`, the one-liner that installs it.
"""

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from ..tasks import default_variant
from .experts import wan22_variant_of

SOLVERS = ("unipc", "dpm++")

# The original UniPC table starts at sigma = 1 - alphas[-1] with alphas = linspace(1, 1/1000, 1000) in float64,
# stored as float32: float32(0.999) = 0.9990000128746033 is its largest sigma.
_UNIPC_SIGMA_MAX = float(np.float32(0.999))


def original_sigmas(solver: str, num_inference_steps: int) -> np.ndarray:
    """The original's N sigmas before the shift, float64, without the final 0. Shape [N]."""
    if solver not in SOLVERS:
        raise ValueError(f"`solver` must be one of {SOLVERS}, got {solver!r}")
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"`num_inference_steps` must be a positive integer, got {num_inference_steps!r}")
    if solver == "unipc":
        return np.linspace(_UNIPC_SIGMA_MAX, 0.0, num_inference_steps + 1)[:-1].copy()
    return np.linspace(1.0, 0.0, num_inference_steps + 1)[:num_inference_steps].copy()


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """The flow-matching time shift `s * sigma / (1 + (s - 1) * sigma)`, in float64 as the original."""
    sigmas = np.asarray(sigmas, dtype=np.float64)
    return shift * sigmas / (1 + (shift - 1) * sigmas)


class FlowUniPCMultistepScheduler(UniPCMultistepScheduler):
    """diffusers' flow-matching UniPC with the sigma list of the original Wan2.1 `sample_solver='unipc'`.

    Only the default schedule changes: `set_timesteps(N)` uses `linspace(float32(0.999), 0, N + 1)[:-1]` instead of
    diffusers' list; `flow_shift` is applied to it (and to any `sigmas` passed in) exactly as diffusers does, and the
    timesteps are `int64(sigma * 1000)`, truncated, as in the original. Build it with `original_scheduler`.
    """

    def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None):
        if sigmas is None:
            if num_inference_steps is None:
                raise ValueError("`set_timesteps` needs `num_inference_steps` or `sigmas`, got neither")
            sigmas = original_sigmas("unipc", num_inference_steps)
        super().set_timesteps(device=device, sigmas=np.asarray(sigmas, dtype=np.float64), mu=mu)


class FlowDPMSolverMultistepScheduler(DPMSolverMultistepScheduler):
    """diffusers' flow-matching DPM-Solver++ with the sigma list of the original Wan2.1 `sample_solver='dpm++'`.

    `set_timesteps(N)` uses `linspace(1, 0, N + 1)[:N]` (the first timestep is 1000) shifted by `flow_shift`; custom
    `sigmas` (unshifted, like diffusers' UniPC takes them) are accepted too. The solver maths is diffusers'
    unchanged: at sigma = 1 the log-SNR is -inf, which only zeroes the terms the original zeroes as well.
    """

    def set_timesteps(self, num_inference_steps=None, device=None, mu=None, timesteps=None, sigmas=None):
        if timesteps is not None:
            if sigmas is not None:
                raise ValueError("Pass only one of `timesteps` and `sigmas` to `set_timesteps`")
            return super().set_timesteps(device=device, mu=mu, timesteps=timesteps)
        if sigmas is None:
            if num_inference_steps is None:
                raise ValueError("`set_timesteps` needs `num_inference_steps` or `sigmas`, got neither")
            sigmas = original_sigmas("dpm++", num_inference_steps)
        # Let diffusers reset the solver state for this many steps, then install the original list.
        super().set_timesteps(num_inference_steps=len(sigmas), device=device, mu=mu)
        shifted = shift_sigmas(sigmas, self.config.flow_shift)
        self.timesteps = torch.from_numpy(shifted * self.config.num_train_timesteps).to(device, torch.int64)
        self.sigmas = torch.from_numpy(np.append(shifted, 0.0).astype(np.float32))
        self.num_inference_steps = len(shifted)


def original_scheduler(solver: str = "unipc", shift: float = 5.0) -> SchedulerMixin:
    """A scheduler that samples like the original `generate.py --sample_solver {solver} --sample_shift {shift}`.

    The number of steps (`--sample_steps`) is the pipeline's `num_inference_steps`.
    """
    if solver not in SOLVERS:
        raise ValueError(f"`solver` must be one of {SOLVERS}, got {solver!r}")
    if not shift > 0:
        raise ValueError(f"`shift` must be a positive number, got {shift!r}")
    common = dict(
        num_train_timesteps=1000,
        solver_order=2,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=float(shift),
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    if solver == "unipc":
        return FlowUniPCMultistepScheduler(solver_type="bh2", predict_x0=True, **common)
    return FlowDPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_type="midpoint", **common)


def default_scheduler(task: str) -> FlowMatchEulerDiscreteScheduler:
    """Flow-matching Euler with the original shift of the task's default variant (`wan_diffusers.tasks`)."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=default_variant(task).shift)


def scheduler_shift(scheduler: SchedulerMixin) -> float | None:
    """The flow shift a scheduler applies (`flow_shift` for UniPC / DPM, `shift` for flow-matching Euler)."""
    config = scheduler.config
    return config.get("flow_shift", config.get("shift"))


class OriginalSamplingMixin:
    """`use_original_sampling` for the Wan pipelines."""

    def use_original_sampling(self, solver: str = "unipc", shift: float | None = None) -> None:
        """Sample exactly like the original `generate.py --sample_solver {solver} --sample_shift {shift}`.

        Replaces `self.scheduler` with diffusers' UniPC or DPM-Solver++ set up with the original sigma schedule
        (`wan_diffusers.pipelines.sampling`); `--sample_steps` is `num_inference_steps` of the call. `shift` defaults
        to the current scheduler's shift; for a Wan 2.2 pipeline (two experts, or per-token timesteps) to the
        original's for that model (12 for T2V-A14B, 5 for I2V-A14B and TI2V-5B: official Diffusers repos of the A14B
        models carry 3.0). With the original's inputs, the final latents then match the original within float32
        rounding; the A14B experts switch at the same step as in the original.

        Example: `pipe.use_original_sampling("unipc", shift=5.0)`.
        """
        variant = wan22_variant_of(self)
        if shift is None and variant is not None:
            shift = variant.shift
        if shift is None:
            shift = scheduler_shift(self.scheduler)
            if shift is None:
                raise ValueError(
                    f"`shift` is required: the current scheduler ({type(self.scheduler).__name__}) has no flow shift"
                )
        self.scheduler = original_scheduler(solver, shift)
