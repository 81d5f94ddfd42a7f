"""WanVACEPipeline and the VACE conditioning: parity with the original `WanVace`, every task end to end, bad input.

Tolerances (tests/fixtures/wan21_parity/README.md): `m0` and the mask channels exact; `z0` max_rel <= 1e-5 (the VAE
encode's float32 rounding; diffusers is bit-identical once its references are re-ordered); sampling final latents
max_rel <= 2e-5 (3 UniPC steps with guidance compound the DiT's ~4e-7); decoded video max_abs <= 1e-4.
"""

import json

import diffusers
import numpy as np
import PIL.Image
import pytest
import torch

from wan_diffusers import AutoencoderKLWan, WanVACEPipeline, WanVACETransformer3DModel
from wan_diffusers.pipelines.vace_inputs import (
    mask_to_tensor,
    reference_on_canvas,
    resize_to_cover,
    vace_context,
    vace_frame_latents,
    vace_mask_channels,
)

from factories.parity import component_references, manifest
from factories.pipelines import HEIGHT, NUM_FRAMES, WIDTH, call_kwargs, sample_image, sample_video
from factories.vace import parity_vace_pipeline, parity_vace_sources, tiny_vace_config, tiny_vace_pipeline
from factories.vae import diffusers_twin as diffusers_vae
from testing_utils import max_abs, max_rel

TASKS = (
    "t2v",
    "r2v-1",
    "r2v-2",
    "control",
    "inpainting",
    "outpainting",
    "extend-first",
    "extend-last",
)


def task_inputs(task: str) -> dict:
    """The VACE inputs of each task, as a user would build them (mask: 1 = generate, 0 = keep)."""
    frames = sample_video()  # float [F, H, W, 3] in [0, 1]
    mask = np.zeros((NUM_FRAMES, HEIGHT, WIDTH), dtype=np.float32)
    if task == "t2v":
        return {"height": HEIGHT, "width": WIDTH, "num_frames": NUM_FRAMES}
    if task.startswith("r2v"):
        references = [sample_image(24, 24, seed=1), sample_image(10, 40, seed=2)][: int(task[-1])]  # canvas-fitted
        return {"reference_images": references, "height": HEIGHT, "width": WIDTH, "num_frames": NUM_FRAMES}
    if task == "control":  # e.g. depth maps or poses: the whole video is the control signal, no mask
        return {"video": list(frames)}
    if task == "inpainting":
        mask[:, 4:12, 8:24] = 1
    elif task == "outpainting":  # the source occupies the centre; the border is generated
        mask[:] = 1
        mask[:, 4:12, 8:24] = 0
        frames[:, mask[0] == 1] = 0.5
    elif task == "extend-first":  # the first 5 frames are given, the rest generated
        mask[5:] = 1
        frames[5:] = 0.5
    elif task == "extend-last":  # the last 5 frames are given, the frames before them generated
        mask[:4] = 1
        frames[:4] = 0.5
    return {"video": list(frames), "mask": list(mask)}


def call(pipe, **kwargs):
    """A 2-step call at 16 x 32, 9 frames (the shared pipeline tests' settings), returning `frames`."""
    return pipe(**call_kwargs("t2v", **kwargs)).frames


# ---------------------------------------------------------------------------------------------------------------
# Input construction vs the original `WanVace` (tests/fixtures/wan21_parity/tiny-vace)


@pytest.mark.parity
def test_vace_inputs_match_the_original():
    pipe = parity_vace_pipeline()
    references = component_references("vace")
    frames = references["sampling.vace.input_frames"][0]
    mask = references["sampling.vace.input_mask"][0]
    reference_images = [references[f"sampling.vace.ref_image.{i}"][0] for i in range(2)]

    context = vace_context(pipe.encode_video, frames, mask, reference_images)
    z0, m0 = context[:32], context[32:]
    assert torch.equal(m0, references["sampling.vace.m0"])  # raw mask values, exact
    # measured 7.8e-8 (VAE encode rounding); reference 0 first, zero-padded to 32 channels
    assert max_rel(z0, references["sampling.vace.z0"]) <= 1e-5
    assert max_rel(context, references["sampling.vace.vace_context"]) <= 1e-5
    # the non-binary mask values matter: thresholding them for m0 (as for z0) would not reproduce the original
    assert not torch.equal(vace_mask_channels((mask > 0.5).float(), 2), references["sampling.vace.m0"])


