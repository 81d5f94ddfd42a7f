"""Non-finite or out-of-range numbers are refused with a ValueError naming the argument, before any model runs; a
non-finite result is an error, never a black video."""

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from factories.pipelines import HEIGHT, NUM_FRAMES, WIDTH, call_kwargs, sample_video, tiny_pipeline


@contextmanager
def count_model_calls(pipe) -> Iterator[dict[str, int]]:
    """How often each model ran (forward hooks): a refusal must come before every one of them."""
    calls, hooks = {}, []
    for name in ("text_encoder", "transformer", "vae", "image_encoder"):
        module = getattr(pipe, name, None)
        if module is not None:
            calls[name] = 0
            hooks.append(
                module.register_forward_pre_hook(lambda *args, name=name: calls.__setitem__(name, calls[name] + 1))
            )
    try:
        yield calls
    finally:
        for hook in hooks:
            hook.remove()


@pytest.fixture(scope="module")
def pipes():
    return {task: tiny_pipeline(task) for task in ("t2v", "i2v", "v2v")}


def nan_latents(pipe):
    shape = pipe.latent_shape(1, pipe.transformer.config.in_channels, HEIGHT, WIDTH, NUM_FRAMES)
    latents = torch.zeros(shape)
    latents[0, 0, 0, 0, 0] = math.nan
    return latents


def nan_embeds(pipe):
    embeds = torch.zeros(1, 4, pipe.transformer.config.text_dim)
    embeds[0, 1, 2] = math.inf
    return embeds


CASES = {
    "guidance inf": ("t2v", lambda pipe: {"guidance_scale": math.inf}, "`guidance_scale` must be a finite number"),
    "guidance nan": ("t2v", lambda pipe: {"guidance_scale": math.nan}, "`guidance_scale` must be a finite number"),
    "sigma above 1": ("t2v", lambda pipe: {"sigmas": [1.5, 0.5]}, r"`sigmas` must be finite and in \(0, 1\]"),
    "sigma 0": ("t2v", lambda pipe: {"sigmas": [1.0, 0.0]}, r"`sigmas` must be finite and in \(0, 1\], got \[0.0\]"),
    "sigma nan": ("t2v", lambda pipe: {"sigmas": [1.0, math.nan]}, "`sigmas` must be finite"),
    "latents nan": ("t2v", lambda pipe: {"latents": nan_latents(pipe)}, "`latents` must hold finite values, got 1"),
    "prompt_embeds inf": (
        "t2v",
        lambda pipe: {"prompt": None, "prompt_embeds": nan_embeds(pipe)},
        "`prompt_embeds` must hold finite values",
    ),
    "negative_prompt_embeds inf": (
        "t2v",
        lambda pipe: {
            "prompt": None,
            "prompt_embeds": torch.zeros_like(nan_embeds(pipe)),
            "negative_prompt_embeds": nan_embeds(pipe),
        },
        "`negative_prompt_embeds` must hold finite values",
    ),
    "generator a string": ("t2v", lambda pipe: {"generator": "seed"}, "`generator` must be a torch.Generator"),
    "generator an int": ("t2v", lambda pipe: {"generator": 0}, "`generator` must be a torch.Generator"),
    "image nan": (
        "i2v",
        lambda pipe: {"image": np.full((HEIGHT, WIDTH, 3), math.nan, dtype=np.float32)},
        "`image` must hold finite values",
    ),
    "image above 1": (
        "i2v",
        lambda pipe: {"image": np.full((HEIGHT, WIDTH, 3), 2.0, dtype=np.float32)},
        r"`image` with floating-point values must be in \[0, 1\]",
    ),
    "video above 1": ("v2v", lambda pipe: {"video": sample_video() * 255}, r"`video` .* must be in \[0, 1\]"),
    "video nan": ("v2v", lambda pipe: {"video": sample_video() * math.nan}, "`video` must hold finite values"),
    "video no frames": ("v2v", lambda pipe: {"video": sample_video()[:0]}, "`video` must hold at least one frame"),
    "video empty list": ("v2v", lambda pipe: {"video": []}, "`video` must hold at least one frame"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_numbers_are_refused_before_any_model_runs(case, pipes):
    task, overrides, message = CASES[case]
    pipe = pipes[task]
    with count_model_calls(pipe) as calls, pytest.raises(ValueError, match=message):
        pipe(**call_kwargs(task, **overrides(pipe)))
    assert set(calls.values()) == {0}, calls


def test_a_non_finite_result_is_an_error_not_a_black_video(pipes):
    pipe = pipes["t2v"]
    hook = pipe.transformer.register_forward_hook(lambda module, args, output: (output[0] * math.inf, *output[1:]))
    try:
        with pytest.raises(FloatingPointError, match="NaN or infinite latents"):
            pipe(**call_kwargs("t2v"))
    finally:
        hook.remove()
