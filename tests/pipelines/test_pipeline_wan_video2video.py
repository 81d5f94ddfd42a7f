"""WanVideoToVideoPipeline (SDEdit): diffusers' pipeline as the oracle, strength, sizes, the fixed bugs, bad input."""

import diffusers
import numpy as np
import PIL.Image
import pytest
import torch

from .test_pipeline_base import count_transformer_calls
from .test_pipeline_wan import forbid_models
from factories.pipelines import HEIGHT, NUM_FRAMES, WIDTH, call_kwargs, sample_video, tiny_pipeline
from testing_utils import max_abs


def pil_video(num_frames: int = NUM_FRAMES, height: int = HEIGHT, width: int = WIDTH) -> list[PIL.Image.Image]:
    return [PIL.Image.fromarray((frame * 255).astype(np.uint8)) for frame in sample_video(num_frames, height, width)]


@pytest.mark.oracle
def test_same_result_as_diffusers_video_to_video():
    """Same components, same negative prompt, flow-matching Euler, strength 0.5 of 4 steps: bit-identical to
    diffusers' `WanVideoToVideoPipeline` (whose size defaults to 480 x 832, so it is given explicitly)."""
    pipe = tiny_pipeline("v2v")
    reference = diffusers.WanVideoToVideoPipeline(**pipe.components)
    reference.set_progress_bar_config(disable=True)
    settings = dict(video=pil_video(), negative_prompt="", strength=0.5, num_inference_steps=4)
    ours = pipe(**call_kwargs("v2v", **settings)).frames
    theirs = reference(**call_kwargs("v2v", **settings, height=HEIGHT, width=WIDTH)).frames
    assert torch.equal(ours, theirs)


@pytest.mark.oracle
def test_start_latents_are_the_flow_matching_mix_whatever_the_scheduler():
    """The video is noised as the flow-matching models expect, `s * noise + (1 - s) * x0`. diffusers calls
    `scheduler.add_noise`, the same mix for flow-matching schedulers (above) but variance-preserving noising for a
    UniPC scheduler without `use_flow_sigmas` (diffusers' own V2V test uses one, hence its slice differs from ours)."""
    pipe = tiny_pipeline("v2v")
    pipe.scheduler = diffusers.UniPCMultistepScheduler(flow_shift=3.0)
    reference = diffusers.WanVideoToVideoPipeline(**pipe.components)
    reference.set_progress_bar_config(disable=True)
    starts = {}

    def keep_first_input(name):
        def hook(module, args, kwargs):
            starts.setdefault(name, args[0] if args else kwargs["hidden_states"])

        return hook

    for name, runner in (("ours", pipe), ("theirs", reference)):
        runner.transformer.register_forward_pre_hook(keep_first_input(name), with_kwargs=True)
        settings = dict(video=pil_video(), negative_prompt="", strength=0.5, num_inference_steps=4, height=HEIGHT)
        runner(**call_kwargs("v2v", **settings, width=WIDTH, output_type="latent"))
        runner.transformer._forward_pre_hooks.clear()
    # same noise and video latents, so the gap is the mixing rule alone: measured 10.1
    assert max_abs(starts["ours"], starts["theirs"]) > 1e-2


@pytest.mark.parametrize("strength, steps_run", [(1.0, 4), (0.5, 2), (0.3, 1)])
def test_strength_sets_the_steps_that_run(strength, steps_run):
    pipe = tiny_pipeline("v2v")
    calls = count_transformer_calls(pipe)
    pipe(**call_kwargs("v2v", strength=strength, num_inference_steps=4, output_type="latent"))
    assert len(calls) == 2 * steps_run and pipe.num_timesteps == steps_run


def test_low_strength_stays_close_to_the_input():
    pipe = tiny_pipeline("v2v")
    video = sample_video()
    with torch.no_grad():
        encoded = pipe.encode_video(pipe.video_processor.preprocess_video(video, HEIGHT, WIDTH))
    near = pipe(**call_kwargs("v2v", video=video, strength=0.1, num_inference_steps=10, output_type="latent"))
    far = pipe(**call_kwargs("v2v", video=video, strength=1.0, num_inference_steps=10, output_type="latent"))
    assert max_abs(near.frames, encoded) < max_abs(far.frames, encoded)


def test_size_defaults_to_the_video_rounded_to_16():
    pipe = tiny_pipeline("v2v")
    frames = pipe(**call_kwargs("v2v", video=sample_video(5, 20, 40))).frames
    assert frames.shape == (1, 5, 3, 16, 32)


def test_one_video_per_prompt_and_several_videos_per_prompt():
    pipe = tiny_pipeline("v2v")
    videos = np.stack([sample_video(seed=0), sample_video(seed=1)])  # [2, F, H, W, 3]
    latents = pipe(
        **call_kwargs("v2v", video=videos, prompt=["a", "b"], num_videos_per_prompt=2, output_type="latent")
    ).frames
    assert latents.shape == (4, 16, 3, HEIGHT // 8, WIDTH // 8)


def test_latents_are_the_noise_that_is_mixed_in():
    """strength 1 starts from the given noise alone, so the result equals a T2V-style run from that noise."""
    pipe = tiny_pipeline("v2v")
    noise = torch.randn(1, 16, 3, HEIGHT // 8, WIDTH // 8, generator=torch.Generator().manual_seed(5))
    first = pipe(**call_kwargs("v2v", latents=noise, strength=1.0, output_type="latent")).frames
    other_video = pipe(
        **call_kwargs("v2v", latents=noise, strength=1.0, video=sample_video(seed=3), output_type="latent")
    ).frames
    assert torch.equal(first, other_video)


BAD_INPUTS = [
    (dict(video=None), "`video` is required"),
    (dict(video="clip.mp4"), "`video` must be"),
    (dict(video=sample_video(8)), r"`num_frames` must be of the form 4n \+ 1 .* got 8"),
    (dict(strength=0.0), r"`strength` must be in \(0, 1\], got 0.0"),
    (dict(strength=1.5), r"`strength` must be in \(0, 1\], got 1.5"),
    (dict(strength=-0.2), r"`strength` must be in \(0, 1\]"),
    (dict(strength=0.1, num_inference_steps=4), "`strength` x steps must be at least 1 step"),
    (dict(height=20, width=32), "`height` must be a positive multiple of 16"),
    (dict(height=16), "Pass both `height` and `width`, or neither"),
    (dict(video=np.stack([sample_video()] * 3)), r"`video` must hold one video, or one per prompt \(1\)"),
    (dict(timesteps=[999, 500], sigmas=[1.0, 0.5]), "at most one of `timesteps` and `sigmas`"),
    (dict(num_inference_steps=0), "`num_inference_steps` must be a positive integer"),
    (dict(prompt=None), "exactly one of `prompt` and `prompt_embeds`"),
    (dict(generator=[torch.Generator()] * 2), "`generator` as a list must hold one generator per video"),
]


@pytest.mark.parametrize("overrides, message", BAD_INPUTS, ids=[str(list(case[0])) for case in BAD_INPUTS])
def test_bad_input_is_rejected_before_any_model_runs(overrides, message, monkeypatch):
    pipe = tiny_pipeline("v2v")
    forbid_models(pipe, monkeypatch)
    with pytest.raises(ValueError, match=message):
        pipe(**call_kwargs("v2v", **overrides))
