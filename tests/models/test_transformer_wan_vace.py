"""WanVACETransformer3DModel: parity with the original `VaceWanModel` and with diffusers, and diffusers' machinery.

Tolerances: float32 parity is max_rel = max|a - b| / max|reference|. The original re-run in float64 moves the VACE
fixture outputs by 3.0e-7 - 5.6e-7 (their noise floor), so 1e-5 leaves room for a different summation order and
none for a wrong formula (a float32 timestep sinusoid alone shows up as ~5e-6, a misplaced hint as > 1e-2).
"""

import diffusers
import pytest
import torch
from diffusers.hooks import FirstBlockCacheConfig

import wan_diffusers.models.transformer_wan as transformer_wan
from wan_diffusers import WanTransformer3DModel, WanVACETransformer3DModel
from wan_diffusers.models.transformer_wan_vace import WanVACETransformerBlock

from factories.parity import dit_references
from factories.transformer import pad_text
from factories.vace import (
    original_vace_cases,
    parity_vace_transformer,
    tiny_vace_config,
    tiny_vace_inputs,
    tiny_vace_transformer,
)
from testing_utils import max_abs, max_rel


def run(model, **inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).sample


def diffusers_twin(model: WanVACETransformer3DModel) -> diffusers.WanVACETransformer3DModel:
    config = {k: v for k, v in model.config.items() if not k.startswith("_")}
    twin = diffusers.WanVACETransformer3DModel(**config)
    twin.load_state_dict(model.state_dict(), strict=True)
    return twin.eval()


def diffusers_inputs(inputs: dict, num_hints: int) -> dict:
    """diffusers needs the text padded to 512 rows and the scale as a tensor with one value per hint layer."""
    inputs = dict(inputs)
    inputs["encoder_hidden_states"] = pad_text(list(inputs["encoder_hidden_states"]))
    scale = inputs.get("control_hidden_states_scale", 1.0)
    inputs["control_hidden_states_scale"] = torch.as_tensor(scale, dtype=torch.float32).expand(num_hints).clone()
    return inputs


# ---------------------------------------------------------------------------------------------------------------
# Parity with the original VaceWanModel (tests/fixtures/wan21_parity/tiny-vace)


@pytest.mark.parity
def test_matches_the_original_vace_dit():
    model = parity_vace_transformer()
    references = dit_references("vace")
    seen = set()
    for case, indices, kwargs in original_vace_cases():
        output = run(model, **kwargs)
        for row, index in enumerate(indices):
            error = max_rel(output[row], references[f"dit.{case}.out.{index}"])
            # measured 2.2e-7 - 3.7e-7 (cases A, B with scale 0.6, C), at the fixture's float64 noise floor
            assert error <= 1e-5, f"case {case} sample {index}: max_rel {error:.2e}"
            seen.add((case, index))
    assert seen == {("A", 0), ("B", 0), ("B", 1), ("C", 0), ("C", 1)}


@pytest.mark.parity
def test_the_control_branch_matters_on_the_fixture():
    """Control: dropping the hints (scale 0) or feeding another control input moves the output far off."""
    model = parity_vace_transformer()
    case, indices, kwargs = next(original_vace_cases())
    reference = dit_references("vace")[f"dit.{case}.out.0"]
    assert max_rel(run(model, **dict(kwargs, control_hidden_states_scale=0.0))[0], reference) > 1e-2
    shuffled = kwargs["control_hidden_states"].flip(2)
    assert max_rel(run(model, **dict(kwargs, control_hidden_states=shuffled))[0], reference) > 1e-2


def test_with_scale_zero_it_is_the_plain_transformer_on_the_same_weights():
    """The main path is `WanTransformer3DModel`'s: with zero hint scales the VACE model is the base model exactly."""
    model = tiny_vace_transformer()
    base_config = {k: v for k, v in model.config.items() if not k.startswith("_") and not k.startswith("vace_")}
    base = WanTransformer3DModel(**base_config).eval()
    missing, unexpected = base.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(key.startswith("vace_") for key in unexpected)
    inputs = tiny_vace_inputs()
    without_hints = run(model, **inputs, control_hidden_states_scale=0.0)
    inputs.pop("control_hidden_states")
    assert torch.equal(without_hints, run(base, **inputs))


