"""WanImageToVideoPipeline (I2V and FLF2V): the original's preprocessing and sampling reproduced, diffusers'
pipeline as the oracle where the two agree, the fixed diffusers bugs, bad input."""

import diffusers
import PIL.Image
import pytest
import torch
from transformers import BatchFeature

from wan_diffusers.pipelines.image_processing import clip_pixel_values, fit_to_size, image_to_tensor

from .test_pipeline_wan import forbid_models
from factories.parity import component_references, manifest
from factories.pipelines import HEIGHT, NUM_FRAMES, WIDTH, call_kwargs, parity_pipeline, sample_image, tiny_pipeline
from testing_utils import max_abs, max_rel


def original_inputs(task: str) -> dict:
    references, settings = component_references(task), manifest(task)["sampling"]
    prefix = f"sampling.{task}."
    inputs = dict(
        image=references[prefix + "image.0"].numpy(),
        prompt_embeds=references[prefix + "context"][None],
        negative_prompt_embeds=references[prefix + "context_null"][None],
        max_area=settings["max_area"],
        num_frames=settings["frame_num"],
        num_inference_steps=settings["sampling_steps"],
        guidance_scale=settings["guide_scale"],
        latents=references[prefix + "noise"],
        output_type="latent",
    )
    if task == "flf2v":
        inputs["last_image"] = references[prefix + "image.1"].numpy()
    return inputs


@pytest.mark.parity
@pytest.mark.parametrize("task", ["i2v", "flf2v"])
def test_conditioning_reproduces_the_original(task):
    """The size from `max_area`, the CLIP tokens and the condition `y` (mask + VAE latent of the resized frames).
    Tolerances (README): mask channels exact, CLIP features and latents max_rel <= 1e-5. Measured: 0 and 0."""
    references, inputs = component_references(task), original_inputs(task)
    prefix = f"sampling.{task}."
    pipe = parity_pipeline(task)
    images, height, width = pipe.check_image_inputs(
        inputs["image"], inputs.get("last_image"), None, None, None, inputs["max_area"], inputs["num_frames"]
    )
    assert (height, width) == tuple(references[prefix + "vae_input_first_frame"].shape[2:])
    with torch.no_grad():
        assert max_rel(pipe.encode_image(images), references[prefix + "clip_context"]) <= 1e-5
        condition = pipe.prepare_condition(images, height, width, inputs["num_frames"])
    assert torch.equal(condition[0, :4], references[prefix + "y"][:4])
    assert max_rel(condition[0], references[prefix + "y"]) <= 1e-5


@pytest.mark.parity
@pytest.mark.parametrize("task", ["i2v", "flf2v"])
def test_sampling_reproduces_the_original(task):
    """`WanI2V.generate` / `WanFLF2V.generate` (81 frames) on the tiny models, from the raw uint8 image(s).
    Tolerances (README): timesteps exact, sigmas max_abs <= 1e-6, final latents max_rel <= 2e-5, video max_abs
    <= 1e-4. Measured: I2V 6.3e-7, FLF2V 5.8e-7, I2V video 1.5e-5."""
    references, settings = component_references(task), manifest(task)["sampling"]
    prefix = f"sampling.{task}."
    pipe = parity_pipeline(task)
    pipe.use_original_sampling(settings["solver"], settings["shift"])
    latents = pipe(**original_inputs(task)).frames
    assert pipe.scheduler.timesteps.tolist() == references[prefix + "timesteps"].tolist() == settings["timesteps"]
    assert max_abs(pipe.scheduler.sigmas, references[prefix + "sigmas"]) <= 1e-6
    assert max_rel(latents, references[prefix + "final_latents"]) <= 2e-5
    if prefix + "video" in references:
        video = pipe.vae.decode(pipe.denormalize_latents(latents)).sample
        assert max_abs(video, references[prefix + "video"]) <= 1e-4


class OriginalClipInput:
    """Stands in for diffusers' `image_processor`: the original CLIP preprocessing, so both pipelines see the same
    pixels (with its `CLIPImageProcessor` diffusers' features differ by more than 100 %, fixture README)."""

    def __init__(self, image_size: int):
        self.image_size = image_size

    def __call__(self, images, return_tensors="pt"):
        images = images if isinstance(images, list) else [images]
        pixels = clip_pixel_values([image_to_tensor(image) for image in images], self.image_size)
        return BatchFeature({"pixel_values": pixels})


