"""The VRAM budget planner: its choices for the released models (built on the meta device), that every plan runs on
the CPU with the unoffloaded result, the memory guard, and `--vram-budget`."""

import functools

import numpy as np
import pytest

from wan_diffusers.cli import main as cli_main
from wan_diffusers.memory.guard import call_working_bytes
from wan_diffusers.memory.model import GB, released_memory_model
from wan_diffusers.memory.planner import (
    MemoryBudgetError,
    VRAMPlan,
    apply_plan,
    candidate_plans,
    choose_plan,
    estimate,
    peak_table,
)

from factories.pipelines import call_kwargs, tiny_pipeline

P480, P720 = (480, 832), (720, 1280)


@functools.cache
def released(size: str):
    return released_memory_model(size)


def test_released_weights_from_meta_configs():
    small, large = released("1.3B"), released("14B")
    # bf16 with the float32 modules: 1.3B 2.87 GB, 14B 28.9 GB; umT5-XXL 11.4 GB in bf16; VAE 0.51 GB in float32
    assert small.dit_weights == pytest.approx(2.87 * GB, rel=0.01)
    assert large.dit_weights == pytest.approx(28.95 * GB, rel=0.01)
    assert large.text_encoder_weights == pytest.approx(11.36 * GB, rel=0.01)
    assert large.vae_weights == pytest.approx(0.51 * GB, rel=0.01)
    assert (
        len(large.dit_blocks) == 40 and small.num_tokens(*P480, 81) == 32760 and large.num_tokens(*P720, 81) == 75600
    )


@pytest.mark.parametrize("size", ["1.3B", "14B"])
@pytest.mark.parametrize("resolution", [P480, P720])
def test_the_fastest_plan_that_fits(size, resolution):
    """Each budget gets the first plan (fastest first) whose estimate fits it; a larger budget never a slower plan."""
    model = released(size)
    plans = [estimate(model, plan, *resolution, 81) for plan in candidate_plans(model)]
    order = {plan: index for index, plan in enumerate(candidate_plans(model))}
    previous = len(plans)
    for budget in (6, 8, 12, 16, 24, 80):
        try:
            chosen = choose_plan(model, f"{budget}GB", *resolution, 81)
        except MemoryBudgetError as error:
            assert min(plan.peak_bytes for plan in plans) > budget * GB
            assert "smaller size" in str(error)
            continue
        index = order[VRAMPlan(chosen.text_encoder_on_cpu, chosen.offload, chosen.blocks_per_group, chosen.vae_tiling)]
        assert chosen.peak_bytes <= budget * GB
        assert all(plan.peak_bytes > budget * GB for plan in plans[:index])
        assert index <= previous
        previous = index


def test_planner_choices():
    assert choose_plan(released("14B"), "80GB", *P720, 81).name == "resident"
    assert choose_plan(released("1.3B"), "16GB", *P480, 81).name == "text encoder on CPU"
    assert choose_plan(released("14B"), "24GB", *P480, 81).offload == "group"
    with pytest.raises(MemoryBudgetError, match="No plan fits a budget of 6.0 GB at 1280 x 720"):
        choose_plan(released("14B"), "6GB", *P720, 81)
    # prefetching on a side stream holds two groups: without it (CPU) a group may be twice as large
    with_stream = choose_plan(released("14B"), "16GB", *P480, 81)
    without = choose_plan(released("14B"), "16GB", *P480, 81, use_stream=False)
    assert without.blocks_per_group >= 2 * with_stream.blocks_per_group - 1


def test_peak_table():
    table = peak_table({"T2V-14B": released("14B")}, {"720P": P720}, [6, 80])
    assert table.splitlines()[2].startswith("| T2V-14B | 720P | does not fit | resident ")


@pytest.mark.parametrize(
    "plan",
    [
        VRAMPlan(True, "none"),
        VRAMPlan(True, "model", vae_tiling=True),
        VRAMPlan(True, "group", 1),
        VRAMPlan(True, "leaf"),
    ],
    ids=lambda plan: plan.name,
)
def test_every_plan_runs_and_matches(plan):
    """Each placement on the CPU gives the unoffloaded result (tiling with tiles larger than the frame: the same)."""
    expected = tiny_pipeline("t2v")(**call_kwargs("t2v", output_type="np")).frames
    pipe = tiny_pipeline("t2v")
    apply_plan(pipe, plan, "cpu")
    # the same kernels on the same weights: identical up to float32 summation order (bound 1e-6)
    np.testing.assert_allclose(pipe(**call_kwargs("t2v", output_type="np")).frames, expected, rtol=0, atol=1e-6)


def test_enable_vram_budget_reports_the_plan():
    pipe = tiny_pipeline("t2v")
    plan = pipe.enable_vram_budget("8GB", height=64, width=96, num_frames=17, device="cpu")
    assert plan.name == "resident" and "estimated peak" in plan.describe()


def test_guard_refuses_before_any_work(monkeypatch):
    pipe = tiny_pipeline("t2v")
    calls = []
    monkeypatch.setattr(pipe, "encode_prompt", lambda *args, **kwargs: calls.append(1))
    with pytest.raises(MemoryBudgetError, match=r"(?s)65536 x 65536 x 9 video needs about .* GB.*--vram-budget"):
        pipe(**call_kwargs("t2v", height=65536, width=65536))
    assert not calls
    assert isinstance(MemoryBudgetError("x"), ValueError) and isinstance(MemoryBudgetError("x"), MemoryError)
    small = call_working_bytes(pipe, 64, 96, 17)
    assert max(small.values()) < 10**8


def test_cli_vram_budget(tmp_path, caplog):
    assert (
        cli_main(["generate", "--prompt", "a cat", "--vram-budget", "8XB", "--output", str(tmp_path / "a.mp4")]) == 1
    )
    assert "`--vram-budget` must be a size" in caplog.text
    argv = ["generate", "--prompt", "a", "--vram-budget", "8GB", "--vae-tiling", "--output", str(tmp_path / "b.mp4")]
    assert cli_main(argv) == 1
    assert "drop --vae-tiling" in caplog.text
