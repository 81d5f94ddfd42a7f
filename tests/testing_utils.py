"""Numeric helpers shared by the tests.

Every parity check in this suite reports one of two figures, as the fixtures' README defines them:
`max_rel(a, b) = max|a - b| / max|b|` (relative to the largest reference value, so it is not blown up by values
near zero) and `max_abs(a, b) = max|a - b|`.
"""

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


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


class LargestIntermediate(TorchDispatchMode):
    """Records the size of every tensor an operation returns, with the storage it lives in."""

    def __init__(self):
        super().__init__()
        self.outputs: list[tuple[int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(result):
            if isinstance(leaf, torch.Tensor):
                self.outputs.append((leaf.numel(), leaf.untyped_storage().data_ptr()))
        return result

    def largest_except(self, *tensors: torch.Tensor) -> int:
        """The largest tensor that is none of `tensors` nor a view of them."""
        excluded = {tensor.untyped_storage().data_ptr() for tensor in tensors}
        return max(numel for numel, storage in self.outputs if storage not in excluded)