@pytest.mark.oracle
@pytest.mark.parametrize("task", ["i2v", "flf2v"])
def test_same_result_as_diffusers_where_the_preprocessing_agrees(task):
    """With the image already at the video size (so diffusers' Lanczos resize and our bicubic one are both the
    identity) and the original CLIP preprocessing on both sides, diffusers' `WanImageToVideoPipeline` computes the
    same thing: bit-identical."""
    pipe = tiny_pipeline(task)
    components = dict(pipe.components, image_processor=OriginalClipInput(pipe.image_encoder.config.image_size))
    reference = diffusers.WanImageToVideoPipeline(**components)
    reference.set_progress_bar_config(disable=True)
    ours = pipe(**call_kwargs(task, negative_prompt="")).frames
    kwargs = call_kwargs(task, negative_prompt="")
    kwargs["image"] = PIL.Image.fromarray(kwargs["image"])
    if task == "flf2v":
        kwargs["last_image"] = PIL.Image.fromarray(kwargs["last_image"])
    assert torch.equal(ours, reference(**kwargs).frames)


@pytest.mark.oracle
def test_num_videos_per_prompt_where_diffusers_fails():
    """diffusers repeats the image tokens per prompt, not per video, and fails for num_videos_per_prompt > 1."""
    pipe = tiny_pipeline("i2v")
    reference = diffusers.WanImageToVideoPipeline(**pipe.components)
    reference.set_progress_bar_config(disable=True)
    kwargs = call_kwargs("i2v", num_videos_per_prompt=2, output_type="latent")
    kwargs["image"] = PIL.Image.fromarray(kwargs["image"])
    with pytest.raises((RuntimeError, ValueError), match="encoder_hidden_states_image"):  # our DiT checks the shape
        reference(**kwargs)
    assert pipe(**call_kwargs("i2v", num_videos_per_prompt=2, output_type="latent")).frames.shape[0] == 2


