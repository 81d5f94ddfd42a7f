"""WanTransformer3DModel: parity with the original Wan2.1 code and with diffusers, and diffusers' machinery.

Tolerances: float32 parity is measured as max_rel = max|a - b| / max|reference|. The original re-run in float64 moves
the fixtures' outputs by 3e-7 - 5.6e-7 (their noise floor), so 1e-5 leaves room for a different but equally exact
summation order and no room for a wrong formula (the smallest modelling mistakes, e.g. a float32 sinusoid or
truncated timesteps, show up as 5e-6 to 8e-2).
"""

import json

import diffusers
import pytest
import torch
from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig, SeaCacheConfig

import wan_diffusers.models.transformer_wan as transformer_wan
from wan_diffusers import WanTransformer3DModel

from factories.parity import dit_references
from factories.transformer import (
    pad_text,
    parity_transformer,
    tiny_transformer_config,
    tiny_transformer_inputs,
)
from testing_utils import max_abs, max_rel

TASKS = ("t2v", "i2v", "flf2v")


def tiny_model(task="t2v", seed=0, **overrides) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    return WanTransformer3DModel(**tiny_transformer_config(task, **overrides)).eval()


def run(model, **inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).sample


# ---------------------------------------------------------------------------------------------------------------
# Parity with the original Wan2.1 code (tests/fixtures/wan21_parity, computed by the original `WanModel`)


def original_cases(task: str):
    """Yield (case, sample indices, model kwargs) for every DiT reference call; mixed shapes run one by one."""
    references = dit_references(task)
    for case in sorted({key.split(".")[1] for key in references}):
        count = sum(key.startswith(f"dit.{case}.x.") for key in references)
        shapes = {tuple(references[f"dit.{case}.x.{i}"].shape) for i in range(count)}
        groups = [list(range(count))] if len(shapes) == 1 else [[i] for i in range(count)]
        for indices in groups:
            latents = [references[f"dit.{case}.x.{i}"] for i in indices]
            if task != "t2v":  # noisy latent 16 | mask 4 | condition latent 16, as the original concatenates
                latents = [torch.cat([x, references[f"dit.{case}.y.{i}"]]) for x, i in zip(latents, indices)]
            kwargs = {
                "hidden_states": torch.stack(latents),
                "timestep": references[f"dit.{case}.t"][indices],
                "encoder_hidden_states": pad_text([references[f"dit.{case}.context.{i}"] for i in indices]),
            }
            if task != "t2v":
                kwargs["encoder_hidden_states_image"] = references[f"dit.{case}.clip_fea"]
            yield case, indices, kwargs


@pytest.mark.parity
@pytest.mark.parametrize("task", TASKS)
def test_matches_the_original_wan21_dit(task):
    model = parity_transformer(task)
    references = dit_references(task)
    for case, indices, kwargs in original_cases(task):
        output = run(model, **kwargs)
        for row, index in enumerate(indices):
            error = max_rel(output[row], references[f"dit.{case}.out.{index}"])
            # measured 2.5e-7 - 4.6e-7, at the fixtures' float64 noise floor (3e-7 - 5.6e-7)
            assert error <= 1e-5, f"{task} case {case} sample {index}: max_rel {error:.2e}"


@pytest.mark.parity
def test_unpadded_text_context_is_padded_to_512_rows_like_the_original():
    model = parity_transformer("t2v")
    _, _, kwargs = next(original_cases("t2v"))
    context = dit_references("t2v")["dit.A.context.0"][None]  # the 9 real tokens only
    unpadded = run(model, **dict(kwargs, encoder_hidden_states=context))
    assert torch.equal(unpadded, run(model, **kwargs))


@pytest.mark.parity
def test_timesteps_are_used_as_given_like_the_original():
    """The DiT embeds fractional timesteps exactly; truncation to int64 is the sampler's business, not the model's."""
    model = parity_transformer("t2v")
    case_b = [kwargs for case, _, kwargs in original_cases("t2v") if case == "B"][0]
    assert case_b["timestep"][0] == 12.75
    truncated = run(model, **dict(case_b, timestep=case_b["timestep"].long()))
    assert max_rel(truncated[0], run(model, **case_b)[0]) > 1e-3


# ---------------------------------------------------------------------------------------------------------------
# Equality with diffusers' built-in WanTransformer3DModel (the oracle) on the same weights


