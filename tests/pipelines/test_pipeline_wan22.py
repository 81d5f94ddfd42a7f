"""Wan 2.2 sampling: the A14B experts switching at the boundary, TI2V-5B text-to-video and image-to-video.

Parity with the original Wan2.2 `generate()` runs recorded in tests/fixtures/wan22_parity (final latents max_rel <=
2e-5: the original in float32 vs float64 moves them by 7.7e-7 - 4.9e-6, and every step compounds the DiT's 1e-7
level differences). Timesteps and the expert of every step must be exact.
"""

import json

import diffusers
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

from wan_diffusers import (
    AutoencoderKLWan,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
    WanVACEPipeline,
)
from wan_diffusers.pipelines.experts import high_noise_steps, wan22_variant_of
from wan_diffusers.pipelines.image_processing import cover_and_crop_lanczos
from wan_diffusers.pipelines.sampling import original_scheduler, scheduler_shift
from wan_diffusers.pipelines.text import DEFAULT_NEGATIVE_PROMPTS

from factories.parity22 import component_references, manifest, parity_pipeline
from factories.pipelines import call_kwargs, tiny_pipeline, tiny_two_expert_pipeline
from factories.transformer import pad_text
from factories.vace import tiny_vace_pipeline, tiny_vace_transformer
from testing_utils import max_rel

# (model, task of the fixture, run): every sampling run the original recorded
A14B_RUNS = [
    ("t2v-a14b", "t2v", "unipc_boundary_hit"),
    ("t2v-a14b", "t2v", "dpmpp_boundary_hit"),
    ("i2v-a14b", "i2v", "unipc_boundary_hit"),
]


def run_settings(model: str, task: str, run: str) -> dict:
    return manifest(model)["sampling"][task]["runs"][run]