@pytest.mark.parity
def test_the_pipeline_builds_the_original_context_from_user_inputs():
    """The fixture's sources given as a user would ([0, 1] frames and images) rebuild the original's context."""
    pipe = parity_vace_pipeline()
    references = component_references("vace")
    sources = parity_vace_sources()
    frames, mask, reference_images, height, width, num_frames = pipe.check_vace_inputs(
        sources["video"], sources["mask"], sources["reference_images"], None, None, None
    )
    assert (height, width, num_frames) == (48, 32, 5)
    context = pipe.prepare_vace_context(frames, mask, reference_images)[0]
    assert torch.equal(context[32:], references["sampling.vace.m0"])
    # measured 1.3e-6: the [0, 1] -> [-1, 1] round trip of the inputs moves them by 6e-8
    assert max_rel(context[:32], references["sampling.vace.z0"]) <= 1e-5


@pytest.mark.parity
@pytest.mark.oracle
@pytest.mark.slow
def test_reference_order_is_kept_while_diffusers_reverses_it():
    """Documented oracle comparison: diffusers' `prepare_video_latents` prepends the references one at a time.

    Ours keeps the order (`test_vace_inputs_match_the_original`: 7.8e-8 from the original's z0)."""
    pipe = parity_vace_pipeline()
    references = component_references("vace")
    frames = references["sampling.vace.input_frames"]  # [1, 3, F, H, W]
    mask = references["sampling.vace.input_mask"]  # [1, 1, F, H, W]
    reference_images = [references[f"sampling.vace.ref_image.{i}"][0, :, 0] for i in range(2)]  # [3, H, W]

    theirs_pipe = diffusers.WanVACEPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=diffusers_vae(pipe.vae),
        scheduler=pipe.scheduler,
        transformer=diffusers.WanVACETransformer3DModel.from_config(pipe.transformer.config),
    )
    theirs_mask = mask.expand(-1, 3, -1, -1, -1)  # diffusers keeps three mask channels
    theirs = theirs_pipe.prepare_video_latents(frames, theirs_mask, [reference_images], device="cpu")[0]
    reordered = theirs_pipe.prepare_video_latents(frames, theirs_mask, [reference_images[::-1]], device="cpu")[0]
    ours = vace_frame_latents(pipe.encode_video, frames[0], mask[0], [image[:, None] for image in reference_images])

    expected = references["sampling.vace.z0"]
    assert max_rel(theirs, expected) > 0.3  # measured 53 %: references 1, 0 instead of 0, 1
    assert max_rel(reordered, expected) <= 1e-5  # their encoding is the same once the order is undone
    assert max_rel(ours, expected) <= 1e-5
    assert torch.equal(theirs_pipe.prepare_masks(theirs_mask, [reference_images])[0], references["sampling.vace.m0"])


@pytest.mark.parity
@pytest.mark.slow
def test_sampling_matches_the_original():
    """The original's VACE run (UniPC, shift 12, 3 steps, guidance 4, context scale 0.6, 2 references), from the
    prompt: `negative_prompt=None` is the original's default negative prompt, as `n_prompt=""` is there."""
    pipe = parity_vace_pipeline()
    pipe.use_original_sampling("unipc", shift=12.0)
    references = component_references("vace")
    prompt = manifest("vace")["sampling"]["prompt"]
    with torch.no_grad():
        prompt_embeds, negative_prompt_embeds = pipe.encode_prompt(prompt)
    # the fixture README's T5 tolerance (max_rel 1e-5); measured 0 (bit-identical) for both
    assert max_rel(prompt_embeds[0, :27], references["sampling.vace.context"]) <= 1e-5
    assert max_rel(negative_prompt_embeds[0, :139], references["sampling.vace.context_null"]) <= 1e-5

    latents = pipe(
        prompt=prompt,
        **parity_vace_sources(),
        conditioning_scale=0.6,
        num_inference_steps=3,
        guidance_scale=4.0,
        latents=references["sampling.vace.noise"],
        output_type="latent",
    ).frames
    assert torch.equal(pipe.scheduler.timesteps, references["sampling.vace.timesteps"])
    assert latents.shape == (1, 16, 4, 6, 4)  # the 2 reference frames stay in the latents, as in the original
    error = max_rel(latents, references["sampling.vace.final_latents"])
    assert error <= 2e-5, error  # measured 8.6e-7

    video = pipe.decode_latents(latents[:, :, 2:], "pt")  # [1, F, 3, H, W] in [0, 1]
    error = max_abs(video.permute(0, 2, 1, 3, 4) * 2 - 1, references["sampling.vace.video"])
    assert error <= 1e-4, error  # measured 2.0e-5