def test_hints_are_computed_from_the_patch_embedded_input_before_the_main_blocks():
    model = tiny_vace_transformer()
    calls = []
    for name, module in model.named_modules():
        if isinstance(module, (WanVACETransformerBlock,)) or name.startswith("blocks.") and name.count(".") == 1:
            module.register_forward_pre_hook(lambda module, args, name=name: calls.append((name, args[0].clone())))
    patch_embedded = []
    model.patch_embedding.register_forward_hook(
        lambda module, args, output: patch_embedded.append(output.flatten(2).transpose(1, 2))
    )
    run(model, **tiny_vace_inputs())
    assert [name for name, _ in calls] == ["vace_blocks.0", "vace_blocks.1", "blocks.0", "blocks.1", "blocks.2"]
    # every hint block is handed the patch-embedded video tokens (block 0 adds them to its projected control tokens)
    for name, hidden_states in calls[:2]:
        assert torch.equal(hidden_states, patch_embedded[0]), name


# ---------------------------------------------------------------------------------------------------------------
# Equality with diffusers' built-in WanVACETransformer3DModel (the oracle) on the same weights


def sinusoid_in_float32(timestep, dim):
    """diffusers' timestep embedding (float32) instead of the original's float64 one."""
    half = dim // 2
    frequencies = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(half, dtype=torch.float32) / half)
    angles = timestep.float()[:, None] * frequencies[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


@pytest.mark.oracle
@pytest.mark.parametrize(
    "scale", [1.0, 0.6, [0.3, 1.7], torch.tensor([1.2, 0.0])], ids=["one", "scalar", "per-layer-list", "per-layer"]
)
def test_matches_diffusers_up_to_the_float64_timestep_sinusoid(scale, monkeypatch):
    model = tiny_vace_transformer()
    twin = diffusers_twin(model)
    inputs = dict(tiny_vace_inputs(batch_size=2), control_hidden_states_scale=scale)  # t = 999 and 12.75
    theirs = run(twin, **diffusers_inputs(inputs, num_hints=2))

    # The one intended difference: the timestep sinusoid in float64 (the original) instead of float32 (diffusers).
    error = max_rel(run(model, **inputs), theirs)
    assert error <= 1e-5, error

    # With diffusers' float32 sinusoid only rounding remains: measured 2.2e-7 - 2.8e-7 (our fused multiply-adds
    # round once where diffusers rounds twice); 6.9e-7 - 8.4e-7 with the float64 one.
    monkeypatch.setattr(transformer_wan, "timestep_sinusoid", sinusoid_in_float32)
    error = max_rel(run(model, **inputs), theirs)
    assert error <= 1e-6, error


@pytest.mark.oracle
def test_a_shorter_control_input_is_zero_padded_like_diffusers(monkeypatch):
    monkeypatch.setattr(transformer_wan, "timestep_sinusoid", sinusoid_in_float32)
    model = tiny_vace_transformer()
    inputs = tiny_vace_inputs(latent_shape=(3, 4, 6))
    inputs["control_hidden_states"] = inputs["control_hidden_states"][:, :, :2]  # 2 of 3 latent frames
    theirs = run(diffusers_twin(model), **diffusers_inputs(inputs, 2))
    assert max_rel(run(model, **inputs), theirs) <= 1e-6  # measured 2.9e-7: the fused multiply-adds' rounding


@pytest.mark.parametrize("control_frames", [3, 2], ids=["full", "shorter"])
def test_the_control_stream_is_a_contiguous_float32_tensor(control_frames):
    """Like the main residual stream: a strided control stream would be copied by every LayerNorm of the hint blocks."""
    model = tiny_vace_transformer().to(torch.bfloat16)
    control = tiny_vace_inputs(latent_shape=(3, 4, 6))["control_hidden_states"][:, :, :control_frames]
    tokens = model._embed_control(control.bfloat16(), num_tokens=3 * 2 * 3)
    assert tokens.dtype == torch.float32 and tokens.is_contiguous() and tokens.shape == (2, 18, 24)


@pytest.mark.oracle
def test_diffusers_loads_the_parity_weights_and_agrees():
    """The converted original weights mean the same to diffusers' class: same keys, same results."""
    model = parity_vace_transformer()
    twin = diffusers_twin(model)
    for _, _, kwargs in original_vace_cases():
        # measured 1.7e-7 - 4.9e-6, all from diffusers' float32 sinusoid (smallest for case C's t = 5.5)
        assert max_rel(run(model, **kwargs), run(twin, **diffusers_inputs(kwargs, num_hints=2))) <= 1e-5


@pytest.mark.oracle
def test_loads_a_folder_saved_by_diffusers(tmp_path):
    """A `transformer/` folder of `Wan-AI/Wan2.1-VACE-*-diffusers` is written by diffusers' class."""
    torch.manual_seed(0)
    theirs = diffusers.WanVACETransformer3DModel(**tiny_vace_config()).eval()
    theirs.save_pretrained(tmp_path)
    ours = WanVACETransformer3DModel.from_pretrained(tmp_path).eval()
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    inputs = tiny_vace_inputs()
    assert max_rel(run(ours, **inputs), run(theirs, **diffusers_inputs(inputs, 2))) <= 1e-5  # the sinusoid


# ---------------------------------------------------------------------------------------------------------------
# Config: the official layouts, validation, saving and loading

# parameter and tensor counts of the released configs (the official Diffusers repos' `transformer/` folders)
OFFICIAL_CONFIGS = {
    "Wan2.1-VACE-1.3B": (
        dict(num_attention_heads=12, num_layers=30, ffn_dim=8960, vace_layers=list(range(0, 30, 2))),
        2.154e9,
        1264,
    ),
    "Wan2.1-VACE-14B": (
        dict(num_attention_heads=40, num_layers=40, ffn_dim=13824, vace_layers=list(range(0, 40, 5))),
        17.338e9,
        1331,
    ),
}


@pytest.mark.parametrize("name", OFFICIAL_CONFIGS)
def test_official_configs_have_the_released_parameter_counts(name):
    fields, parameters, tensors = OFFICIAL_CONFIGS[name]
    with torch.device("meta"):
        model = WanVACETransformer3DModel(**fields)
    count = sum(p.numel() for p in model.parameters())
    assert round(count / 1e9, 3) == round(parameters / 1e9, 3), f"{name}: {count:,} parameters"
    assert len(model.state_dict()) == tensors


def test_default_config_is_diffusers_default():
    ours = WanVACETransformer3DModel.extract_init_dict({})[0]
    theirs = diffusers.WanVACETransformer3DModel.extract_init_dict({})[0]
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in ours.items()} == {
        k: list(v) if isinstance(v, tuple) else v for k, v in theirs.items()
    }