def diffusers_twin(model: WanTransformer3DModel) -> diffusers.WanTransformer3DModel:
    twin = diffusers.WanTransformer3DModel(**{k: v for k, v in model.config.items() if not k.startswith("_")})
    twin.load_state_dict(model.state_dict(), strict=True)
    return twin.eval()


def padded_inputs(task, **kwargs):
    """diffusers needs the text context already padded to 512 rows (its I2V attention splits at L - 512)."""
    inputs = tiny_transformer_inputs(task, **kwargs)
    inputs["encoder_hidden_states"] = pad_text(list(inputs["encoder_hidden_states"]))
    return inputs


@pytest.mark.oracle
@pytest.mark.parametrize("task", TASKS)
def test_matches_diffusers_up_to_the_float64_timestep_sinusoid(task, monkeypatch):
    model = tiny_model(task)
    twin = diffusers_twin(model)
    inputs = padded_inputs(task, batch_size=2, latent_shape=(3, 4, 6))  # batch 2, non-square, t = 999 and 12.75

    # The one intended difference: the original (and we) embed the timestep in float64, diffusers in float32.
    # It moves the output by up to ~5e-6 relative.
    assert max_rel(run(model, **inputs), run(twin, **inputs)) <= 1e-5

    # With the sinusoid computed in float32 as diffusers does, only float rounding remains (measured 2.2e-7 - 2.9e-7,
    # from our fused multiply-adds).
    def sinusoid_in_float32(timestep, dim):
        half = dim // 2
        frequencies = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(half, dtype=torch.float32) / half)
        angles = timestep.float()[:, None] * frequencies[None, :]
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)

    monkeypatch.setattr(transformer_wan, "timestep_sinusoid", sinusoid_in_float32)
    assert max_rel(run(model, **inputs), run(twin, **inputs)) <= 1e-6


@pytest.mark.oracle
@pytest.mark.parametrize("task", TASKS)
def test_diffusers_loads_the_parity_weights_and_agrees(task):
    """The converted original weights mean the same thing to diffusers' class: same keys, same results."""
    model = parity_transformer(task)
    twin = diffusers_twin(model)
    for _, _, kwargs in original_cases(task):
        assert max_rel(run(model, **kwargs), run(twin, **kwargs)) <= 1e-5


# ---------------------------------------------------------------------------------------------------------------
# The official configs (`transformer/config.json` of the Wan-AI/Wan2.1-*-Diffusers repos)

_T2V_14B = dict(num_attention_heads=40, num_layers=40, ffn_dim=13824)
_I2V_14B = dict(_T2V_14B, in_channels=36, image_dim=1280, added_kv_proj_dim=5120)
OFFICIAL_CONFIGS = {
    "Wan2.1-T2V-1.3B": (dict(num_attention_heads=12, num_layers=30, ffn_dim=8960), 1.419e9),
    "Wan2.1-T2V-14B": (_T2V_14B, 14.288e9),
    "Wan2.1-I2V-14B": (_I2V_14B, 16.395e9),
    "Wan2.1-FLF2V-14B": (dict(_I2V_14B, pos_embed_seq_len=514), 16.396e9),
}


def official_config(name: str) -> dict:
    fields, _ = OFFICIAL_CONFIGS[name]
    return {
        "_class_name": "WanTransformer3DModel",
        "_diffusers_version": "0.33.0.dev0",
        "patch_size": [1, 2, 2],
        "attention_head_dim": 128,
        "in_channels": 16,
        "out_channels": 16,
        "text_dim": 4096,
        "freq_dim": 256,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-06,
        "image_dim": None,
        "added_kv_proj_dim": None,
        "rope_max_seq_len": 1024,
        **fields,
    }


@pytest.mark.parametrize("name", OFFICIAL_CONFIGS)
def test_official_configs_have_the_released_parameter_counts(name):
    with torch.device("meta"):
        model = WanTransformer3DModel.from_config(official_config(name))
    count = sum(p.numel() for p in model.parameters())
    assert round(count / 1e9, 3) == round(OFFICIAL_CONFIGS[name][1] / 1e9, 3), f"{name}: {count:,} parameters"


def test_old_configs_get_wan21_defaults_and_unknown_keys_are_tolerated(tmp_path):
    config = official_config("Wan2.1-T2V-1.3B")
    for newer_key in ("pos_embed_seq_len", "rope_max_seq_len", "image_dim", "added_kv_proj_dim"):
        config.pop(newer_key, None)
    config["some_future_option"] = True
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded_config = WanTransformer3DModel.load_config(tmp_path)
    with torch.device("meta"):
        model = WanTransformer3DModel.from_config(loaded_config)
    assert model.config.pos_embed_seq_len is None and model.config.rope_max_seq_len == 1024
    assert model.config.image_dim is None and model.condition_embedder.image_embedder is None