# ---------------------------------------------------------------------------------------------------------------
# The conditioning pieces


def test_mask_channels_fold_each_8x8_block_and_resize_time_nearest_exact():
    mask = torch.zeros(1, 5, 16, 8)
    for frame in range(5):  # raw values, not thresholded: frame k holds (k + 1) / 10 at one pixel
        mask[0, frame, 8 + 3, 5] = (frame + 1) / 10  # latent row 1, offset (3, 5) in its block -> channel 8 * 3 + 5
    channels = vace_mask_channels(mask, num_references=1)
    assert channels.shape == (64, 1 + 2, 2, 1)  # one zero frame per reference, then (5 + 3) // 4 = 2 frames
    assert channels[:, 0].abs().sum() == 0
    assert channels.sum() == channels[29, :, 1, 0].sum()  # nothing lands anywhere else
    # nearest-exact from 5 to 2 frames samples frames floor((i + 0.5) * 2.5) = 1 and 3, as the original
    assert channels[29, 1:, 1, 0].tolist() == pytest.approx([0.2, 0.4])


def test_reference_images_are_fitted_into_a_white_canvas():
    image = torch.zeros(3, 10, 40)  # black, wider than the 16 x 32 canvas
    canvas = reference_on_canvas(image, 16, 32)
    assert canvas.shape == (3, 1, 16, 32)
    # scaled by min(16 / 10, 32 / 40) = 0.8 -> 8 x 32, centred: rows 4-11 black (-1), the rest white (1)
    assert (
        torch.all(canvas[:, 0, 4:12] == -1) and torch.all(canvas[:, 0, :4] == 1) and torch.all(canvas[:, 0, 12:] == 1)
    )
    same_size = np.full((16, 32, 3), 255, dtype=np.uint8)
    assert torch.equal(reference_on_canvas(same_size, 16, 32), torch.ones(3, 1, 16, 32))


def test_frames_of_another_size_cover_the_target_and_are_centre_cropped():
    frames = torch.arange(2 * 8 * 12, dtype=torch.float32).reshape(1, 2, 8, 12)
    assert resize_to_cover(frames, 8, 12) is frames
    resized = resize_to_cover(frames, 16, 16)  # scale max(16 / 12, 16 / 8) = 2 -> 16 x 24, crop columns 4-19
    expected = torch.nn.functional.interpolate(frames[0][:, None], size=(16, 24), mode="bicubic", antialias=True)
    assert torch.equal(resized[0], expected[:, 0, :, 4:20])


def test_mask_frames_read_the_first_channel():
    grey = PIL.Image.fromarray(np.full((4, 6), 255, dtype=np.uint8), mode="L")
    red = np.zeros((4, 6, 3), dtype=np.uint8)
    red[..., 0] = 255
    mask = mask_to_tensor([grey, red, torch.zeros(4, 6, dtype=torch.bool), np.full((4, 6), 0.5)])
    assert mask.shape == (1, 4, 4, 6)
    assert mask[0, :, 0, 0].tolist() == [1.0, 1.0, 0.0, 0.5]


# ---------------------------------------------------------------------------------------------------------------
# Every task, end to end on tiny components