@pytest.mark.parametrize(
    "vace_layers, message",
    [([1, 2], "must contain block 0"), ([0, 3], "below `num_layers`"), ([0, 2, 2], "repeat"), ([], "non-empty")],
)
def test_invalid_vace_layers_are_rejected(vace_layers, message):
    with pytest.raises(ValueError, match=message):
        WanVACETransformer3DModel(**tiny_vace_config(vace_layers=vace_layers))


def test_save_and_load_round_trip(tmp_path):
    model = tiny_vace_transformer()
    model.save_pretrained(tmp_path)
    loaded = WanVACETransformer3DModel.from_pretrained(tmp_path).eval()
    inputs = tiny_vace_inputs()
    assert torch.equal(run(model, **inputs), run(loaded, **inputs))
    assert loaded.config.vace_layers == [0, 2] and loaded.config.vace_in_channels == 96


def test_state_dict_keys_are_diffusers_keys():
    model = tiny_vace_transformer()
    twin_keys = diffusers_twin(model).state_dict().keys()
    assert model.state_dict().keys() == twin_keys
    assert "vace_blocks.0.proj_in.weight" in twin_keys and "vace_blocks.1.proj_in.weight" not in twin_keys


def test_loading_in_bfloat16_keeps_the_modulation_path_in_float32(tmp_path):
    tiny_vace_transformer().save_pretrained(tmp_path)
    model = WanVACETransformer3DModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16).eval()
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert dtypes["vace_blocks.1.scale_shift_table"] == torch.float32
    assert dtypes["vace_blocks.0.norm2.weight"] == torch.float32
    assert dtypes["vace_blocks.0.proj_in.weight"] == torch.bfloat16
    inputs = {k: v.bfloat16() if k != "timestep" else v for k, v in tiny_vace_inputs().items()}
    assert torch.isfinite(run(model, **inputs)).all()


# ---------------------------------------------------------------------------------------------------------------
# diffusers machinery


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_vace_transformer().train()
    inputs = tiny_vace_inputs()

    def gradients():
        model.zero_grad()
        model(**inputs).sample.square().mean().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = gradients()
    assert plain["vace_blocks.0.proj_in.weight"].abs().sum() > 0  # the hint blocks are trained too
    model.enable_gradient_checkpointing()
    checkpointed = gradients()
    # recomputation repeats the same float32 operations: identical up to kernel nondeterminism
    assert max(max_abs(checkpointed[name], plain[name]) for name in plain) <= 1e-6