def recorded_experts(pipe) -> list[str]:
    """Hooks that note which expert each DiT call went to; returns the list they fill."""
    calls = []
    for name in ("transformer", "transformer_2"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.register_forward_pre_hook(lambda *_, name=name: calls.append(name))
    return calls


def text_kwargs(references: dict, task: str) -> dict:
    return {
        "prompt_embeds": pad_text([references[f"sampling.{task}.context"]]),
        "negative_prompt_embeds": pad_text([references[f"sampling.{task}.context_null"]]),
    }


def a14b_call(model: str, task: str, run: str) -> tuple:
    """The pipeline, the call that reproduces one recorded run, and the run's settings."""
    settings = run_settings(model, task, run)
    references = component_references(model)
    pipe = parity_pipeline(model, settings["solver"], settings["shift"])
    low, high = settings["guide_scale"]  # the original's order: (low noise, high noise)
    kwargs = dict(
        **text_kwargs(references, task),
        latents=references[f"sampling.{task}.noise"],
        num_frames=manifest(model)["sampling"][task]["frame_num"],
        num_inference_steps=settings["sampling_steps"],
        guidance_scale=high,
        guidance_scale_2=low,
        output_type="latent",
    )
    if model == "t2v-a14b":
        kwargs["width"], kwargs["height"] = manifest(model)["sampling"][task]["size_wh"]
    else:  # the raw image: size from `max_area` and the bicubic resize as the original prepares them
        kwargs["image"] = references["sampling.i2v.image.0"].numpy()
        kwargs["max_area"] = manifest(model)["sampling"][task]["max_area"]
    return pipe, kwargs, settings


@pytest.mark.parity
@pytest.mark.parametrize("model, task, run", A14B_RUNS, ids=[f"{m}-{r}" for m, _, r in A14B_RUNS])
def test_a14b_sampling_switches_experts_like_the_original(model, task, run):
    """Each run puts one timestep exactly on the boundary (875 for T2V, 900 for I2V): the original gives it to the
    high-noise expert (`t >= boundary`), and each expert applies its own guidance."""
    pipe, kwargs, settings = a14b_call(model, task, run)
    references = component_references(model)
    prefix = f"sampling.{task}.{run}."
    calls = recorded_experts(pipe)
    latents = pipe(**kwargs).frames

    assert pipe.scheduler.timesteps.tolist() == references[prefix + "timesteps"].tolist()
    expected = ["transformer" if e == "high_noise_model" else "transformer_2" for e in settings["step_experts"]]
    assert calls == [name for name in expected for _ in range(2)]  # cond and uncond per step
    error = max_rel(latents, references[prefix + "final_latents"])
    assert error <= 2e-5, f"{model} {run}: final latents max_rel {error:.2e}"


@pytest.mark.parity
def test_i2v_a14b_condition_matches_the_original():
    """The size from `max_area` (16 x 48 for the 60 x 100 image) and the 20-channel condition `y`: mask + latent of
    the bicubic-resized first frame, no CLIP (Wan 2.2 has none). 1e-5: the VAE encode's tolerance."""
    pipe = parity_pipeline("i2v-a14b")
    references = component_references("i2v-a14b")
    images, height, width = pipe.check_image_inputs(
        references["sampling.i2v.image.0"].numpy(), None, None, None, None, 1536, 5
    )
    assert [height, width] == manifest("i2v-a14b")["sampling"]["i2v"]["hw"]
    condition = pipe.prepare_condition(images, height, width, 5)
    assert max_rel(condition[0], references["sampling.i2v.y"]) <= 1e-5


# ---------------------------------------------------------------------------------------------------------------
# Where diffusers' Wan 2.2 differs from the original


def test_the_boundary_timestep_itself_belongs_to_the_high_noise_expert():
    """`t >= boundary_ratio * 1000`, as `WanT2V._prepare_model_for_timestep` compares (the parity runs above hit 875
    and 900 exactly): 875 runs the high-noise expert at 0.875."""
    assert high_noise_steps([1000, 876, 875, 874.9, 0], 0.875, 1000) == [True, True, True, False, False]
    assert high_noise_steps([901, 900, 899], 0.9, 1000) == [True, True, False]


def test_diffusers_dpmpp_schedule_moves_the_switch_one_step_earlier():
    """diffusers' own flow DPM++ schedule turns the original's boundary timestep 875 into 874 (T2V-A14B fixture run:
    shift 7, 4 steps), so its third step runs the low-noise expert; the original schedule keeps it high."""
    original = original_scheduler("dpm++", 7.0)
    original.set_timesteps(4)
    theirs = DPMSolverMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=7.0, algorithm_type="dpmsolver++"
    )
    theirs.set_timesteps(4)
    assert original.timesteps.tolist() == [1000, 954, 875, 700]
    assert theirs.timesteps.tolist()[2] == 874
    assert high_noise_steps(original.timesteps.tolist(), 0.875, 1000) == [True, True, True, False]
    assert high_noise_steps(theirs.timesteps.tolist(), 0.875, 1000) == [True, True, False, False]


def test_diffusers_converted_shift_halves_the_high_noise_steps_of_t2v_a14b():
    """diffusers' conversion script writes a UniPC scheduler with flow shift 3.0 for the A14B models; the original
    samples T2V-A14B with shift 12, which at 40 steps gives the high-noise expert 26 steps, not 13."""
    original = original_scheduler("unipc", 12.0)
    theirs = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    for scheduler in (original, theirs):
        scheduler.set_timesteps(40)
    assert sum(high_noise_steps(original.timesteps.tolist(), 0.875, 1000)) == 26
    assert sum(high_noise_steps(theirs.timesteps.tolist(), 0.875, 1000)) == 13


# ---------------------------------------------------------------------------------------------------------------
# The two-expert pipeline's API (diffusers' names and meaning)


