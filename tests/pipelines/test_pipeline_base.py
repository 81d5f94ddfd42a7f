"""What every pipeline shares (pipeline_base.py), checked on all four tasks with tiny random-weight components."""

import json

import diffusers
import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import PipelineCallback

from wan_diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel
from wan_diffusers.pipelines.loading import _model_loading_kwargs
from wan_diffusers.pipelines.sampling import original_scheduler
from wan_diffusers.pipelines.text import DEFAULT_NEGATIVE_PROMPTS

from factories.pipelines import (
    HEIGHT,
    NUM_FRAMES,
    PIPELINE_CLASSES,
    TASKS,
    WIDTH,
    call_kwargs,
    tiny_components,
    tiny_pipeline,
)
from factories.transformer import tiny_transformer_config
from factories.vae import TINY_VAE_CONFIG
from testing_utils import max_abs, max_rel

LATENT_SHAPE = (16, (NUM_FRAMES - 1) // 4 + 1, HEIGHT // 8, WIDTH // 8)


def count_transformer_calls(pipe) -> list:
    calls = []
    pipe.transformer.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls


# ---------------------------------------------------------------------------------------------------------------
# outputs


def test_every_output_type():
    pipe = tiny_pipeline("t2v")
    one_step = dict(num_inference_steps=1, guidance_scale=1.0)  # the decoding is what is tested
    outputs = {
        kind: pipe(**call_kwargs(output_type=kind, **one_step)).frames for kind in ("np", "pt", "pil", "latent")
    }
    assert outputs["latent"].shape == (1, *LATENT_SHAPE)
    assert outputs["pt"].shape == (1, NUM_FRAMES, 3, HEIGHT, WIDTH)
    assert outputs["np"].shape == (1, NUM_FRAMES, HEIGHT, WIDTH, 3)
    assert 0 <= outputs["np"].min() and outputs["np"].max() <= 1
    # the same video in every form (pil is rounded to uint8)
    assert np.array_equal(outputs["np"], outputs["pt"].permute(0, 1, 3, 4, 2).numpy())
    assert len(outputs["pil"]) == 1 and len(outputs["pil"][0]) == NUM_FRAMES
    assert outputs["pil"][0][0].size == (WIDTH, HEIGHT)
    pil_frames = np.stack([np.asarray(frame) for frame in outputs["pil"][0]]) / 255
    assert np.abs(pil_frames - outputs["np"][0]).max() <= 1 / 255 + 1e-6
    # decoding the latents gives the video (bit-identical: the same decode)
    assert torch.equal(pipe.decode_latents(outputs["latent"], "pt"), outputs["pt"])


@pytest.mark.parametrize("task", TASKS)
def test_decoded_video_and_tuple_output(task):
    pipe = tiny_pipeline(task)
    (frames,) = pipe(**call_kwargs(task, output_type="np", num_inference_steps=1, return_dict=False))
    assert frames.shape == (1, NUM_FRAMES, HEIGHT, WIDTH, 3) and np.isfinite(frames).all()


# ---------------------------------------------------------------------------------------------------------------
# batches, guidance, callbacks, progress


@pytest.mark.parametrize("task", TASKS)
def test_num_videos_per_prompt(task):
    """2 prompts x 2 videos = 4 videos, ordered prompt by prompt; each equals the same video generated alone
    (tolerance 1e-5: batched and single float32 matmuls may round differently). diffusers' I2V fails here."""
    pipe = tiny_pipeline(task)
    prompts = ["A cat walks on the grass.", "A dog runs on the beach."]
    generators = [torch.Generator().manual_seed(seed) for seed in range(4)]
    kwargs = dict(num_inference_steps=1, output_type="latent")
    batch = pipe(**call_kwargs(task, prompt=prompts, num_videos_per_prompt=2, generator=generators, **kwargs)).frames
    assert batch.shape == (4, *LATENT_SHAPE)
    single = pipe(**call_kwargs(task, prompt=prompts[1], generator=torch.Generator().manual_seed(2), **kwargs)).frames
    assert max_abs(batch[2], single[0]) <= 1e-5
    assert max_abs(batch[2], batch[3]) > 1e-3  # different noise, different video


def test_num_videos_per_prompt_with_prompt_embeds():
    """Precomputed embeddings are repeated per video too (diffusers leaves them at the prompt batch and fails)."""
    pipe = tiny_pipeline("t2v")
    prompt_embeds, negative_prompt_embeds = pipe.encode_prompt("A cat walks on the grass.")
    kwargs = call_kwargs(prompt=None, num_videos_per_prompt=2, output_type="latent")
    latents = pipe(**kwargs, prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds).frames
    assert latents.shape == (2, *LATENT_SHAPE)


@pytest.mark.parametrize("task", TASKS)
def test_guidance_at_most_one_runs_one_forward_per_step(task):
    pipe = tiny_pipeline(task)
    calls = count_transformer_calls(pipe)
    pipe(**call_kwargs(task, guidance_scale=1.0, output_type="latent"))
    assert len(calls) == 2  # 2 steps, no unconditional call
    calls.clear()
    pipe(**call_kwargs(task, guidance_scale=4.0, output_type="latent"))
    assert len(calls) == 4


@pytest.mark.parametrize("task", TASKS)
def test_batched_guidance_gives_the_two_pass_result_in_one_forward_per_step(task):
    pipe = tiny_pipeline(task)
    # two prompts of different token lengths, two videos each: the text rows are padded to a common length
    kwargs = call_kwargs(task, prompt=["A cat.", "A cat walks on the grass at dawn."], num_videos_per_prompt=2)
    kwargs["output_type"] = "latent"
    two_pass = pipe(**kwargs).frames
    pipe.enable_batched_guidance()
    calls = count_transformer_calls(pipe)
    batched = pipe(**{**kwargs, "generator": torch.Generator().manual_seed(0)}).frames
    assert len(calls) == 2  # 2 steps, one call each
    # the same arithmetic per sample; only the matrix products' batch size differs, so float32 rounding at most
    assert max_rel(batched, two_pass) <= 1e-5
    pipe.disable_batched_guidance()
    again = pipe(**{**kwargs, "generator": torch.Generator().manual_seed(0)}).frames
    assert torch.equal(again, two_pass)


def test_batched_guidance_with_a_cache_hook_sees_one_context():
    pipe = tiny_pipeline("t2v")
    pipe.transformer.enable_cache(diffusers.FirstBlockCacheConfig(threshold=0.0))  # threshold 0: never reuses
    reference = pipe(**call_kwargs("t2v", output_type="latent")).frames
    pipe.enable_batched_guidance()
    batched = pipe(**call_kwargs("t2v", output_type="latent")).frames
    assert max_rel(batched, reference) <= 1e-5  # float32 rounding of the batch-2 products, as above


def faster_cache(pipe) -> diffusers.FasterCacheConfig:
    """FasterCache skipping from the second step on: the unconditional half every other step, attention too."""
    return diffusers.FasterCacheConfig(
        spatial_attention_block_skip_range=2,
        spatial_attention_timestep_skip_range=(-1, 1001),
        unconditional_batch_skip_range=2,
        unconditional_batch_timestep_skip_range=(-1, 1001),
        current_timestep_callback=lambda: pipe.current_timestep,
        attention_weight_callback=lambda _: 0.5,
        tensor_format="BCFHW",
    )


def test_faster_cache_with_batched_guidance_approximates_the_unconditional_half():
    """Batched guidance puts the videos in diffusers' order `[uncond, cond]`: on FasterCache's skip steps the DiT
    runs the conditional half alone and the unconditional prediction is approximated from it. (Two separate guidance
    calls cannot run FasterCache at all, it splits one batch: the pipeline says so before any model runs.)"""
    pipe = tiny_pipeline("t2v")
    pipe.enable_batched_guidance()
    kwargs = dict(output_type="latent", num_inference_steps=6)
    reference = pipe(**call_kwargs(**kwargs)).frames
    texts = []
    pipe.transformer.condition_embedder.register_forward_pre_hook(lambda module, args: texts.append(args[1]))
    pipe.transformer.enable_cache(faster_cache(pipe))
    cached = pipe(**call_kwargs(**kwargs)).frames
    both = [text for text in texts if text.shape[0] == 2]
    alone = [text for text in texts if text.shape[0] == 1]
    assert len(alone) == len(both) == 3  # steps 1, 3 and 5 (of 0-5) skip the unconditional half
    with torch.no_grad():
        prompt_embeds, negative_prompt_embeds = pipe.encode_prompt(call_kwargs()["prompt"])
    # The text encoder run again outside the call rounds differently (measured 1.9e-6; the two prompts differ by 3.8).
    assert all(max_abs(text, torch.cat([negative_prompt_embeds, prompt_embeds])) <= 1e-5 for text in both)
    assert all(max_abs(text, prompt_embeds) <= 1e-5 for text in alone)  # the half that runs alone is the conditional
    # The approximation is FasterCache's, not ours: measured 2.6e-3 relative to the uncached run. Bound 1e-2.
    assert max_rel(cached, reference) <= 1e-2

    pipe.disable_batched_guidance()
    with pytest.raises(ValueError, match="enable_batched_guidance"):
        pipe(**call_kwargs(**kwargs))
    pipe.transformer.disable_cache()


@pytest.mark.parametrize("task", TASKS)
def test_callback_can_replace_latents(task):
    pipe = tiny_pipeline(task)
    baseline = pipe(**call_kwargs(task, output_type="latent")).frames
    seen = []

    def zero_latents(pipeline, step, timestep, callback_kwargs):
        seen.append((step, sorted(callback_kwargs)))
        assert pipeline is pipe and pipeline.num_timesteps == 2
        return {"latents": torch.zeros_like(callback_kwargs["latents"])}

    latents = pipe(**call_kwargs(task, output_type="latent", callback_on_step_end=zero_latents)).frames
    assert seen == [(0, ["latents"]), (1, ["latents"])]
    assert torch.equal(latents, torch.zeros_like(latents))  # the last step's replacement is what comes out
    assert not torch.equal(baseline, latents)


def test_callback_tensor_inputs_and_pipeline_callback():
    pipe = tiny_pipeline("t2v")

    class DropGuidance(PipelineCallback):
        """Switches guidance off after the first step, reading and returning the embeddings."""

        tensor_inputs = ["prompt_embeds", "negative_prompt_embeds"]

        def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
            pipeline._guidance_scale = 1.0
            return callback_kwargs

    calls = count_transformer_calls(pipe)
    pipe(**call_kwargs(output_type="latent", callback_on_step_end=DropGuidance()))
    assert len(calls) == 3  # step 0 with guidance (2 calls), step 1 without (1 call)


def test_interrupt_skips_the_remaining_steps():
    pipe = tiny_pipeline("t2v")
    calls = count_transformer_calls(pipe)

    def stop(pipeline, step, timestep, callback_kwargs):
        pipeline._interrupt = True
        return {}

    pipe(**call_kwargs(output_type="latent", callback_on_step_end=stop))
    assert len(calls) == 2  # only step 0


def test_progress_bar_counts_steps(capsys):
    pipe = tiny_pipeline("t2v")
    pipe.set_progress_bar_config(disable=False)
    pipe(**call_kwargs(output_type="latent", num_inference_steps=3))
    assert "3/3" in capsys.readouterr().err


@pytest.mark.parametrize(
    "scheduler",
    [
        diffusers.FlowMatchEulerDiscreteScheduler(shift=5.0),
        diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0),
        diffusers.DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0),
        original_scheduler("unipc", 5.0),
        original_scheduler("dpm++", 5.0),
    ],
    ids=["euler", "diffusers-unipc", "diffusers-dpm", "original-unipc", "original-dpm"],
)
def test_flow_schedulers(scheduler):
    """diffusers' flow-matching schedulers (float or int64 timesteps) and the original ones all drive the pipeline."""
    pipe = tiny_pipeline("t2v", scheduler=scheduler)
    latents = pipe(**call_kwargs(output_type="latent", num_inference_steps=3)).frames
    assert latents.shape == (1, *LATENT_SHAPE) and torch.isfinite(latents).all()