@pytest.mark.slow
def test_the_whole_forward_has_no_graph_breaks_or_host_syncs():
    model = tiny_vace_transformer()
    inputs = dict(tiny_vace_inputs(), control_hidden_states_scale=torch.tensor([0.5, 1.5]))
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        assert max_abs(compiled(**inputs).sample, run(model, **inputs)) <= 1e-6


@pytest.mark.slow
def test_both_block_classes_compile_as_repeated_blocks():
    model = tiny_vace_transformer()
    inputs = tiny_vace_inputs()
    eager = run(model, **inputs)
    model.compile_repeated_blocks(fullgraph=True, backend="aot_eager")
    assert max_abs(run(model, **inputs), eager) <= 1e-6
    for block in [*model.blocks, *model.vace_blocks]:
        assert type(block).__name__ in model._repeated_blocks and type(block).__name__ in model._no_split_modules


def test_layerwise_casting_keeps_the_control_patch_embedding():
    model = tiny_vace_transformer().to(torch.bfloat16)
    model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    assert model.vace_blocks[0].proj_in.weight.dtype == torch.float8_e4m3fn
    assert model.vace_patch_embedding.weight.dtype == torch.bfloat16
    assert torch.isfinite(run(model, **tiny_vace_inputs())).all()


def test_lora_adapters_reach_the_hint_blocks():
    from peft import LoraConfig

    model = tiny_vace_transformer()
    inputs = tiny_vace_inputs()
    reference = run(model, **inputs)
    model.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    for name, parameter in model.named_parameters():
        if "lora_B" in name and name.startswith("vace_blocks."):
            torch.nn.init.normal_(parameter, std=0.1)
    assert max_abs(run(model, **inputs), reference) > 1e-3
    with torch.no_grad():
        scaled_off = model(**inputs, attention_kwargs={"scale": 0.0}).sample
    assert torch.allclose(scaled_off, reference, atol=1e-6)


@pytest.mark.oracle
def test_first_block_cache_accounts_for_the_hints():
    """The hints are added inside the main blocks, so a cache hook that skips the blocks after the first skips their
    hints with them. diffusers adds them between blocks: on a cache hit it adds hint 0 twice."""
    model = tiny_vace_transformer()
    twin = diffusers_twin(model)
    inputs = tiny_vace_inputs()
    for candidate, candidate_inputs in ((model, inputs), (twin, diffusers_inputs(inputs, 2))):
        reference = run(candidate, **candidate_inputs)
        candidate.enable_cache(FirstBlockCacheConfig(threshold=0.5))
        outputs = []
        for _ in range(2):  # the same input twice: the second call reuses the cached tail
            with candidate.cache_context("cond"):
                outputs.append(run(candidate, **candidate_inputs))
        candidate.disable_cache()
        assert torch.equal(outputs[0], reference)
        if candidate is model:
            assert max_abs(outputs[1], reference) <= 1e-5  # measured 2.4e-7
        else:
            assert max_abs(outputs[1], reference) > 0.1  # measured 0.86


def test_the_hint_block_is_registered_for_diffusers_hooks():
    from diffusers.hooks._helpers import TransformerBlockRegistry

    metadata = TransformerBlockRegistry.get(WanVACETransformerBlock)
    assert metadata.return_hidden_states_index == 1  # (hint, control stream): the stream is carried forward
    assert metadata.hidden_states_argument_name == "control_hidden_states"


# ---------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "change, message",
    [
        ({"control_hidden_states": None}, "control_hidden_states` is required"),
        ({"control_hidden_states": torch.zeros(2, 95, 3, 4, 6)}, r"\[2, 96, F <= 3, 4, 6\]"),
        ({"control_hidden_states": torch.zeros(2, 96, 3, 4, 8)}, "to match `hidden_states`"),
        ({"control_hidden_states": torch.zeros(2, 96, 4, 4, 6)}, "F <= 3"),
        ({"control_hidden_states": torch.zeros(1, 96, 3, 4, 6)}, r"\[2, 96"),
        ({"control_hidden_states_scale": [1.0, 1.0, 1.0]}, "one value per VACE layer"),
        ({"control_hidden_states_scale": torch.ones(1, 2)}, "one value per VACE layer"),
        ({"encoder_hidden_states": torch.zeros(2, 513, 16)}, "512"),
    ],
)
def test_bad_inputs_raise_clear_errors(change, message):
    model = tiny_vace_transformer()
    with pytest.raises(ValueError, match=message):
        run(model, **dict(tiny_vace_inputs(), **change))
