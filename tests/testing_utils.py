"""Numeric helpers shared by the tests.

Every parity check in this suite reports one of two figures, as the fixtures' README defines them:
`max_rel(a, b) = max|a - b| / max|b|` (relative to the largest reference value, so it is not blown up by values
near zero) and `max_abs(a, b) = max|a - b|`.
"""

import torch


def max_abs(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = _comparable(actual, expected)
    return (actual - expected).abs().max().item()


def max_rel(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = _comparable(actual, expected)
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def _comparable(actual: torch.Tensor, expected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if actual.shape != expected.shape:
        raise AssertionError(f"shape mismatch: got {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    return actual.detach().double().cpu(), expected.detach().double().cpu()
