"""Wan's flow-matching objective, against the formulas of DiffSynth-Studio's Wan training (`diffsynth/diffusion/
flow_match.py`)."""

import pytest
import torch

from wan_diffusers.training.objective import FlowMatchingObjective, bell_weights, training_sigmas


def test_sigma_grid_and_weights():
    sigmas = training_sigmas(shift=5.0)
    plain = torch.linspace(1.0, 0.0, 1001, dtype=torch.float64)[:-1]
    # exact formula in float64: shift * s / (1 + (shift - 1) * s)
    torch.testing.assert_close(sigmas, 5 * plain / (1 + 4 * plain), rtol=0, atol=0)
    assert sigmas[0] == 1.0 and 0 < sigmas[-1] < 0.01
    weights = bell_weights(sigmas)
    torch.testing.assert_close(weights.mean(), torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-12)
    assert weights.min() == 0.0


def test_noisy_input_and_velocity_target():
    objective = FlowMatchingObjective(shift=3.0, weighting="none")
    latents = torch.randn(4, 8, 2, 4, 4)
    noisy, timesteps, target, weights = objective.sample(latents, torch.Generator().manual_seed(0))
    noise = target + latents  # target = noise - x0
    sigma = (timesteps / 1000).view(4, 1, 1, 1, 1)
    # x_t = (1 - sigma) x0 + sigma noise, float32: rounding of a few operations
    torch.testing.assert_close(noisy, (1 - sigma) * latents + sigma * noise, rtol=1e-5, atol=1e-5)
    assert torch.equal(weights, torch.ones(4))
    assert FlowMatchingObjective.loss(target, target, weights) == 0


def test_sigma_range_keeps_one_expert_part_of_the_schedule():
    """A Wan 2.2 expert trains on its part of the schedule: the low-noise one below the boundary 0.875."""
    objective = FlowMatchingObjective(shift=12.0, weighting="bell", sigma_range=(0.0, 0.875))
    assert objective.sigmas.max() <= 0.875 and len(objective.sigmas) == len(objective.weights)
    assert (training_sigmas(12.0) <= 0.875).sum() == len(objective.sigmas)
    _, timesteps, _, _ = objective.sample(torch.zeros(64, 1, 1, 1, 1), torch.Generator().manual_seed(0))
    assert timesteps.max() <= 875
    with pytest.raises(ValueError, match="no training timestep"):
        FlowMatchingObjective(sigma_range=(0.99999, 1.0 - 1e-9))
