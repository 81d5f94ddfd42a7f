"""The original samplers as diffusers schedulers: schedules and solver steps against the original's recorded runs."""

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from wan_diffusers.pipelines.sampling import (
    FlowDPMSolverMultistepScheduler,
    FlowUniPCMultistepScheduler,
    default_scheduler,
    original_scheduler,
    original_sigmas,
    scheduler_shift,
)

from factories.parity import component_references, manifest
from testing_utils import max_abs

# (fixture task, reference prefix, solver, shift): every sampling run the original recorded
RUNS = [
    ("t2v", "sampling.t2v.unipc_shift7.", "unipc", 7.0),
    ("t2v", "sampling.t2v.dpmpp_shift2.", "dpm++", 2.0),
    ("i2v", "sampling.i2v.", "unipc", 4.0),
    ("flf2v", "sampling.flf2v.", "unipc", 10.0),
]


@pytest.mark.parity
@pytest.mark.parametrize("task, prefix, solver, shift", RUNS, ids=[run[1] for run in RUNS])
def test_schedule_matches_the_original(task, prefix, solver, shift):
    references = component_references(task)
    scheduler = original_scheduler(solver, shift)
    scheduler.set_timesteps(3)
    # the DiT sees int64(sigma * 1000) truncated: must be exact
    assert scheduler.timesteps.dtype == torch.int64
    assert torch.equal(scheduler.timesteps, references[prefix + "timesteps"])
    # float32 sigmas with the final 0; tolerance 1e-6 (the fixture README's; we get 0)
    assert max_abs(scheduler.sigmas, references[prefix + "sigmas"]) <= 1e-6


@pytest.mark.parity
@pytest.mark.parametrize("task, prefix, solver, shift", RUNS[:3], ids=[run[1] for run in RUNS[:3]])
def test_solver_steps_match_the_original(task, prefix, solver, shift):
    """Fed the original's guided model outputs, the scheduler reproduces every latent the original saw. The solver
    maths is diffusers' own, so this is bit-exact; tolerance 1e-6 relative (float32 rounding) for safety."""
    references = component_references(task)
    scheduler = original_scheduler(solver, shift)
    scheduler.set_timesteps(3)
    scheduler.set_begin_index(0)
    sample = references[f"sampling.{task}.noise"]
    for i, t in enumerate(scheduler.timesteps):
        assert max_abs(sample[0], references[prefix + "step_samples"][i]) <= 1e-6 * sample.abs().max().item()
        sample = scheduler.step(references[prefix + "step_model_outputs"][i][None], t, sample, return_dict=False)[0]
    final = references[prefix + "final_latents"]
    assert max_abs(sample, final) <= 1e-6 * final.abs().max().item()


def test_original_sigma_lists():
    assert original_sigmas("unipc", 4).tolist() == pytest.approx([0.999, 0.74925, 0.4995, 0.24975], abs=1e-7)
    assert original_sigmas("unipc", 4)[0] == float(np.float32(0.999))  # float32 0.999 = 0.9990000128746033
    assert original_sigmas("dpm++", 4).tolist() == [1.0, 0.75, 0.5, 0.25]


@pytest.mark.parametrize(
    "solver, shift, steps, expected",
    [
        # `wan/utils/fm_solvers_unipc.py` and `wan/utils/fm_solvers.py`, checked by running the original
        ("unipc", 5.0, 4, [999, 937, 833, 624]),
        ("unipc", 3.0, 4, [999, 899, 749, 499]),
        ("unipc", 16.0, 4, [999, 979, 941, 841]),
        ("dpm++", 5.0, 4, [1000, 937, 833, 625]),
    ],
)
def test_original_timesteps_from_the_reference(solver, shift, steps, expected):
    scheduler = original_scheduler(solver, shift)
    scheduler.set_timesteps(steps)
    assert scheduler.timesteps.tolist() == expected


def test_unipc_fifty_steps_start_like_the_original():
    scheduler = original_scheduler("unipc", 5.0)
    scheduler.set_timesteps(50)
    assert scheduler.timesteps[:6].tolist() == [999, 995, 991, 987, 982, 978]
    assert scheduler.timesteps[-4:].tolist() == [302, 241, 172, 92]


def test_diffusers_own_flow_schedules_differ_from_the_original():
    """Why the original schedulers exist: diffusers' `use_flow_sigmas` lists give other timesteps (fixture README
    pitfall 4), which moves the final latents of the 3-step fixture runs by 5.6-7.8 %."""
    unipc = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=7.0)
    unipc.set_timesteps(3)
    assert unipc.timesteps.tolist() == [999, 933, 778]  # original: [999, 933, 777]
    dpm = DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=2.0)
    dpm.set_timesteps(3)
    assert dpm.timesteps.tolist() == [999, 799, 499]  # original: [1000, 800, 500]


def test_custom_sigmas_are_shifted_like_diffusers():
    sigmas = [1.0, 0.6, 0.3]
    ours = original_scheduler("dpm++", 3.0)
    ours.set_timesteps(sigmas=sigmas)
    reference = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    reference.set_timesteps(sigmas=np.array([0.6, 0.3]))  # diffusers' UniPC nudges a first sigma of exactly 1
    assert ours.timesteps.tolist() == [1000] + reference.timesteps.tolist()
    assert ours.sigmas[1:].tolist() == reference.sigmas.tolist()


def test_schedulers_survive_a_config_round_trip(tmp_path):
    for solver, cls in (("unipc", FlowUniPCMultistepScheduler), ("dpm++", FlowDPMSolverMultistepScheduler)):
        scheduler = original_scheduler(solver, 4.0)
        scheduler.save_pretrained(tmp_path / solver)
        loaded = cls.from_pretrained(tmp_path / solver)
        loaded.set_timesteps(5)
        scheduler.set_timesteps(5)
        assert torch.equal(loaded.timesteps, scheduler.timesteps)
        assert scheduler_shift(loaded) == 4.0


def test_default_scheduler_per_task():
    shifts = {"t2v": 5.0, "i2v": 3.0, "flf2v": 16.0, "v2v": 5.0, "vace": 16.0}  # the default variants' (480P I2V)
    for task, shift in shifts.items():
        scheduler = default_scheduler(task)
        assert isinstance(scheduler, FlowMatchEulerDiscreteScheduler)
        assert scheduler_shift(scheduler) == shift


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: original_scheduler("euler", 5.0), "`solver`"),
        (lambda: original_scheduler("unipc", 0.0), "`shift`"),
        (lambda: original_sigmas("unipc", 0), "`num_inference_steps`"),
        (lambda: default_scheduler("t2i"), "`task`"),
        (lambda: original_scheduler("unipc", 5.0).set_timesteps(), "num_inference_steps"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_reference_settings_are_the_ones_tested():
    """The runs above use the shifts the fixtures were generated with."""
    assert manifest("t2v")["sampling"]["runs"]["unipc_shift7"]["shift"] == 7.0
    assert manifest("i2v")["sampling"]["shift"] == 4.0
    assert manifest("flf2v")["sampling"]["shift"] == 10.0