def test_each_expert_runs_its_steps_with_its_own_guidance():
    pipe = tiny_two_expert_pipeline()
    calls = recorded_experts(pipe)
    applied = []
    original_guidance = pipe._guided_prediction

    def spy(transformer, guidance_scale, *args):
        applied.append(guidance_scale)
        return original_guidance(transformer, guidance_scale, *args)

    pipe._guided_prediction = spy
    pipe(**call_kwargs(output_type="latent", guidance_scale=4.0, guidance_scale_2=3.0))
    assert calls == ["transformer", "transformer", "transformer_2", "transformer_2"]
    assert applied == [4.0, 3.0]
    applied.clear()
    pipe(**call_kwargs(output_type="latent", guidance_scale=4.0))  # `guidance_scale_2=None`: the same for both
    assert applied == [4.0, 4.0]


def test_without_transformer_2_the_pipeline_runs_as_before():
    pipe = tiny_pipeline("t2v")
    assert pipe.config.boundary_ratio is None and pipe.transformer_2 is None
    with pytest.raises(ValueError, match="guidance_scale_2"):
        pipe(**call_kwargs(guidance_scale_2=3.0))


def test_invalid_expert_setups_are_rejected_before_any_model_runs():
    with pytest.raises(ValueError, match="`boundary_ratio`.*no `transformer_2`"):
        tiny_pipeline("t2v", boundary_ratio=0.875)(**call_kwargs())
    with pytest.raises(ValueError, match="`boundary_ratio` must be a number in"):
        tiny_two_expert_pipeline(boundary_ratio=1.5)(**call_kwargs())
    # every step below the boundary runs `transformer_2` alone, so `transformer` may be left out (diffusers' test)
    only_low = tiny_two_expert_pipeline(boundary_ratio=1.0)
    only_low.transformer = None
    only_low.register_modules(transformer=None)
    with pytest.raises(ValueError, match=r"Step 0 \(timestep 1000\) belongs to `transformer`"):
        only_low(**call_kwargs())  # the flow-matching Euler schedule starts at exactly 1000
    only_low.scheduler = original_scheduler("unipc", 5.0)  # starts at 999
    assert only_low(**call_kwargs(output_type="latent")).frames.shape == (1, 16, 3, 2, 4)


def test_model_offload_keeps_only_the_active_expert_on_the_accelerator():
    """Under `enable_model_cpu_offload` each model's hook offloads the model before it in `model_cpu_offload_seq`
    when it starts: `transformer_2` sends `transformer` back, the VAE sends `transformer_2` back. (accelerate skips
    the move when the "accelerator" is the CPU, so the chain itself is what a CPU test can check.) The result does
    not change."""
    pipe = tiny_two_expert_pipeline()
    expected = pipe(**call_kwargs(output_type="latent")).frames
    pipe.enable_model_cpu_offload(device="cpu")
    previous = {
        name: getattr(pipe, name)._hf_hook.prev_module_hook.model for name in ("transformer", "transformer_2", "vae")
    }
    assert previous["transformer"] is pipe.text_encoder
    assert previous["transformer_2"] is pipe.transformer
    assert previous["vae"] is pipe.transformer_2
    assert torch.equal(pipe(**call_kwargs(output_type="latent")).frames, expected)


def test_two_expert_pipeline_save_and_load_round_trip(tmp_path):
    pipe = tiny_two_expert_pipeline()
    expected = pipe(**call_kwargs(output_type="latent")).frames
    pipe.save_pretrained(tmp_path)
    model_index = json.loads((tmp_path / "model_index.json").read_text())
    assert model_index["boundary_ratio"] == 0.875 and model_index["transformer_2"][1] == "WanTransformer3DModel"
    loaded = WanPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.boundary_ratio == 0.875 and isinstance(loaded.transformer_2, WanTransformer3DModel)
    # 1e-5: weights read from safetensors may round differently in vectorised kernels (see test_pipeline_base.py)
    assert max_rel(loaded(**call_kwargs(output_type="latent")).frames, expected) <= 1e-5


