"""Checks that a pipeline's numbers are finite and in range, and that its result is: a NaN in any input turns the
whole video black without an error, so each input is refused up front with a ValueError naming the argument."""

import math

import numpy as np
import torch


def check_finite_number(name: str, value) -> None:
    """A Python or 0-d tensor number that is finite."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}")


def check_finite_tensor(name: str, tensor: torch.Tensor | None) -> None:
    """No NaN or infinity in `tensor` (one reduction, one host sync, before any model runs)."""
    if tensor is None or not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        return
    if not torch.isfinite(tensor).all():
        bad = (~torch.isfinite(tensor)).sum().item()
        raise ValueError(f"`{name}` must hold finite values, got {bad} NaN or infinite value(s) of {tensor.numel()}")


def check_sigmas(sigmas) -> None:
    """Custom sigmas: finite, in (0, 1] (1 is pure noise; the solvers append the final 0 themselves)."""
    if sigmas is None:
        return
    values = np.asarray(sigmas.detach().cpu() if isinstance(sigmas, torch.Tensor) else sigmas, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"`sigmas` must be a flat list of numbers, got shape {list(values.shape)}")
    bad = [float(value) for value in values if not (math.isfinite(value) and 0 < value <= 1)]
    if bad:
        raise ValueError(f"`sigmas` must be finite and in (0, 1], got {bad[:3]}{' ...' if len(bad) > 3 else ''}")


def check_generator(generator) -> None:
    """`generator`: None, a `torch.Generator` or a list of them; checked before the text encoder runs."""
    generators = generator if isinstance(generator, list) else [generator]
    for item in generators:
        if item is not None and not isinstance(item, torch.Generator):
            raise ValueError(
                f"`generator` must be a torch.Generator or a list of them, got {type(item).__name__} ({item!r}); "
                "for a seed, pass torch.Generator().manual_seed(seed)"
            )


def check_pixel_values(name: str, frames) -> None:
    """Floating-point pixels (an array, a tensor, or a list of them) must be finite and in [0, 1]."""
    items = frames if isinstance(frames, (list, tuple)) else [frames]
    if not items or isinstance(frames, (np.ndarray, torch.Tensor)) and frames.ndim >= 4 and frames.shape[0] == 0:
        raise ValueError(f"`{name}` must hold at least one frame, got none")
    for item in items:
        if isinstance(item, np.ndarray) and np.issubdtype(item.dtype, np.floating):
            item = torch.from_numpy(item)
        if not isinstance(item, torch.Tensor) or not item.is_floating_point() or item.numel() == 0:
            continue
        check_finite_tensor(name, item)
        low, high = item.min().item(), item.max().item()
        if low < 0 or high > 1:
            raise ValueError(
                f"`{name}` with floating-point values must be in [0, 1], got values in [{low:.3g}, {high:.3g}]"
            )


def check_result(latents: torch.Tensor) -> None:
    """The denoised latents must be finite: NaN decodes to a black video that nothing would flag."""
    if not torch.isfinite(latents).all():
        raise FloatingPointError(
            "The denoising produced NaN or infinite latents (an overflow in the model, e.g. float16 weights, or "
            "extreme inputs); no video was made. Try --dtype bfloat16 or float32"
        )