def test_invalid_configs_are_rejected_with_the_argument_named():
    with pytest.raises(ValueError, match="qk_norm"):
        WanTransformer3DModel(**tiny_transformer_config("t2v", qk_norm="layer_norm"))
    with pytest.raises(ValueError, match="added_kv_proj_dim"):
        WanTransformer3DModel(**tiny_transformer_config("t2v", added_kv_proj_dim=24))


# ---------------------------------------------------------------------------------------------------------------
# Saving and loading


@pytest.mark.parametrize("task", TASKS)
def test_save_and_load_round_trip(task, tmp_path):
    model = tiny_model(task)
    model.save_pretrained(tmp_path)
    loaded = WanTransformer3DModel.from_pretrained(tmp_path).eval()
    inputs = tiny_transformer_inputs(task)
    assert torch.equal(run(model, **inputs), run(loaded, **inputs))
    public = lambda config: {k: list(v) if isinstance(v, tuple) else v for k, v in config.items() if k[0] != "_"}  # noqa: E731
    assert public(loaded.config) == public(model.config)


@pytest.mark.oracle
def test_loads_a_folder_saved_by_diffusers(tmp_path):
    """A `transformer/` folder of the official Diffusers repos is written by diffusers' class."""
    torch.manual_seed(0)
    theirs = diffusers.WanTransformer3DModel(**tiny_transformer_config("flf2v")).eval()
    theirs.save_pretrained(tmp_path)
    ours = WanTransformer3DModel.from_pretrained(tmp_path).eval()
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    inputs = padded_inputs("flf2v")
    assert max_rel(run(ours, **inputs), run(theirs, **inputs)) <= 1e-5  # the float64 sinusoid, as above


def test_loading_in_bfloat16_keeps_the_modulation_path_in_float32(tmp_path):
    tiny_model("i2v").save_pretrained(tmp_path)
    model = WanTransformer3DModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16).eval()
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert dtypes["condition_embedder.time_embedder.linear_1.weight"] == torch.float32
    assert dtypes["condition_embedder.time_proj.weight"] == torch.float32
    assert dtypes["blocks.0.scale_shift_table"] == torch.float32 and dtypes["scale_shift_table"] == torch.float32
    assert dtypes["blocks.0.norm2.weight"] == torch.float32
    assert dtypes["blocks.0.attn1.to_q.weight"] == torch.bfloat16


# ---------------------------------------------------------------------------------------------------------------
# Precision


@pytest.mark.oracle
def test_bfloat16_runs_and_stays_closer_to_float32_than_diffusers(tmp_path):
    """The residual stream stays float32 in bf16 (as the original's autocast regions do); diffusers rounds it."""
    model = parity_transformer("t2v")
    _, _, kwargs = next(original_cases("t2v"))
    reference = run(model, **kwargs)
    model.save_pretrained(tmp_path)
    ours = WanTransformer3DModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16).eval()
    theirs = diffusers.WanTransformer3DModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16).eval()
    bf16_inputs = {key: value.bfloat16() if key != "timestep" else value for key, value in kwargs.items()}
    ours_error = max_rel(run(ours, **bf16_inputs), reference)
    theirs_error = max_rel(run(theirs, **bf16_inputs).float(), reference)
    # bf16 keeps 8 mantissa bits (~4e-3 relative per rounding). Measured on this case: ours 3.2e-3, diffusers'
    # 5.6e-3 (over all parity cases ours is 3.2e-3 - 7.0e-3, diffusers' 5.4e-3 - 8.5e-3).
    assert ours_error < 1e-2, ours_error
    assert ours_error < theirs_error, (ours_error, theirs_error)


def test_rope_tables_are_built_once_per_grid_and_stay_float32():
    model = tiny_model().to(torch.bfloat16)
    latent = torch.zeros(1, 16, 3, 4, 6)
    table = model.rope(latent)
    assert table.dtype == torch.float32 and table.shape == (1, 3 * 2 * 3, 1, 12)  # (cos, sin) of 6 channel pairs
    assert model.rope(latent) is table  # cached
    # Exact tables: angles in float64, then rounded once to float32.
    frequencies = 1.0 / 10000.0 ** (torch.arange(0, 4, 2, dtype=torch.float64) / 4)  # time axis: 4 channels
    angles = torch.outer(torch.arange(3, dtype=torch.float64), frequencies)
    assert torch.equal(table[0, ::6, 0, 0:4:2], angles.cos().float())
    assert torch.equal(table[0, ::6, 0, 1:4:2], angles.sin().float())