@pytest.mark.parametrize("task", TASKS)
def test_every_task_runs_end_to_end(task):
    pipe = tiny_vace_pipeline()
    inputs = task_inputs(task)
    num_references = len(inputs.get("reference_images", []))
    latents = call(pipe, **inputs, output_type="latent")
    assert latents.shape == (1, 16, num_references + 3, 2, 4)  # one latent frame per reference in front
    video = pipe.decode_latents(latents[:, :, num_references:], "pt")  # what output_type="pt" returns
    assert video.shape == (1, NUM_FRAMES, 3, HEIGHT, WIDTH)
    assert torch.isfinite(video).all() and video.min() >= 0 and video.max() <= 1


def test_the_conditioning_reaches_the_model():
    pipe = tiny_vace_pipeline()
    inpainting = task_inputs("inpainting")
    base = call(pipe, **inpainting, output_type="latent")
    other_video = dict(inpainting, video=list(sample_video(seed=5)))
    assert max_abs(call(pipe, **other_video, output_type="latent"), base) > 1e-4
    assert max_abs(call(pipe, **inpainting, conditioning_scale=0.0, output_type="latent"), base) > 1e-4
    two = task_inputs("r2v-2")
    swapped = dict(two, reference_images=two["reference_images"][::-1])
    assert max_abs(call(pipe, **swapped, output_type="latent"), call(pipe, **two, output_type="latent")) > 1e-4


def test_batched_guidance_repeats_the_control_input():
    pipe = tiny_vace_pipeline()
    inputs = task_inputs("r2v-1") | task_inputs("inpainting")
    two_pass = call(pipe, **inputs, num_videos_per_prompt=2, output_type="latent")
    pipe.enable_batched_guidance()
    batched = call(pipe, **inputs, num_videos_per_prompt=2, output_type="latent")
    assert max_rel(batched, two_pass) <= 1e-5  # float32 rounding of batch-4 products instead of batch 2


def test_conditioning_scale_forms_agree():
    pipe = tiny_vace_pipeline()
    inputs = task_inputs("control")
    scalar = call(pipe, **inputs, conditioning_scale=0.7, output_type="latent")
    assert torch.equal(call(pipe, **inputs, conditioning_scale=[0.7, 0.7], output_type="latent"), scalar)
    assert torch.equal(call(pipe, **inputs, conditioning_scale=torch.tensor([0.7, 0.7]), output_type="latent"), scalar)
    assert max_abs(call(pipe, **inputs, conditioning_scale=[0.7, 0.0], output_type="latent"), scalar) > 1e-5


def test_prompt_batches_and_several_videos_per_prompt_share_the_conditioning():
    pipe = tiny_vace_pipeline()
    inputs = task_inputs("r2v-1")
    videos = call(pipe, **inputs, prompt=["A cat.", "A dog."], num_videos_per_prompt=2, generator=None)
    assert videos.shape == (4, NUM_FRAMES, 3, HEIGHT, WIDTH)  # decoded without the reference frame


def test_frame_count_and_size_default_to_the_video():
    pipe = tiny_vace_pipeline()
    frames = sample_video(num_frames=5, height=20, width=36)  # 20 x 36 -> 16 x 32 (multiples of 16)
    video = call(pipe, video=list(frames), height=None, width=None, num_frames=None)
    assert video.shape == (1, 5, 3, 16, 32)


def test_callbacks_see_the_latents_with_the_reference_frames():
    pipe = tiny_vace_pipeline()
    shapes = []

    def callback(pipe, step, timestep, callback_kwargs):
        shapes.append(tuple(callback_kwargs["latents"].shape))
        return {"latents": callback_kwargs["latents"] * 0}

    latents = call(pipe, **task_inputs("r2v-2"), callback_on_step_end=callback, output_type="latent")
    assert shapes == [(1, 16, 5, 2, 4)] * 2 and latents.abs().max() == 0


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_cpu_offload_hooks_leave_outputs_unchanged(mode, monkeypatch):
    """The VAE runs before the transformer here (the control latents): the hooks must cope with that order."""
    import accelerate

    cpu_offload = accelerate.cpu_offload
    # diffusers offloads to "cpu:0" on a CPU-only machine, where accelerate's sequential hooks fail: use "cpu"
    monkeypatch.setattr(accelerate, "cpu_offload", lambda model, device=None, **kw: cpu_offload(model, "cpu", **kw))
    pipe = tiny_vace_pipeline()
    inputs = {**task_inputs("inpainting"), "reference_images": [sample_image(8, 8)]}
    expected = call(pipe, **inputs, output_type="latent")
    getattr(pipe, f"enable_{mode}_cpu_offload")(device="cpu")
    assert hasattr(pipe.vae, "_hf_hook") or any(hasattr(m, "_hf_hook") for m in pipe.vae.modules())
    assert torch.equal(call(pipe, **inputs, output_type="latent"), expected)  # one device: bit-identical


