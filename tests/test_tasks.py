"""The task table (wan_diffusers/tasks.py) and its readers: CLI defaults, model cards and the README agree with it.

The converted repos' scheduler shift and model card are checked against the table in
tests/conversion/test_convert.py (`test_every_layout_becomes_a_complete_repo`), on the tiny release of every variant.
"""

from pathlib import Path

import numpy as np
import PIL.Image
import pytest

import wan_diffusers
from wan_diffusers.cli import main
from wan_diffusers.conversion.model_card import ModelCardInfo, render_model_card
from wan_diffusers.tasks import (
    AREA_480P,
    AREA_720P,
    TASK_NAMES,
    TASKS,
    default_variant,
    find_variant,
    shift_for,
    variant_for_model,
    variants,
)
from wan_diffusers.utils.video_io import export_to_mp4

README = Path(__file__).parents[1] / "README.md"


def test_the_originals_defaults():
    """Spot checks against `generate.py` (`_validate_args`) and `wan/configs/`, where the code once disagreed."""
    by_name = {variant.name: variant for variant in TASKS}
    assert by_name["t2v-1.3B"].shift == 5.0  # generate.py; the converter once wrote 8 (the README's advice)
    assert (by_name["i2v-14B-480P"].shift, by_name["i2v-14B-720P"].shift) == (3.0, 5.0)
    assert by_name["flf2v-14B-720P"].shift == by_name["vace-1.3B"].shift == by_name["vace-14B"].shift == 16.0
    wan21 = [variant for variant in TASKS if variant.shift_follows_size]
    assert {variant.num_inference_steps for variant in wan21 if variant.task == "i2v"} == {40}
    assert {variant.num_inference_steps for variant in wan21 if variant.task != "i2v"} == {50}
    assert {variant.guidance_scale for variant in wan21} == {5.0}  # --sample_guide_scale, passed to every task
    assert {(variant.num_frames, variant.fps) for variant in wan21} == {(81, 16)}
    assert TASK_NAMES == ("t2v", "i2v", "flf2v", "v2v", "vace")


def test_the_wan22_originals_defaults():
    """`wan/configs/wan_t2v_A14B.py`, `wan_i2v_A14B.py`, `wan_ti2v_5B.py` of Wan2.2; the guidance tuple there is
    (low noise, high noise), here (guidance_scale = high, guidance_scale_2 = low) as diffusers names them."""
    by_name = {variant.name: variant for variant in TASKS}
    t2v, i2v = by_name["t2v-A14B"], by_name["i2v-A14B"]
    assert (t2v.shift, t2v.num_inference_steps, t2v.guidance_scale, t2v.guidance_scale_2) == (12.0, 40, 4.0, 3.0)
    assert (t2v.boundary_ratio, t2v.num_frames, t2v.fps) == (0.875, 81, 16)
    assert (i2v.shift, i2v.num_inference_steps, i2v.guidance_scale, i2v.guidance_scale_2) == (5.0, 40, 3.5, 3.5)
    assert i2v.boundary_ratio == 0.9
    for name in ("ti2v-5B", "ti2v-5B-i2v"):
        ti2v = by_name[name]
        assert (ti2v.shift, ti2v.num_inference_steps, ti2v.guidance_scale) == (5.0, 50, 5.0)
        assert (ti2v.num_frames, ti2v.fps, ti2v.width, ti2v.height, ti2v.expand_timesteps) == (
            121,
            24,
            1280,
            704,
            True,
        )
    assert not any(by_name[name].shift_follows_size for name in ("t2v-A14B", "i2v-A14B", "ti2v-5B"))
    assert shift_for("i2v", AREA_480P) == 3.0  # Wan 2.1's size rule is untouched by the Wan 2.2 records
    # Wan 2.2's I2V uses the shared negative prompt (Wan 2.1's I2V prepends "camera shake")
    assert i2v.negative_prompt == by_name["t2v-A14B"].negative_prompt != by_name["i2v-14B-480P"].negative_prompt


def test_a_wan22_pipeline_folder_of_any_name_gets_its_variant(tmp_path):
    (tmp_path / "model_index.json").write_text('{"boundary_ratio": 0.875, "expand_timesteps": false}')
    assert variant_for_model("t2v", str(tmp_path)).name == "t2v-A14B"
    assert variant_for_model("i2v", str(tmp_path)).name == "i2v-A14B"
    (tmp_path / "model_index.json").write_text('{"boundary_ratio": null, "expand_timesteps": true}')
    assert variant_for_model("i2v", str(tmp_path)).name == "ti2v-5B-i2v"
    assert variant_for_model("flf2v", str(tmp_path)).name == "flf2v-14B-720P"


def test_records_are_consistent():
    names = [variant.name for variant in TASKS]
    assert len(names) == len(set(names))
    for variant in TASKS:
        assert hasattr(wan_diffusers, variant.pipeline_class)
        assert variant.height % 16 == 0 and variant.width % 16 == 0 and (variant.num_frames - 1) % 4 == 0
        assert variant.max_area in (None, variant.height * variant.width)
        assert (variant.boundary_ratio is None) == (variant.guidance_scale_2 is None)
        assert variant_for_model(variant.task, variant.hub_id) is variant or variant.task == "v2v"