def test_custom_sigmas():
    pipe = tiny_pipeline("t2v")
    pipe.use_original_sampling("unipc", shift=3.0)
    kwargs = call_kwargs(output_type="latent", num_inference_steps=None, sigmas=[0.999, 0.6, 0.3])
    latents = pipe(**kwargs).frames
    assert pipe.scheduler.timesteps.tolist() == [999, 818, 562]  # 1000 * 3s / (1 + 2s), truncated
    assert latents.shape == (1, *LATENT_SHAPE)


# ---------------------------------------------------------------------------------------------------------------
# prompts


def test_default_negative_prompt_is_the_original_one():
    pipe = tiny_pipeline("t2v")
    _, default = pipe.encode_prompt("A cat.", negative_prompt=None)
    _, explicit = pipe.encode_prompt("A cat.", negative_prompt=DEFAULT_NEGATIVE_PROMPTS["t2v"])
    _, empty = pipe.encode_prompt("A cat.", negative_prompt="")
    assert torch.equal(default, explicit) and not torch.equal(default, empty)


def test_encode_prompt_defaults_to_512_tokens_and_zeroes_padding():
    pipe = tiny_pipeline("t2v")
    prompt_embeds, negative_prompt_embeds = pipe.encode_prompt(["A cat.", "A dog runs."], num_videos_per_prompt=3)
    assert prompt_embeds.shape == (6, 512, 16) and negative_prompt_embeds.shape == (6, 512, 16)
    length = pipe.tokenizer("A cat.").input_ids.__len__()
    assert prompt_embeds[0, :length].abs().min() > 0 and prompt_embeds[0, length:].abs().max() == 0
    assert torch.equal(prompt_embeds[0], prompt_embeds[2]) and not torch.equal(prompt_embeds[0], prompt_embeds[3])
    without_guidance = pipe.encode_prompt("A cat.", do_classifier_free_guidance=False)
    assert without_guidance[1] is None