def test_save_and_load_round_trip(tmp_path):
    pipe = tiny_vace_pipeline()
    inputs = task_inputs("inpainting")
    expected = call(pipe, **inputs, output_type="latent")
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["transformer"] == ["wan_diffusers.models.transformer_wan_vace", "WanVACETransformer3DModel"]

    loaded = WanVACEPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.transformer) is WanVACETransformer3DModel
    # 1e-5 relative: weights read back from safetensors may take other vectorised float32 kernel paths
    assert max_rel(call(loaded, **inputs, output_type="latent"), expected) <= 1e-5
    # diffusers' generic loader builds our components from the module paths in model_index.json (it takes the
    # pipeline class by name from diffusers' namespace, so load with our class as above)
    generic = diffusers.DiffusionPipeline.from_pretrained(tmp_path)
    assert type(generic.transformer) is WanVACETransformer3DModel


@pytest.mark.oracle
def test_official_repo_layout_loads_our_classes(tmp_path):
    """`Wan-AI/Wan2.1-VACE-*-diffusers` name diffusers' classes in model_index.json; we build ours from them."""
    components = tiny_vace_pipeline().components
    torch.manual_seed(0)
    components["transformer"] = diffusers.WanVACETransformer3DModel(**tiny_vace_config())
    components["vae"] = diffusers_vae(components["vae"])
    diffusers.WanVACEPipeline(**components).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["transformer"] == [
        "diffusers",
        "WanVACETransformer3DModel",
    ]
    loaded = WanVACEPipeline.from_pretrained(tmp_path)
    assert type(loaded.transformer) is WanVACETransformer3DModel and type(loaded.vae) is AutoencoderKLWan
    loaded.set_progress_bar_config(disable=True)
    assert torch.isfinite(call(loaded, **task_inputs("r2v-2"))).all()


@pytest.mark.oracle
def test_matches_diffusers_pipeline_up_to_the_reference_order():
    """Same weights, same inputs of the target size: diffusers' pipeline computes the same thing with one reference,
    and with two only once their order is reversed for it."""
    ours = tiny_vace_pipeline()
    theirs = diffusers.WanVACEPipeline(
        tokenizer=ours.tokenizer,
        text_encoder=ours.text_encoder,
        vae=diffusers_vae(ours.vae),
        scheduler=ours.scheduler,
        transformer=diffusers.WanVACETransformer3DModel.from_config(ours.transformer.config),
    )
    theirs.transformer.load_state_dict(ours.transformer.state_dict())
    theirs.set_progress_bar_config(disable=True)
    mask = [PIL.Image.fromarray((frame * 255).astype(np.uint8)) for frame in task_inputs("inpainting")["mask"]]
    arguments = dict(
        prompt="A cat walks on the grass.",
        negative_prompt="",  # diffusers' default; ours defaults to the original's negative prompt
        video=[PIL.Image.fromarray((frame * 255).astype(np.uint8)) for frame in sample_video()],
        mask=mask,
        height=HEIGHT,
        width=WIDTH,
        num_frames=NUM_FRAMES,
        num_inference_steps=2,
        guidance_scale=4.0,
        conditioning_scale=0.8,
        output_type="latent",
    )
    references = [PIL.Image.fromarray(sample_image(seed=seed)) for seed in (1, 2)]

    def run(pipe, references):
        noise = torch.randn(1, 16, 3 + len(references), 2, 4, generator=torch.Generator().manual_seed(0))
        return pipe(**arguments, reference_images=references, latents=noise).frames

    # left: the float64 timestep sinusoid (~1e-6 per DiT call) and pixel rounding; measured 8.7e-7
    assert max_rel(run(ours, references[:1]), run(theirs, references[:1])) <= 1e-5
    ours_two = run(ours, references)
    assert max_rel(ours_two, run(theirs, references[::-1])) <= 1e-5  # measured 6.3e-7
    assert max_rel(ours_two, run(theirs, references)) > 1e-4  # measured 5.4e-4 (random tiny weights)


