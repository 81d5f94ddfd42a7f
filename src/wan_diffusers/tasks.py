"""What each Wan task and released variant is, and how the original samples it: one record per variant.

Everything that depends on the task reads this table: the `wan-diffusers generate` defaults, the converter (which
variant a release folder is, its scheduler shift, its model card), the pipelines' default scheduler and negative
prompt, the offline demo and the examples. A value here is the original's: `generate.py` of Wan-Video/Wan2.1
(`_validate_args` for steps, shift and frames, `--sample_guide_scale` for guidance, `SUPPORTED_SIZES` /
`MAX_AREA_CONFIGS` for sizes) and `wan/configs/` (negative prompts, `sample_fps`, `text_len`).

Wan 2.2 variants come from Wan-Video/Wan2.2 (`wan/configs/wan_t2v_A14B.py`, `wan_i2v_A14B.py`, `wan_ti2v_5B.py`,
`SUPPORTED_SIZES` in `wan/configs/__init__.py`): their shift does not depend on the size. The A14B models are two
experts: `boundary_ratio` is the fraction of the training timesteps from which on (`>=`) the high-noise expert runs,
`guidance_scale` is its guidance and `guidance_scale_2` the low-noise expert's, with diffusers' meaning of the names
(the original's `sample_guide_scale` tuple is (low, high)). TI2V-5B does text-to-video and image-to-video with one
model: one record per task, both with `expand_timesteps` (per-token timesteps).

This module imports nothing heavy: the CLI reads it before torch is imported.
"""

import json
from dataclasses import dataclass, replace
from pathlib import Path

# `wan/configs/shared_config.py` -> `sample_neg_prompt` (T2V, T2I and VACE). The separators are full-width commas.
NEGATIVE_PROMPT_T2V = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
# `wan/configs/wan_i2v_14B.py` prepends "camera shake"; `wan/configs/__init__.py` prepends "shot change" to that for
# FLF2V.
NEGATIVE_PROMPT_I2V = "镜头晃动，" + NEGATIVE_PROMPT_T2V
NEGATIVE_PROMPT_FLF2V = "镜头切换，" + NEGATIVE_PROMPT_I2V

# The files a task reads, by the names of the pipeline arguments (and of the CLI flags: `last_image` is
# `--last-image`).
IMAGE, LAST_IMAGE, VIDEO, MASK, REFERENCE_IMAGE = "image", "last_image", "video", "mask", "reference_image"
INPUTS = (IMAGE, LAST_IMAGE, VIDEO, MASK, REFERENCE_IMAGE)

AREA_480P = 480 * 832
AREA_720P = 720 * 1280
RESOLUTIONS = ("480p", "720p")


@dataclass(frozen=True)
class WanTask:
    """One task of one released model: its pipeline, its inputs and the original's sampling defaults.

    `height` x `width` is the default size (T2V, VACE); I2V-like tasks take their size from the image within
    `max_area` pixels. `shift` is the original's default at this variant's resolution (`generate.py` picks it from
    the requested size, not from the model: see `shift_for`).
    """

    name: str  # the variant, as the original `generate.py --task` spells it plus the resolution: "i2v-14B-480P"
    task: str  # what `wan-diffusers generate --task` calls it: t2v, i2v, flf2v, v2v, vace
    pipeline_class: str  # a class of `wan_diffusers`
    release: str | None  # the original release ("Wan2.1-T2V-1.3B", a Hub id under Wan-AI/); None: no release
    hub_id: str  # the Hub repo in the diffusers format that `--model` can name
    size: str | None  # "1.3B", "14B"; None when the task has no weights of its own (v2v runs T2V's)
    resolution: str  # "480p" / "720p"
    shift: float
    num_inference_steps: int
    guidance_scale: float
    negative_prompt: str
    height: int
    width: int
    max_area: int | None = None  # image-conditioned tasks only
    num_frames: int = 81
    fps: int = 16
    required_inputs: tuple[str, ...] = ()
    optional_inputs: tuple[str, ...] = ()
    # Two-expert models (Wan 2.2 A14B): from `boundary_ratio * 1000` on (`>=`) the high-noise expert (`transformer`)
    # runs with `guidance_scale`, below it the low-noise one (`transformer_2`) with `guidance_scale_2`.
    boundary_ratio: float | None = None
    guidance_scale_2: float | None = None
    expand_timesteps: bool = False  # Wan 2.2 TI2V-5B: one timestep per token (a pipeline config field)
    note: str = ""  # advice the original gives beside its defaults, shown in the model card

    @property
    def shift_follows_size(self) -> bool:
        """Wan 2.1's `generate.py` picks the default shift from the requested size (`shift_for`); Wan 2.2's always
        takes its config's `sample_shift`."""
        return not (self.release or "").startswith("Wan2.2")

    @property
    def base_model(self) -> str | None:
        """The Hub id of the original release, for a model card."""
        return None if self.release is None else f"Wan-AI/{self.release}"

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.required_inputs + self.optional_inputs