def test_i2v_and_vace_take_two_experts():
    pipe = tiny_two_expert_pipeline("i2v")
    calls = recorded_experts(pipe)
    pipe(**call_kwargs("i2v", output_type="latent"))
    assert calls == ["transformer", "transformer", "transformer_2", "transformer_2"]

    vace = tiny_vace_pipeline()
    components = dict(vace.components, transformer_2=tiny_vace_transformer(seed=1))
    vace = WanVACEPipeline(**components, boundary_ratio=0.875)
    vace.set_progress_bar_config(disable=True)
    calls = recorded_experts(vace)
    vace(**call_kwargs(output_type="latent", num_frames=5), guidance_scale_2=2.0)
    assert calls == ["transformer", "transformer", "transformer_2", "transformer_2"]


def test_use_original_sampling_and_the_negative_prompt_follow_the_wan22_model():
    """The official A14B Diffusers repos carry a shift-3 scheduler; the original samples T2V-A14B with 12 and
    I2V-A14B with 5. Wan 2.2's I2V default negative prompt is the shared one (Wan 2.1's I2V adds "camera shake")."""
    t2v, i2v = tiny_two_expert_pipeline(), tiny_two_expert_pipeline("i2v")
    for pipe, shift in ((t2v, 12.0), (i2v, 5.0)):
        pipe.scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3)
        pipe.use_original_sampling("unipc")
        assert scheduler_shift(pipe.scheduler) == shift
    encoded = []
    i2v._get_t5_prompt_embeds = lambda text, *args: encoded.append(text) or torch.zeros(1, 4, 16)
    i2v.encode_prompt("a cat")
    assert encoded[1] == [DEFAULT_NEGATIVE_PROMPTS["t2v"]] != [DEFAULT_NEGATIVE_PROMPTS["i2v"]]


# ---------------------------------------------------------------------------------------------------------------
# TI2V-5B: per-token timesteps, the Wan 2.2 VAE, and the image as latent frame 0


def ti2v_call(task: str) -> tuple:
    references = component_references("ti2v-5b")
    settings = run_settings("ti2v-5b", task, "unipc_shift7")
    pipe = parity_pipeline("ti2v-5b", settings["solver"], settings["shift"])
    if task == "i2v":
        pipe = WanImageToVideoPipeline(**pipe.components, expand_timesteps=True)
        pipe.set_progress_bar_config(disable=True)
    sampling = manifest("ti2v-5b")["sampling"][task]
    kwargs = dict(
        **text_kwargs(references, task),
        latents=references[f"sampling.{task}.noise"],
        num_frames=sampling["frame_num"],
        num_inference_steps=settings["sampling_steps"],
        guidance_scale=settings["guide_scale"],
        output_type="latent",
    )
    if task == "t2v":
        kwargs["width"], kwargs["height"] = sampling["size_wh"]
    else:  # the raw image: `best_output_size`, LANCZOS cover and centre crop as `WanTI2V.i2v`
        kwargs.update(image=references["sampling.i2v.image.0"].numpy(), max_area=sampling["max_area"])
    return pipe, kwargs