def test_prompts_are_cleaned():
    pipe = tiny_pipeline("t2v")
    messy, _ = pipe.encode_prompt("  A &amp;quot;cat&amp;quot;\t\twalks  ", do_classifier_free_guidance=False)
    clean, _ = pipe.encode_prompt('A "cat" walks', do_classifier_free_guidance=False)
    assert torch.equal(messy, clean)


# ---------------------------------------------------------------------------------------------------------------
# saving, loading, official repos


@pytest.mark.parametrize("task", TASKS)
def test_save_and_from_pretrained_round_trip(task, tmp_path):
    pipe = tiny_pipeline(task)
    expected = pipe(**call_kwargs(task, output_type="latent", num_inference_steps=1)).frames
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["transformer"] == ["wan_diffusers.models.transformer_wan", "WanTransformer3DModel"]
    assert index["vae"] == ["wan_diffusers.models.autoencoder_kl_wan", "AutoencoderKLWan"]

    loaded = PIPELINE_CLASSES[task].from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.transformer) is WanTransformer3DModel and type(loaded.vae) is AutoencoderKLWan
    # tolerance 1e-5 relative: weights read from safetensors are not 64-byte aligned like freshly allocated ones,
    # so vectorised float32 kernels may round differently (same weights, bit-identical after a deepcopy)
    assert max_rel(loaded(**call_kwargs(task, output_type="latent", num_inference_steps=1)).frames, expected) <= 1e-5

    # diffusers' generic loader builds our components from the module paths recorded in model_index.json (it picks
    # the pipeline class by name from diffusers' namespace, so use our class's from_pretrained as above)
    generic = DiffusionPipeline.from_pretrained(tmp_path)
    assert type(generic.transformer) is WanTransformer3DModel and type(generic.vae) is AutoencoderKLWan