# Each Wan 2.1 model once in full; its siblings (another size, resolution or task on the same weights) say only what
# differs.
_T2V_1_3B = WanTask(
    name="t2v-1.3B",
    task="t2v",
    pipeline_class="WanPipeline",
    release="Wan2.1-T2V-1.3B",
    hub_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    size="1.3B",
    resolution="480p",
    shift=5.0,
    num_inference_steps=50,
    guidance_scale=5.0,
    negative_prompt=NEGATIVE_PROMPT_T2V,
    height=480,
    width=832,
    note="the original README advises `--sample_shift 8` to 12 and `--sample_guide_scale 6` for T2V-1.3B, "
    "as its Gradio demo (`gradio/t2v_1.3B_singleGPU.py`) sets",
)
_I2V_14B_480P = WanTask(
    name="i2v-14B-480P",
    task="i2v",
    pipeline_class="WanImageToVideoPipeline",
    release="Wan2.1-I2V-14B-480P",
    hub_id="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
    size="14B",
    resolution="480p",
    shift=3.0,
    num_inference_steps=40,
    guidance_scale=5.0,
    negative_prompt=NEGATIVE_PROMPT_I2V,
    height=480,
    width=832,
    max_area=AREA_480P,
    required_inputs=(IMAGE,),
)
_VACE_1_3B = replace(
    _T2V_1_3B,
    name="vace-1.3B",
    task="vace",
    pipeline_class="WanVACEPipeline",
    release="Wan2.1-VACE-1.3B",
    hub_id="Wan-AI/Wan2.1-VACE-1.3B-diffusers",
    shift=16.0,
    optional_inputs=(VIDEO, MASK, REFERENCE_IMAGE),
    note="",
)
_AT_720P = dict(resolution="720p", height=720, width=1280)

TASKS: tuple[WanTask, ...] = (
    # The first variant of each task is its default (the one the CLI suggests and the demo stands for).
    _T2V_1_3B,
    replace(
        _T2V_1_3B,
        name="t2v-14B",
        release="Wan2.1-T2V-14B",
        hub_id="Wan-AI/Wan2.1-T2V-14B-Diffusers",
        size="14B",
        note="",
        **_AT_720P,
    ),
    _I2V_14B_480P,
    replace(
        _I2V_14B_480P,
        name="i2v-14B-720P",
        release="Wan2.1-I2V-14B-720P",
        hub_id="Wan-AI/Wan2.1-I2V-14B-720P-Diffusers",
        shift=5.0,
        max_area=AREA_720P,
        **_AT_720P,
    ),
    replace(
        _I2V_14B_480P,
        name="flf2v-14B-720P",
        task="flf2v",
        release="Wan2.1-FLF2V-14B-720P",
        hub_id="Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers",
        shift=16.0,
        num_inference_steps=50,
        # `generate.py` passes its `--sample_guide_scale` (5.0) to every task; `WanFLF2V.generate` alone would
        # default to 5.5.
        guidance_scale=5.0,
        negative_prompt=NEGATIVE_PROMPT_FLF2V,
        max_area=AREA_720P,
        required_inputs=(IMAGE, LAST_IMAGE),
        **_AT_720P,
    ),
    # No original counterpart: SDEdit-style video-to-video on T2V weights, with T2V's settings.
    replace(
        _T2V_1_3B,
        name="v2v",
        task="v2v",
        pipeline_class="WanVideoToVideoPipeline",
        release=None,
        size=None,
        required_inputs=(VIDEO,),
        note="",
    ),
    _VACE_1_3B,
    replace(
        _VACE_1_3B,
        name="vace-14B",
        release="Wan2.1-VACE-14B",
        hub_id="Wan-AI/Wan2.1-VACE-14B-diffusers",
        size="14B",
        **_AT_720P,
    ),
)

_TI2V_5B = WanTask(
    name="ti2v-5B",
    task="t2v",
    pipeline_class="WanPipeline",
    release="Wan2.2-TI2V-5B",
    hub_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
    size="5B",
    resolution="720p",
    shift=5.0,
    num_inference_steps=50,
    guidance_scale=5.0,
    negative_prompt=NEGATIVE_PROMPT_T2V,
    height=704,
    width=1280,
    num_frames=121,
    fps=24,
    expand_timesteps=True,
)