def test_rotary_embedding_complex_and_real_arithmetic_agree():
    """Eager mode rotates as complex numbers; under torch.compile (and on MPS) the same products are written out."""
    model = tiny_model()
    table = model.rope(torch.zeros(1, 16, 3, 4, 6))
    query = torch.randn(2, table.shape[1], 2, 12)
    eager = transformer_wan.apply_rotary_emb(query, table)
    compiled = torch.compile(transformer_wan.apply_rotary_emb, backend="eager", fullgraph=True)(query, table)
    # Both compute x_re*cos - x_im*sin and x_re*sin + x_im*cos in float32. On this CPU they are bit-identical on long
    # rows; the complex kernel's short-row path rounds differently (measured 2.4e-7 absolute on values ~1).
    assert max_rel(compiled, eager) <= 1e-6
    real, imag = query.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = table.unflatten(-1, (-1, 2)).unbind(-1)
    rotated = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1).flatten(-2)
    assert max_rel(eager, rotated) <= 1e-6


# ---------------------------------------------------------------------------------------------------------------
# diffusers machinery


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_model("i2v").train()
    inputs = tiny_transformer_inputs("i2v")

    def gradients():
        model.zero_grad()
        model(**inputs).sample.square().mean().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = gradients()
    model.enable_gradient_checkpointing()
    checkpointed = gradients()
    assert model.is_gradient_checkpointing
    # Recomputation repeats exactly the same float32 operations: identical up to kernel nondeterminism.
    assert max(max_abs(checkpointed[name], plain[name]) for name in plain) <= 1e-6


def test_in_place_updates_without_autograd_give_the_same_output_and_leave_the_block_input_alone():
    """Without autograd the block updates its own residual stream and the FFN activation in place."""
    model = tiny_model("i2v")
    inputs = tiny_transformer_inputs("i2v")
    with_autograd = model(**inputs).sample  # out-of-place ops, as in training
    assert torch.equal(run(model, **inputs), with_autograd.detach())  # the same float32 operations, in place

    block_inputs = []
    model.blocks[1].register_forward_pre_hook(lambda module, args: block_inputs.append(args[0].clone()))
    model.blocks[1].register_forward_pre_hook(lambda module, args: block_inputs.append(args[0]))
    run(model, **inputs)
    assert torch.equal(block_inputs[0], block_inputs[1])  # cache hooks keep the block input to compare with


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_residual_stream_is_a_contiguous_float32_tensor(dtype):
    """Element-wise ops keep their first input's layout: a strided stream would make every LayerNorm copy it."""
    model = tiny_model().to(dtype)
    hidden_states, compute_dtype = model._embed_patches(tiny_transformer_inputs()["hidden_states"].to(dtype))
    assert hidden_states.dtype == torch.float32 and hidden_states.is_contiguous() and compute_dtype == dtype


def test_attention_backend_can_be_switched():
    model = tiny_model("i2v")
    inputs = tiny_transformer_inputs("i2v")
    default = run(model, **inputs)
    model.set_attention_backend("_native_math")
    assert all(p._attention_backend == "_native_math" for p in model.attn_processors.values())
    # A different float32 kernel, the same maths: summation order only (~1e-7).
    assert max_rel(run(model, **inputs), default) <= 1e-5
    # Back to PyTorch SDPA. (diffusers' `set_attention_backend` also sets a process-wide default that
    # `reset_attention_backend` leaves in place, so set "native" explicitly rather than only resetting.)
    model.set_attention_backend("native")
    model.reset_attention_backend()
    assert torch.equal(run(model, **inputs), default)


def test_fused_qkv_projections_give_the_same_output():
    model = tiny_model("i2v")
    inputs = tiny_transformer_inputs("i2v")
    unfused = run(model, **inputs)
    model.fuse_qkv_projections()
    assert model.blocks[0].attn1.fused_projections
    assert max_rel(run(model, **inputs), unfused) <= 1e-6  # one wider matmul instead of three: rounding only
    model.unfuse_qkv_projections()
    assert torch.equal(run(model, **inputs), unfused)


