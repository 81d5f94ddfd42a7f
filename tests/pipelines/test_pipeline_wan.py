"""WanPipeline (text-to-video): the original's sampling reproduced, diffusers' pipeline as the oracle, bad input."""

import diffusers
import pytest
import torch

from factories.encoders import parity_text_encoder
from factories.parity import component_references, manifest
from factories.pipelines import call_kwargs, parity_pipeline, tiny_pipeline
from testing_utils import max_abs, max_rel

RUNS = [("unipc_shift7", "unipc", 7.0), ("dpmpp_shift2", "dpm++", 2.0)]


@pytest.mark.parity
@pytest.mark.parametrize("run, solver, shift", RUNS, ids=[run[0] for run in RUNS])
def test_sampling_reproduces_the_original(run, solver, shift):
    """`WanT2V.generate` on the tiny T2V model: the fixture's T5 outputs as embeddings, its noise as latents.

    Tolerances (fixture README): timesteps exact, sigmas max_abs <= 1e-6, final latents max_rel <= 2e-5 (the
    original's own float32-vs-float64 noise floor is 1.3e-6), decoded video max_abs <= 1e-4.
    Measured: UniPC 1.4e-6, DPM++ 8.7e-7, video 1.1e-5."""
    references, settings = component_references("t2v"), manifest("t2v")["sampling"]
    prefix = f"sampling.t2v.{run}."
    pipe = parity_pipeline("t2v")
    pipe.use_original_sampling(solver, shift)
    timesteps = []

    def record(pipeline, step, timestep, callback_kwargs):
        timesteps.append(timestep)
        return {}

    width, height = settings["size_wh"]
    latents = pipe(
        prompt_embeds=references["sampling.t2v.context"][None],
        negative_prompt_embeds=references["sampling.t2v.context_null"][None],
        height=height,
        width=width,
        num_frames=settings["frame_num"],
        num_inference_steps=settings["sampling_steps"],
        guidance_scale=settings["guide_scale"],
        latents=references["sampling.t2v.noise"],
        output_type="latent",
        callback_on_step_end=record,
    ).frames
    assert torch.equal(torch.stack(timesteps), references[prefix + "timesteps"])
    assert max_abs(pipe.scheduler.sigmas, references[prefix + "sigmas"]) <= 1e-6
    assert max_rel(latents, references[prefix + "final_latents"]) <= 2e-5
    if prefix + "video" in references:
        video = pipe.vae.decode(pipe.denormalize_latents(latents)).sample
        assert max_abs(video, references[prefix + "video"]) <= 1e-4


@pytest.mark.parity
def test_encode_prompt_reproduces_the_original_t5():
    """Cleaning, tokenising, the converted umT5 and the zero padding together; tolerance max_rel 1e-5 (README) on the
    real tokens, exact zeros after them. Includes the default I2V negative prompt (the third fixture prompt)."""
    case, references = manifest("t2v")["t5_case"], component_references("t2v")
    pipe = tiny_pipeline("t2v", text_encoder=parity_text_encoder())
    embeds, _ = pipe.encode_prompt(case["prompts"], do_classifier_free_guidance=False)
    assert embeds.shape == (3, 512, 48)
    for i, length in enumerate(case["lengths"]):
        assert max_rel(embeds[i, :length], references[f"t5.out.{i}"]) <= 1e-5
        assert embeds[i, length:].abs().max() == 0


@pytest.mark.oracle
def test_same_result_as_diffusers_wan_pipeline():
    """With the same components, the same negative prompt (diffusers' default is "") and the default flow-matching
    Euler scheduler, diffusers' `WanPipeline` computes the same thing: bit-identical."""
    pipe = tiny_pipeline("t2v")
    reference = diffusers.WanPipeline(**pipe.components)
    reference.set_progress_bar_config(disable=True)
    ours = pipe(**call_kwargs(negative_prompt="", num_videos_per_prompt=2)).frames
    theirs = reference(**call_kwargs(negative_prompt="", num_videos_per_prompt=2)).frames
    assert torch.equal(ours, theirs)


@pytest.mark.oracle
def test_differs_from_diffusers_only_by_the_default_negative_prompt():
    """The one default that differs: `negative_prompt=None` is the original's negative prompt, diffusers' is ""."""
    pipe = tiny_pipeline("t2v")
    reference = diffusers.WanPipeline(**pipe.components)
    reference.set_progress_bar_config(disable=True)
    ours = pipe(**call_kwargs(output_type="latent")).frames
    theirs = reference(**call_kwargs(output_type="latent")).frames
    assert max_abs(ours, theirs) > 1e-3