TASKS += (
    WanTask(
        name="t2v-A14B",
        task="t2v",
        pipeline_class="WanPipeline",
        release="Wan2.2-T2V-A14B",
        hub_id="Wan-AI/Wan2.2-T2V-A14B-Diffusers",
        size="A14B",
        resolution="720p",
        shift=12.0,
        num_inference_steps=40,
        guidance_scale=4.0,
        guidance_scale_2=3.0,
        boundary_ratio=0.875,
        negative_prompt=NEGATIVE_PROMPT_T2V,
        height=720,
        width=1280,
    ),
    WanTask(
        name="i2v-A14B",
        task="i2v",
        pipeline_class="WanImageToVideoPipeline",
        release="Wan2.2-I2V-A14B",
        hub_id="Wan-AI/Wan2.2-I2V-A14B-Diffusers",
        size="A14B",
        resolution="720p",
        shift=5.0,
        num_inference_steps=40,
        guidance_scale=3.5,
        guidance_scale_2=3.5,
        boundary_ratio=0.9,
        negative_prompt=NEGATIVE_PROMPT_T2V,  # Wan 2.2 has one negative prompt for every task
        height=720,
        width=1280,
        max_area=AREA_720P,
        required_inputs=(IMAGE,),
    ),
    _TI2V_5B,
    replace(
        _TI2V_5B,
        name="ti2v-5B-i2v",
        task="i2v",
        pipeline_class="WanImageToVideoPipeline",
        max_area=704 * 1280,
        required_inputs=(IMAGE,),
    ),
)

# The CLI's `--task` choices, in the table's order.
TASK_NAMES: tuple[str, ...] = tuple(dict.fromkeys(variant.task for variant in TASKS))


def variants(task: str) -> tuple[WanTask, ...]:
    """Every variant of `task` (t2v, i2v, ...), the default one first."""
    found = tuple(variant for variant in TASKS if variant.task == task)
    if not found:
        raise ValueError(f"`task` must be one of {TASK_NAMES}, got {task!r}")
    return found


def default_variant(task: str) -> WanTask:
    """The variant `task` stands for when nothing says which (the CLI's suggestion, the demo's defaults)."""
    return variants(task)[0]


def find_variant(task: str, *, size: str | None = None, resolution: str | None = None) -> WanTask:
    """The variant of `task` with this model size and resolution; what is not given (or not released) is ignored.

    A custom size (a fine-tune, a test model) gets the released variant of the same resolution, so its defaults are
    the original's for that task and resolution.
    """
    candidates = variants(task)
    for key, value in (("size", size), ("resolution", resolution)):
        narrowed = tuple(variant for variant in candidates if getattr(variant, key) == value)
        candidates = narrowed or candidates
    return candidates[0]


def variant_for_model(task: str, model: str | None) -> WanTask:
    """The variant whose Hub repo or release `model` (a Hub id or a folder) names, else the task's default.

    Only the last path component counts, without a `-Diffusers` suffix and ignoring case, so a local copy named like
    the Hub repo (`Wan2.1-I2V-14B-720P-Diffusers/`) or the release folder (`Wan2.1-I2V-14B-720P/`) is recognised.
    A local pipeline folder of another name that is a Wan 2.2 model (its `model_index.json` has a `boundary_ratio` or
    `expand_timesteps`) gets that Wan 2.2 variant.
    """
    if model:
        stem = _stem(model)
        for variant in variants(task):
            if stem in {_stem(variant.hub_id), (variant.release or "").lower()}:
                return variant
        model_index = Path(model) / "model_index.json"
        if model_index.is_file():
            config = json.loads(model_index.read_text())
            variant = wan22_variant(
                task,
                two_experts=config.get("boundary_ratio") is not None,
                per_token_timesteps=bool(config.get("expand_timesteps")),
            )
            if variant is not None:
                return variant
    return default_variant(task)


def wan22_variant(task: str, *, two_experts: bool, per_token_timesteps: bool) -> WanTask | None:
    """The Wan 2.2 variant of `task` a pipeline runs: the two-expert one (A14B), or the one with per-token timesteps
    (TI2V-5B); None if `task` has none (or the pipeline is neither)."""
    for variant in variants(task):
        if two_experts and variant.boundary_ratio is not None:
            return variant
        if per_token_timesteps and variant.expand_timesteps:
            return variant
    return None


def shift_for(task: str, area: int) -> float:
    """The original's default shift for `task` at a requested size of `area` pixels.

    `generate.py` (`_validate_args`) picks the shift from `--size`, not from the model: I2V gets 3.0 at 480P sizes
    and 5.0 above. For the other tasks every variant has the same shift.
    """
    candidates = tuple(variant for variant in variants(task) if variant.shift_follows_size)
    resolution = "480p" if area <= AREA_480P else "720p"
    return next((variant for variant in candidates if variant.resolution == resolution), candidates[0]).shift


def _stem(model: str) -> str:
    name = model.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].lower()
    return name.removesuffix("-diffusers")