@pytest.mark.parity
@pytest.mark.parametrize("task", ["t2v", "i2v"])
def test_ti2v_sampling_matches_the_original(task):
    """Text-to-video: every token gets t. Image-to-video: the 100 x 60 image becomes a 64 x 32 video, its latent is
    frame 0 and its 2 tokens get timestep 0; the solver's state holds the image latent in frame 0 after every step,
    as the original's does. diffusers differs there: it keeps the noise in frame 0 of the solver state and blends the
    image latent into the DiT input and the final latents only (the same final latents, other solver states)."""
    pipe, kwargs = ti2v_call(task)
    references = component_references("ti2v-5b")
    prefix = f"sampling.{task}.unipc_shift7."
    dit_timesteps, step_latents = [], []
    pipe.transformer.register_forward_pre_hook(
        lambda module, args, call: dit_timesteps.append(call["timestep"][0].clone()), with_kwargs=True
    )

    def keep_latents(pipe, step, timestep, tensors):
        step_latents.append(tensors["latents"].clone())
        return {}

    latents = pipe(**kwargs, callback_on_step_end=keep_latents).frames

    assert torch.equal(torch.stack(dit_timesteps[::2]), references[prefix + "step_dit_timesteps"])
    error = max_rel(latents, references[prefix + "final_latents"])
    assert error <= 2e-5, f"TI2V {task}: final latents max_rel {error:.2e}"
    # the latent entering each later solver step (what the original's scheduler saw), 2e-5 as the final latents
    for step, latent in enumerate(step_latents[:-1]):
        assert max_rel(latent[0], references[prefix + "step_samples"][step + 1]) <= 2e-5
    if task == "i2v":
        image_latent = references["sampling.i2v.z"]
        # the original's solver saw the image latent in frame 0 at every step (diffusers' solver sees the noise there)
        assert all(torch.equal(sample[:, :1], image_latent[0]) for sample in references[prefix + "step_samples"])
        assert all(max_rel(latent[:, :, :1], image_latent) <= 1e-5 for latent in step_latents)
        images, height, width = pipe.check_image_inputs(kwargs["image"], None, None, None, None, kwargs["max_area"], 5)
        assert [height, width] == manifest("ti2v-5b")["sampling"]["i2v"]["output_hw"]
        frame = cover_and_crop_lanczos(images[0], height, width)
        assert torch.equal(frame[None], references["sampling.i2v.vae_input_image"])  # the preprocessing is exact
        assert max_rel(pipe.prepare_image_latent(images[0], height, width), image_latent) <= 1e-5  # VAE encode


@pytest.mark.oracle
@pytest.mark.parametrize("model", ["a14b", "ti2v"])
def test_official_wan22_diffusers_layouts_load_our_classes(model, tmp_path):
    """The layout of `Wan-AI/Wan2.2-T2V-A14B-Diffusers` (two `["diffusers", "WanTransformer3DModel"]` experts,
    `boundary_ratio` in model_index.json) and `Wan2.2-TI2V-5B-Diffusers` (`expand_timesteps`, the Wan 2.2 VAE), as
    diffusers' own pipeline saves them, load with our classes."""
    ours = tiny_pipeline("t2v")
    components = {name: ours.components[name] for name in ("tokenizer", "text_encoder", "scheduler")}
    config = {k: v for k, v in ours.transformer.config.items() if not k.startswith("_")}
    if model == "a14b":
        extra = dict(transformer_2=diffusers.WanTransformer3DModel(**config), boundary_ratio=0.875)
        vae = diffusers.AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1)
    else:
        config.update(in_channels=48, out_channels=48)
        extra = dict(expand_timesteps=True)
        vae = diffusers.AutoencoderKLWan(
            base_dim=3, z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
            latents_mean=[0.0] * 48, latents_std=[1.0] * 48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
            scale_factor_spatial=16,
        )  # fmt: skip
    official = diffusers.WanPipeline(
        **components, vae=vae, transformer=diffusers.WanTransformer3DModel(**config), **extra
    )
    official.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["transformer"] == ["diffusers", "WanTransformer3DModel"]

    loaded = WanPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.transformer) is WanTransformer3DModel and type(loaded.vae) is AutoencoderKLWan
    if model == "a14b":
        assert type(loaded.transformer_2) is WanTransformer3DModel and loaded.config.boundary_ratio == 0.875
    else:
        assert loaded.config.expand_timesteps and loaded.transformer_2 is None
        assert wan22_variant_of(loaded).name == "ti2v-5B"
    frames = loaded(**call_kwargs(height=32, width=32, num_frames=5, output_type="pt")).frames
    assert frames.shape == (1, 5, 3, 32, 32)