def forbid_models(pipe, monkeypatch):
    """Any model call fails the test: bad input must be rejected before the first one."""

    def ran(*args, **kwargs):
        raise AssertionError("a model ran before the input was checked")

    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            monkeypatch.setattr(component, "forward", ran)
    for method in ("encode", "decode"):
        monkeypatch.setattr(pipe.vae, method, ran)


BAD_INPUTS = [
    (dict(height=40), r"`height` must be a positive multiple of 16 .* got 40"),
    (dict(width=33), r"`width` must be a positive multiple of 16 .* got 33"),
    (dict(height=0), "`height`"),
    (dict(num_frames=8), r"`num_frames` must be of the form 4n \+ 1 .* got 8; the nearest valid values are 5 and 9"),
    (dict(num_frames=0), "`num_frames`"),
    (dict(prompt_embeds=torch.zeros(1, 4, 16)), "exactly one of `prompt` and `prompt_embeds`, got both"),
    (dict(prompt=None), "exactly one of `prompt` and `prompt_embeds`, got neither"),
    (dict(prompt=3), "`prompt` must be a string or a non-empty list of strings"),
    (dict(prompt=[]), "`prompt` must be a string"),
    (dict(negative_prompt=["a", "b"]), "`negative_prompt` must be a string or a list of 1 strings"),
    (dict(negative_prompt="x", negative_prompt_embeds=torch.zeros(1, 4, 16)), "at most one of `negative_prompt`"),
    (dict(num_inference_steps=0), "`num_inference_steps` must be a positive integer, got 0"),
    (dict(num_inference_steps=-3), "`num_inference_steps` must be a positive integer, got -3"),
    (dict(sigmas=[]), "`sigmas`"),
    (dict(num_videos_per_prompt=0), "`num_videos_per_prompt`"),
    (dict(generator=[torch.Generator()] * 3), r"`generator` as a list must hold one generator per video: .* got 3"),
    (dict(output_type="mp4"), "`output_type` must be one of"),
    (dict(max_sequence_length=600), "`max_sequence_length` must be an integer from 1 to 512"),
    (dict(callback_on_step_end_tensor_inputs=["noise"]), r"`callback_on_step_end_tensor_inputs` .* \['noise'\]"),
    (dict(latents=torch.zeros(1, 16, 2, 2, 4)), r"`latents` must be a tensor of shape \[1, 16, 3, 2, 4\]"),
    (dict(guidance_scale="high"), "`guidance_scale` must be a number"),
]


@pytest.mark.parametrize("overrides, message", BAD_INPUTS, ids=[str(list(case[0])) for case in BAD_INPUTS])
def test_bad_input_is_rejected_before_any_model_runs(overrides, message, monkeypatch):
    pipe = tiny_pipeline("t2v")
    forbid_models(pipe, monkeypatch)
    with pytest.raises(ValueError, match=message):
        pipe(**call_kwargs(**overrides))


EMBEDS_CASES = [
    (torch.zeros(2, 7, 16), torch.zeros(1, 7, 16), "batch size and width of `prompt_embeds`"),
    (torch.zeros(1, 7, 16), torch.zeros(1, 7, 8), r"`negative_prompt_embeds` must have the text width .* \(16\)"),
    (torch.zeros(1, 7, 8), None, r"`prompt_embeds` must have the text width of the transformer \(16\)"),
    (torch.zeros(7, 16), None, r"`prompt_embeds` must be a tensor \[batch, sequence, 16\]"),
    (torch.zeros(1, 513, 16), None, "`prompt_embeds` may have at most 512 tokens"),
]


@pytest.mark.parametrize("prompt_embeds, negative_prompt_embeds, message", EMBEDS_CASES)
def test_mismatched_embeddings_are_rejected(prompt_embeds, negative_prompt_embeds, message, monkeypatch):
    pipe = tiny_pipeline("t2v")
    forbid_models(pipe, monkeypatch)
    kwargs = call_kwargs(prompt=None, prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds)
    with pytest.raises(ValueError, match=message):
        pipe(**kwargs)


def test_embeddings_of_different_lengths_are_fine():
    """The model zero-pads both to 512 rows, so the sequence lengths need not agree (the fixture's do not)."""
    pipe = tiny_pipeline("t2v")
    kwargs = call_kwargs(prompt=None, output_type="latent")
    latents = pipe(**kwargs, prompt_embeds=torch.randn(1, 5, 16), negative_prompt_embeds=torch.randn(1, 9, 16)).frames
    assert torch.isfinite(latents).all()