def test_first_block_cache_hook_runs_on_our_model():
    model = tiny_model()
    inputs = tiny_transformer_inputs()
    reference = run(model, **inputs)
    model.enable_cache(FirstBlockCacheConfig(threshold=0.5))
    outputs = []
    for _ in range(2):
        with model.cache_context("cond"):
            outputs.append(run(model, **inputs))
    model.disable_cache()
    assert torch.allclose(outputs[0], reference, atol=1e-6)  # the first call computes every block
    assert torch.allclose(outputs[1], reference, atol=1e-5)  # identical input: the cached tail is exact


def test_mag_cache_hook_skips_blocks_on_our_model():
    model = tiny_model()
    inputs = tiny_transformer_inputs()
    reference = run(model, **inputs)
    last_block_calls = []
    model.blocks[-1].ffn.register_forward_pre_hook(lambda *args: last_block_calls.append(1))
    # Magnitude ratios of 1 and a generous threshold: after the first step MagCache may skip the blocks.
    config = MagCacheConfig(num_inference_steps=4, mag_ratios=[1.0] * 4, threshold=0.5, retention_ratio=0.0)
    model.enable_cache(config)
    outputs = []
    for _ in range(4):
        with model.cache_context("cond"):
            outputs.append(run(model, **inputs))
    model.disable_cache()
    assert len(last_block_calls) < 4  # some steps reused the cached residual
    assert all(torch.allclose(output, reference, atol=1e-5) for output in outputs)  # same input every step


@pytest.mark.parametrize("task", ["t2v", "i2v"])
def test_sea_cache_hook_skips_blocks_on_our_model(task):
    """diffusers' SeaCache recognises only its own Wan class; `enable_cache` hands it our `raw_vision_callback` (the
    output's latent: the first 16 of I2V's 36 input channels), and SeaCache then reuses the block stack."""
    model = tiny_model(task)
    inputs = tiny_transformer_inputs(task)
    reference = run(model, **inputs)
    last_block_calls = []
    model.blocks[-1].ffn.register_forward_pre_hook(lambda *args: last_block_calls.append(1))
    # A generous threshold and no cap on reuse: every step between the first and the last may reuse the residual.
    model.enable_cache(SeaCacheConfig(threshold=10.0, max_consecutive_cached=0))
    outputs = []
    for step in range(4):
        with model.cache_context("cond", step_index=step, sigma=1.0 - step / 4, num_inference_steps=4):
            outputs.append(run(model, **inputs))
    model.disable_cache()
    assert len(last_block_calls) < 4  # some steps reused the cached residual
    # Same input every step: the reused (or extrapolated) residual is the computed one, up to rounding.
    assert all(torch.allclose(output, reference, atol=1e-5) for output in outputs)
    latents = transformer_wan.sea_cache_raw_vision(model, (), inputs)
    batch, _, *grid = inputs["hidden_states"].shape
    assert [tuple(latent.shape) for latent in latents] == [(16, *grid)] * batch


def test_lora_adapters_attach_through_peft():
    from peft import LoraConfig

    model = tiny_model()
    inputs = tiny_transformer_inputs()
    reference = run(model, **inputs)
    model.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    assert torch.allclose(run(model, **inputs), reference, atol=1e-6)  # LoRA B starts at zero
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.1)
    with_lora = run(model, **inputs)
    assert max_abs(with_lora, reference) > 1e-3
    with torch.no_grad():
        scaled_off = model(**inputs, attention_kwargs={"scale": 0.0}).sample
    assert torch.allclose(scaled_off, reference, atol=1e-6)


def test_the_block_compiles_with_fullgraph():
    model = tiny_model("i2v")
    inputs = tiny_transformer_inputs("i2v")
    eager = run(model, **inputs)
    model.compile_repeated_blocks(fullgraph=True, backend="aot_eager")
    assert max_abs(run(model, **inputs), eager) <= 1e-6


def test_the_whole_forward_has_no_graph_breaks_or_host_syncs():
    """fullgraph=True fails on any `.item()`, `.tolist()` or data-dependent branch in the forward."""
    model = tiny_model("flf2v")
    inputs = tiny_transformer_inputs("flf2v")
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        assert max_abs(compiled(**inputs).sample, run(model, **inputs)) <= 1e-6


