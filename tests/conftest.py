"""Shared pytest configuration: markers and the fixtures every test file may use.

Tiny-model factories live in `tests/factories/`, numeric helpers in `tests/testing_utils.py`, and the reference data
computed by the original Wan2.1 code in `tests/fixtures/wan21_parity/` (see its README.md).
"""

import pytest
import torch


def pytest_configure(config):
    # The tiny models gain nothing from intra-op threads, and on a busy 2-core machine idle OpenMP threads spin
    # against other processes (measured up to 15x slower). One thread also fixes the summation order of CPU kernels.
    torch.set_num_threads(1)
    config.addinivalue_line("markers", "parity: compares with outputs of the original Wan2.1 code (tests/fixtures)")
    config.addinivalue_line("markers", "oracle: compares with diffusers' built-in Wan classes on the same weights")
    config.addinivalue_line("markers", "slow: takes more than a few seconds on a 2-core CPU")


@pytest.fixture(autouse=True)
def _deterministic_torch():
    """Every test starts from the same global seed, in float32, with deterministic kernels where cheap."""
    torch.manual_seed(0)
    previous_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(previous_dtype)