def save_official_layout(task: str, path):
    """A folder laid out like an official `Wan-AI/Wan2.1-*-Diffusers` repo: saved from diffusers' own classes, so
    `model_index.json` names `["diffusers", "WanTransformer3DModel"]` and `["diffusers", "AutoencoderKLWan"]`."""
    components = tiny_components(task)
    torch.manual_seed(0)
    components["transformer"] = diffusers.WanTransformer3DModel(**tiny_transformer_config(task))
    components["vae"] = diffusers.AutoencoderKLWan(**TINY_VAE_CONFIG)
    cls = diffusers.WanPipeline if task == "t2v" else diffusers.WanImageToVideoPipeline
    official = cls(**components)
    official.save_pretrained(path)
    return official


@pytest.mark.oracle
@pytest.mark.parametrize("task", ["t2v", "i2v"])
def test_official_repo_layout_loads_our_classes(task, tmp_path):
    official = save_official_layout(task, tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["transformer"] == ["diffusers", "WanTransformer3DModel"]

    loaded = PIPELINE_CLASSES[task].from_pretrained(
        tmp_path, torch_dtype={"transformer": torch.bfloat16, "default": torch.float32}
    )
    assert type(loaded.transformer) is WanTransformer3DModel and type(loaded.vae) is AutoencoderKLWan
    assert loaded.transformer.dtype == torch.bfloat16  # torch_dtype reaches the models we load ourselves
    assert loaded.vae.dtype == torch.float32 and loaded.text_encoder.dtype == torch.float32
    for ours, theirs in ((loaded.vae, official.vae), (loaded.transformer, official.transformer)):
        theirs_state = theirs.state_dict()
        assert all(torch.equal(value, theirs_state[key].to(value.dtype)) for key, value in ours.state_dict().items())
    # a plain DiffusionPipeline load would have built diffusers' classes from the same folder
    assert type(DiffusionPipeline.from_pretrained(tmp_path).transformer) is diffusers.WanTransformer3DModel


def test_components_passed_by_hand_are_kept(tmp_path):
    save_official_layout("t2v", tmp_path)
    transformer = diffusers.WanTransformer3DModel.from_pretrained(tmp_path, subfolder="transformer")
    loaded = WanPipeline.from_pretrained(tmp_path, transformer=transformer)
    assert loaded.transformer is transformer and type(loaded.vae) is AutoencoderKLWan


def test_model_loading_kwargs():
    kwargs = {"torch_dtype": {"vae": torch.float16, "default": torch.bfloat16}, "variant": "fp16", "revision": "x"}
    # passed on as `dtype`, the name diffusers' `from_pretrained` takes now (`torch_dtype` is deprecated)
    assert _model_loading_kwargs("vae", kwargs) == {"variant": "fp16", "dtype": torch.float16}
    assert _model_loading_kwargs("transformer", kwargs)["dtype"] == torch.bfloat16
    assert _model_loading_kwargs("transformer", {"dtype": torch.float16}) == {"dtype": torch.float16}


# ---------------------------------------------------------------------------------------------------------------
# memory: offloading hooks, text encoder on the CPU


@pytest.fixture
def cpu_as_accelerator(monkeypatch):
    """diffusers offloads to f"{device}:{index}", i.e. "cpu:0" here, and accelerate's sequential hooks fail for every
    module type on "cpu:0" (a CPU-only artefact; "cpu" works): map it to "cpu" for `enable_sequential_cpu_offload`."""
    import accelerate

    cpu_offload = accelerate.cpu_offload

    def offload_to_cpu(model, execution_device=None, **kwargs):
        if torch.device(execution_device).type == "cpu":
            execution_device = torch.device("cpu")
        return cpu_offload(model, execution_device, **kwargs)

    monkeypatch.setattr(accelerate, "cpu_offload", offload_to_cpu)


@pytest.mark.parametrize("task", ["t2v", "i2v"])
@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_cpu_offload_hooks_attach_and_leave_outputs_unchanged(task, mode, cpu_as_accelerator):
    """accelerate's hooks with the CPU as the "accelerator": every model gets its hook, and the pipeline computes on
    the hooks' execution device with the same result (bit-identical on one device)."""
    pipe = tiny_pipeline(task)
    expected = pipe(**call_kwargs(task, output_type="latent", num_inference_steps=1)).frames
    getattr(pipe, f"enable_{mode}_cpu_offload")(device="cpu")
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            assert any(hasattr(module, "_hf_hook") for module in component.modules()), name
    assert torch.equal(pipe(**call_kwargs(task, output_type="latent", num_inference_steps=1)).frames, expected)
    if mode == "sequential":  # the weights live on the meta device between calls
        assert pipe.transformer.proj_out.weight.device.type == "meta"


@pytest.mark.parametrize("mode", ["model", "sequential"])
@pytest.mark.parametrize("order", ["before", "after"])
def test_keep_text_encoder_on_cpu(mode, order, cpu_as_accelerator):
    """The text encoder gets no hook and keeps its weights (on the CPU), whether it is kept there before or after
    offloading is enabled; everything else is offloaded, and the result is unchanged."""
    pipe = tiny_pipeline("t2v")
    expected = pipe(**call_kwargs(output_type="latent", num_inference_steps=1)).frames
    if order == "before":
        pipe.keep_text_encoder_on_cpu()
    getattr(pipe, f"enable_{mode}_cpu_offload")(device="cpu")
    if order == "after":
        pipe.keep_text_encoder_on_cpu()
    assert not any(hasattr(module, "_hf_hook") for module in pipe.text_encoder.modules())
    assert all(parameter.device.type == "cpu" for parameter in pipe.text_encoder.parameters())
    assert any(hasattr(module, "_hf_hook") for module in pipe.transformer.modules())
    assert torch.equal(pipe(**call_kwargs(output_type="latent", num_inference_steps=1)).frames, expected)
    if mode == "model":
        pipe.enable_model_cpu_offload(device="cpu")  # re-enabling (diffusers does after every call) keeps it off
        assert not hasattr(pipe.text_encoder, "_hf_hook")


def test_to_leaves_a_kept_text_encoder_on_the_cpu():
    """`.to()` moves everything but the text encoder: the meta device makes the difference visible on a CPU."""
    pipe = tiny_pipeline("t2v")
    config = dict(pipe.config)
    pipe.keep_text_encoder_on_cpu()
    pipe.to("meta")
    assert pipe.transformer.device.type == "meta" and pipe.text_encoder.device.type == "cpu"
    assert dict(pipe.config) == config  # the text encoder is registered again, as before


def test_vae_tiling_passes_through():
    pipe = tiny_pipeline("t2v")
    one_step = dict(output_type="pt", num_inference_steps=1, guidance_scale=1.0)
    expected = pipe(**call_kwargs(**one_step)).frames
    pipe.vae.enable_tiling(16, 16, 8, 8)
    tiled = pipe(**call_kwargs(**one_step)).frames
    assert tiled.shape == expected.shape
    assert max_abs(tiled, expected) < 0.5  # tiles blend at their seams: close, not identical


# ---------------------------------------------------------------------------------------------------------------
# prompts, images and LoRA


def test_encode_prompt_and_tiny_pipeline_use_the_same_text_dim():
    pipe = tiny_pipeline("t2v")
    assert pipe.text_encoder.config.d_model == pipe.transformer.config.text_dim


def test_image_inputs_accept_pil():
    pipe = tiny_pipeline("i2v")
    kwargs = call_kwargs("i2v", output_type="latent", num_inference_steps=1)
    expected = pipe(**kwargs).frames
    kwargs = call_kwargs("i2v", output_type="latent", num_inference_steps=1)
    kwargs["image"] = PIL.Image.fromarray(kwargs["image"])
    assert torch.equal(pipe(**kwargs).frames, expected)


def test_lora_weights_save_load_and_scale(tmp_path):
    """diffusers' Wan LoRA loader works on our pipelines: save, load into a fresh pipeline, scale through
    `attention_kwargs` (scale 0 is the base model). Bit-identical: the same weights and computation."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = tiny_pipeline("t2v")
    base = pipe(**call_kwargs(output_type="latent")).frames
    adapter = LoraConfig(
        r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False
    )
    pipe.transformer.add_adapter(adapter)
    with_lora = pipe(**call_kwargs(output_type="latent")).frames
    assert max_abs(with_lora, base) > 1e-3
    WanPipeline.save_lora_weights(tmp_path, transformer_lora_layers=get_peft_model_state_dict(pipe.transformer))

    fresh = tiny_pipeline("t2v")
    fresh.load_lora_weights(tmp_path)
    assert torch.equal(fresh(**call_kwargs(output_type="latent")).frames, with_lora)
    off = fresh(**call_kwargs(output_type="latent", attention_kwargs={"scale": 0.0})).frames
    assert torch.equal(off, base)