@pytest.mark.parametrize("num_frames", [5, 13])
def test_flf2v_with_any_4n_plus_1_frames(num_frames):
    """The original builds its FLF2V mask for exactly 81 frames; any 4n + 1 works here."""
    pipe = tiny_pipeline("flf2v")
    latents = pipe(**call_kwargs("flf2v", num_frames=num_frames, output_type="latent")).frames
    assert latents.shape == (1, 16, (num_frames - 1) // 4 + 1, HEIGHT // 8, WIDTH // 8)


def test_flf2v_last_frame_of_another_size_is_fitted_to_the_first():
    """A last frame of another size and aspect ratio is scaled to cover the first frame and centre-cropped (see
    `fit_to_size`; the original's code path for this case is broken), and the call runs."""
    pipe = tiny_pipeline("flf2v")
    first, last = sample_image(HEIGHT, WIDTH), sample_image(3 * HEIGHT, 5 * WIDTH, seed=1)
    images, _, _ = pipe.check_image_inputs(first, last, None, HEIGHT, WIDTH, None, NUM_FRAMES)
    assert torch.equal(images[1], fit_to_size(image_to_tensor(last), HEIGHT, WIDTH))
    latents = pipe(**call_kwargs("flf2v", image=first, last_image=last, output_type="latent")).frames
    assert latents.shape == (1, 16, (NUM_FRAMES - 1) // 4 + 1, HEIGHT // 8, WIDTH // 8)
    assert torch.isfinite(latents).all()


def test_size_follows_max_area_and_the_image():
    pipe = tiny_pipeline("i2v")
    kwargs = call_kwargs("i2v", height=None, width=None, max_area=640, output_type="pt")
    kwargs["image"] = sample_image(40, 90)  # 640 pixels at this aspect ratio round down to 16 x 32
    assert pipe(**kwargs).frames.shape == (1, NUM_FRAMES, 3, 16, 32)


def test_image_embeds_replace_the_image_encoder():
    pipe = tiny_pipeline("flf2v")
    expected = pipe(**call_kwargs("flf2v", output_type="latent")).frames
    kwargs = call_kwargs("flf2v", output_type="latent")
    with torch.no_grad():
        image_embeds = pipe.encode_image([image_to_tensor(kwargs["image"]), image_to_tensor(kwargs["last_image"])])
    pipe.image_encoder = None
    assert torch.equal(pipe(**kwargs, image_embeds=image_embeds).frames, expected)


def test_task_and_default_negative_prompt_follow_the_model():
    assert tiny_pipeline("i2v").task == "i2v" and tiny_pipeline("flf2v").task == "flf2v"


BAD_INPUTS = [
    ("i2v", dict(image=None), "`image` is required"),
    ("i2v", dict(image="frame.png"), "`image` must be a PIL.Image.Image, a numpy array"),
    ("i2v", dict(image=[sample_image()]), "`image` must be a single image"),
    ("i2v", dict(image=torch.zeros(4, 16, 16)), r"`image` as a tensor must have shape \[3, H, W\]"),
    ("i2v", dict(last_image=sample_image()), "`last_image` needs a first-last-frame model"),
    ("flf2v", dict(last_image=None), "FLF2V.* pass the last frame as `last_image`"),
    ("flf2v", dict(last_image=3), "`last_image` must be a PIL.Image.Image"),
    ("flf2v", dict(num_frames=1), "`num_frames` must be at least 5 with `last_image`"),
    ("i2v", dict(height=24), "`height` must be a positive multiple of 16"),
    ("i2v", dict(width=None), "Pass both `height` and `width`, or neither"),
    ("i2v", dict(height=None, width=None, max_area=0), "`max_area` must be a positive number"),
    ("i2v", dict(num_frames=10), r"`num_frames` must be of the form 4n \+ 1"),
    ("i2v", dict(image_embeds=torch.zeros(1, 5, 7)), r"`image_embeds` must have shape \[1, tokens, 20\]"),
    ("flf2v", dict(image_embeds=torch.zeros(1, 5, 20)), r"`image_embeds` must have shape \[2, tokens, 20\]"),
    ("i2v", dict(prompt_embeds=torch.zeros(1, 4, 16)), "exactly one of `prompt` and `prompt_embeds`"),
    ("i2v", dict(num_inference_steps=0), "`num_inference_steps` must be a positive integer"),
    ("i2v", dict(generator=[torch.Generator()] * 2), "`generator` as a list must hold one generator per video"),
]


@pytest.mark.parametrize("task, overrides, message", BAD_INPUTS, ids=[f"{c[0]}-{list(c[1])}" for c in BAD_INPUTS])
def test_bad_input_is_rejected_before_any_model_runs(task, overrides, message, monkeypatch):
    pipe = tiny_pipeline(task)
    forbid_models(pipe, monkeypatch)
    with pytest.raises(ValueError, match=message):
        pipe(**call_kwargs(task, **overrides))


def test_missing_image_encoder_is_reported(monkeypatch):
    pipe = tiny_pipeline("i2v", image_encoder=None)
    forbid_models(pipe, monkeypatch)
    with pytest.raises(ValueError, match="no `image_encoder`: pass the CLIP tokens as `image_embeds`"):
        pipe(**call_kwargs("i2v"))


@pytest.mark.oracle
def test_diffusers_clip_preprocessing_differs_from_the_original():
    """A documented difference: `CLIPImageProcessor` (short side, centre crop, antialiased PIL resize) does not give
    the original's CLIP input (the whole image squashed with torch bicubic). On the fixture image the pixel values
    differ by far more than the 1e-6 the original preprocessing is held to, which is why the pipeline does its own."""
    from transformers import CLIPImageProcessor

    references = component_references("i2v")
    expected = references["clip.single.pixel_values"]
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    theirs = processor(images=PIL.Image.fromarray(references["clip.single.image.0"].numpy()), return_tensors="pt")
    assert max_abs(theirs.pixel_values, expected) > 0.5
    ours = clip_pixel_values([image_to_tensor(references["clip.single.image.0"].numpy())], 32)
    assert max_abs(ours, expected) <= 1e-6