def test_lookups():
    assert default_variant("i2v").name == "i2v-14B-480P"
    assert find_variant("i2v", size="14B", resolution="720p").name == "i2v-14B-720P"
    assert find_variant("t2v", size=None, resolution="480p").name == "t2v-1.3B"  # another size: by resolution
    assert find_variant("flf2v", resolution="480p").name == "flf2v-14B-720P"  # only released at 720P
    assert variant_for_model("i2v", "C:\\models\\Wan2.1-I2V-14B-720P\\").name == "i2v-14B-720P"  # a release folder
    assert variant_for_model("t2v", "someone/my-finetune").name == "t2v-1.3B"
    assert (shift_for("i2v", AREA_480P), shift_for("i2v", AREA_480P + 1), shift_for("i2v", AREA_720P)) == (3, 5, 5)
    with pytest.raises(ValueError, match=r"`task` must be one of \('t2v', 'i2v', 'flf2v', 'v2v', 'vace'\), got 't2i'"):
        variants("t2i")


class RecordingPipeline:
    """Stands in for a loaded pipeline: records what the CLI passes and returns one black frame."""

    calls: list = []

    @classmethod
    def from_pretrained(cls, model, **kwargs):
        return cls()

    def use_original_sampling(self, solver, shift):
        self.calls.append({"shift": shift})

    def to(self, device):
        return self

    def __call__(self, **kwargs):
        self.calls[-1].update(kwargs)
        return type("Output", (), {"frames": [np.zeros((1, 16, 16, 3), dtype=np.float32)]})()


@pytest.mark.parametrize("variant", TASKS, ids=[variant.name for variant in TASKS])
def test_cli_defaults_are_the_variants(variant, tmp_path, monkeypatch):
    monkeypatch.setattr(wan_diffusers, variant.pipeline_class, RecordingPipeline)
    RecordingPipeline.calls = []
    PIL.Image.new("RGB", (64, 64)).save(tmp_path / "image.png")
    export_to_mp4(np.zeros((5, 16, 16, 3)), tmp_path / "video.mp4")
    files = {"image": "image.png", "last_image": "image.png", "video": "video.mp4"}
    inputs = [
        arg for name in variant.required_inputs for arg in (f"--{name.replace('_', '-')}", tmp_path / files[name])
    ]
    output = tmp_path / "out.mp4"
    argv = ["generate", "--task", variant.task, "--model", variant.hub_id, "--prompt", "x", "--output", str(output)]
    assert main([*argv, *map(str, inputs), "--device", "cpu"]) == 0
    (call,) = RecordingPipeline.calls
    assert call["shift"] == variant.shift
    assert (call["num_inference_steps"], call["guidance_scale"]) == (
        variant.num_inference_steps,
        variant.guidance_scale,
    )
    assert call.get("guidance_scale_2") == variant.guidance_scale_2  # Wan 2.2 A14B: the low-noise expert's
    if variant.max_area is not None:
        assert call["max_area"] == variant.max_area and call["num_frames"] == variant.num_frames
    elif variant.task in ("t2v", "vace"):
        assert (call["height"], call["width"], call["num_frames"]) == (
            variant.height,
            variant.width,
            variant.num_frames,
        )
    import imageio.v2 as imageio

    reader = imageio.get_reader(output, format="FFMPEG")
    assert reader.get_meta_data()["fps"] == variant.fps
    reader.close()


@pytest.mark.parametrize(
    "variant", [variant for variant in TASKS if variant.release], ids=lambda variant: variant.name
)
def test_model_cards_state_the_variants_defaults(variant):
    card = render_model_card(
        ModelCardInfo(
            release_name=variant.release,
            task=variant.task,
            base_model=variant.base_model,
            pipeline_class=variant.pipeline_class,
            repo_id=f"someone/{variant.release}-Diffusers",
            shift=variant.shift,
            shift_reason="the original's default for this release",
            resolution=variant.resolution,
            size=variant.size,
            components=(),
            converter_version="0",
        )
    )
    assert f"samples this task with shift {variant.shift:g}" in card
    assert f"{variant.num_inference_steps} steps and guidance scale {variant.guidance_scale:g}" in card
    assert f"height={variant.height}, width={variant.width}, num_frames={variant.num_frames}" in card
    guidance = f"guidance_scale={variant.guidance_scale:g}"
    if variant.guidance_scale_2 is not None:  # Wan 2.2 A14B: the low-noise expert's too
        guidance += f", guidance_scale_2={variant.guidance_scale_2:g}"
    assert f"{guidance})" in card and f"fps={variant.fps})" in card
    assert f"base_model: {variant.base_model}" in card and variant.pipeline_class in card


def readme_task_table() -> str:
    """The README's table of tasks, as the task table gives it."""

    def inputs(variant):
        required = [f"`--{name.replace('_', '-')}`" for name in variant.required_inputs]
        optional = [f"[`--{name.replace('_', '-')}`]" for name in variant.optional_inputs]
        return " ".join(required + optional) or "-"

    def size(variant):
        if "video" in variant.required_inputs:
            return "the video's"
        if variant.max_area is not None:
            return f"max area {variant.height}x{variant.width}"
        return f"{variant.height}x{variant.width}"

    def frames(variant):
        return "the video's" if "video" in variant.required_inputs else str(variant.num_frames)

    rows = [
        "| variant | `--task` | pipeline | Hub repo (`--model`) | inputs | size | frames, fps | steps | guidance | shift |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in TASKS:
        guidance = f"{variant.guidance_scale:g}"
        if variant.guidance_scale_2 is not None:
            guidance = f"{guidance} high / {variant.guidance_scale_2:g} low (boundary {variant.boundary_ratio:g})"
        rows.append(
            f"| {variant.name} | {variant.task} | `{variant.pipeline_class}` | `{variant.hub_id}` | {inputs(variant)} | "
            f"{size(variant)} | {frames(variant)}, {variant.fps} | {variant.num_inference_steps} | {guidance} | "
            f"{variant.shift:g} |"
        )
    return "\n".join(rows) + "\n"


def test_readme_lists_every_variant_with_the_tables_defaults():
    expected = readme_task_table()
    assert expected in README.read_text(), f"README.md's task table must read:\n{expected}"