def test_diffusers_input_forms_are_accepted_with_their_meaning():
    """diffusers' forms: references as one list per prompt, and `boundary_ratio=0.0` with no `transformer_2` (every
    step t >= 0 runs `transformer`); both give exactly the output of our own forms."""
    pipe = tiny_vace_pipeline()
    references = [sample_image(8, 8, seed=1), sample_image(8, 8, seed=2)]
    inputs = {**task_inputs("t2v"), "output_type": "latent"}
    flat = call(pipe, **inputs, reference_images=references)
    assert torch.equal(call(pipe, **inputs, reference_images=[references]), flat)
    single = WanVACEPipeline(**pipe.components, boundary_ratio=0.0)
    assert torch.equal(call(single, **inputs, reference_images=references), flat)


# ---------------------------------------------------------------------------------------------------------------
# Bad input: clear errors before any model runs


@pytest.mark.parametrize(
    "change, message",
    [
        ({"mask": list(np.ones((5, HEIGHT, WIDTH)))}, r"`mask` must have the frame count and size of `video`"),
        ({"mask": list(np.ones((NUM_FRAMES, 8, WIDTH)))}, r"`mask` must have the frame count and size of `video`"),
        ({"mask": list(np.full((NUM_FRAMES, HEIGHT, WIDTH), 2.0))}, r"`mask\[0\]` .* must be in \[0, 1\]"),
        ({"reference_images": ["cat.png"]}, r"`reference_images\[0\]` must be"),
        ({"reference_images": [sample_image(8, 8), 3]}, r"`reference_images\[1\]` must be"),
        ({"reference_images": [[sample_image(8, 8)], sample_image(8, 8)]}, "mixes images and lists"),
        ({"reference_images": [[sample_image(8, 8)], [sample_image(8, 8)]]}, r"`reference_images\[1\]` differs"),
        ({"conditioning_scale": [1.0, 0.5, 0.5]}, r"`conditioning_scale` must be .* list / 1-D tensor of 2 numbers"),
        ({"conditioning_scale": "strong"}, "`conditioning_scale` must be"),
        ({"num_frames": 5}, r"`num_frames` \(5\) must match the 9 frames of `video`"),
        ({"video": list(sample_video(num_frames=6)), "mask": None, "num_frames": None}, "4n \\+ 1"),
        ({"video": ["frame"] * 5, "mask": None}, r"`video\[0\]` must be"),
        ({"height": None}, "Pass both `height` and `width`"),
        ({"height": 20}, "`height` must be a positive multiple of 16"),
        ({"latents": torch.zeros(1, 16, 3, 2, 4)}, r"`latents` must be a tensor of shape \[1, 16, 4, 2, 4\]"),
    ],
)
def test_bad_inputs_raise_clear_errors(change, message):
    pipe = tiny_vace_pipeline()
    transformer_calls = []
    pipe.transformer.register_forward_pre_hook(lambda *args: transformer_calls.append(1))
    inputs = {**task_inputs("inpainting"), "reference_images": [sample_image(8, 8)], **change}
    with pytest.raises(ValueError, match=message):
        call(pipe, **inputs)
    assert not transformer_calls


# ---------------------------------------------------------------------------------------------------------------
# examples/vace_tasks.py: every subcommand runs offline on the tiny pipeline and writes a playable mp4


@pytest.mark.slow
def test_the_examples_run_every_task_offline(tmp_path):
    import importlib.util
    from pathlib import Path

    import imageio.v3 as iio

    path = Path(__file__).resolve().parents[2] / "examples" / "vace_tasks.py"
    spec = importlib.util.spec_from_file_location("vace_tasks", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    size = ["--height", "32", "--width", "48", "--frames", "5", "--keep", "2", "--steps", "1"]
    for task in example.TASKS:
        output = example.main([task, *size, "--output", str(tmp_path / f"{task}.mp4")])
        assert iio.imread(output).shape == (5, 32, 48, 3), task  # frames, height, width, RGB