def denoising_calls(task="t2v", steps=(999.0, 870.5, 12.75), padded=True):
    """The DiT calls of a guided denoising loop: per step a conditional and an unconditional call whose prompts have
    different true lengths (7 and 3 tokens); `padded` zero-pads both to 512 rows as the pipelines' `encode_prompt`
    does, otherwise they keep their lengths. Timesteps as the pipelines pass them: `t.expand(batch_size)`."""
    inputs = tiny_transformer_inputs(task)
    prompt, negative_prompt = inputs["encoder_hidden_states"], inputs["encoder_hidden_states"][:, :3].flip(0)
    if padded:
        prompt, negative_prompt = pad_text(list(prompt)), pad_text(list(negative_prompt))
    for step in steps:
        timestep = torch.tensor(step).expand(inputs["hidden_states"].shape[0])
        for text in (prompt, negative_prompt):
            yield dict(inputs, timestep=timestep, encoder_hidden_states=text)


@pytest.mark.parametrize("padded", [True, False], ids=["padded-prompts", "prompts-of-their-length"])
def test_compiled_blocks_do_not_recompile_across_denoising_steps(padded):
    """Regional compilation: after the first call, new timesteps and the other prompt must reuse the block graph."""
    torch._dynamo.reset()
    model = tiny_model("i2v")
    calls = list(denoising_calls("i2v", padded=padded))
    eager = [run(model, **call) for call in calls]
    model.compile_repeated_blocks(fullgraph=True, backend="eager")
    compiled = [run(model, **calls[0])]
    with torch.compiler.set_stance("fail_on_recompile"):  # raises on any recompilation
        compiled += [run(model, **call) for call in calls[1:]]
    # Compiled, RoPE runs in real arithmetic instead of complex: rounding only (measured <= 3.5e-7).
    assert max(max_rel(a, b) for a, b in zip(compiled, eager)) <= 1e-6


def test_the_compiled_forward_does_not_recompile_across_denoising_steps():
    """Whole-model compilation, with the pipelines' inputs (prompts zero-padded to 512 rows, tensor timesteps)."""
    torch._dynamo.reset()
    model = tiny_model()
    compiled_model = torch.compile(model, fullgraph=True, backend="eager")
    calls = list(denoising_calls())
    with torch.no_grad():
        compiled_model(**calls[0])
        with torch.compiler.set_stance("fail_on_recompile"):
            for call in calls[1:]:
                compiled_model(**call)


def test_layerwise_casting_to_float8_storage_runs():
    model = tiny_model().to(torch.bfloat16)
    model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    assert model.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    assert model.patch_embedding.weight.dtype == torch.bfloat16  # skipped by `_skip_layerwise_casting_patterns`
    inputs = tiny_transformer_inputs()
    assert torch.isfinite(run(model, **inputs)).all()


def test_context_parallel_plan_names_real_modules_and_arguments():
    import inspect

    model = tiny_model()
    modules = dict(model.named_modules())
    for path, spec in model._cp_plan.items():
        assert path in modules, path
        if isinstance(spec, dict):
            for argument in spec:
                if isinstance(argument, str):
                    assert argument in inspect.signature(modules[path].forward).parameters
    assert model.rope(torch.zeros(1, 16, 3, 4, 6)).ndim == 4  # split on dim 1 by the plan


def test_no_split_and_repeated_block_names_match_the_block_class():
    model = tiny_model()
    assert type(model.blocks[0]).__name__ in model._no_split_modules
    assert type(model.blocks[0]).__name__ in model._repeated_blocks


# ---------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "task, change, message",
    [
        ("t2v", {"hidden_states": torch.zeros(2, 15, 3, 4, 6)}, "hidden_states"),
        ("t2v", {"hidden_states": torch.zeros(2, 16, 3, 5, 6)}, "height"),
        ("t2v", {"timestep": torch.tensor([1.0, 2.0, 3.0])}, "timestep"),
        ("t2v", {"encoder_hidden_states": torch.zeros(2, 513, 16)}, "512"),
        ("t2v", {"encoder_hidden_states_image": torch.zeros(2, 5, 20)}, "no image embedder"),
        ("i2v", {"encoder_hidden_states_image": None}, "encoder_hidden_states_image"),
        ("flf2v", {"encoder_hidden_states_image": torch.zeros(2, 5, 20)}, r"2 image\(s\) per sample"),
    ],
)
def test_bad_inputs_raise_clear_errors(task, change, message):
    model = tiny_model(task)
    inputs = dict(tiny_transformer_inputs(task), **change)
    with pytest.raises(ValueError, match=message):
        run(model, **inputs)


def test_scalar_timestep_is_broadcast_to_the_batch():
    model = tiny_model()
    inputs = tiny_transformer_inputs()
    same_t = dict(inputs, timestep=torch.tensor([500.0, 500.0]))
    assert torch.equal(run(model, **dict(inputs, timestep=torch.tensor(500.0))), run(model, **same_t))
