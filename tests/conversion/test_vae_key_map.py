"""The VAE key maps (`wan_diffusers.conversion.vae`): original `Wan2.1_VAE.pth` and `Wan2.2_VAE.pth` keys -> the Hub
layout, the config read from the weight shapes, and strict loading with clear errors."""

import json

import pytest
import torch
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

from wan_diffusers.conversion.rules import ConversionError, rename_state_dict
from wan_diffusers.conversion.vae import (
    VAE_RULES,
    convert_vae_state_dict,
    vae_config_from_original,
    vae_rules,
)
from wan_diffusers.models.autoencoder_kl_wan import AutoencoderKLWan

from factories.parity import manifest, original_component_state_dict
from factories.vae import WAN22_FIXTURE_DIR


def _original() -> dict[str, torch.Tensor]:
    """The fixtures' VAE: the released key layout (194 tensors) at base width 3."""
    return original_component_state_dict("Wan2.1_VAE.pth")


def _shapes(state_dict: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state_dict.items()}


def test_every_original_key_matches_exactly_one_rule():
    matches = {key: [rule.pattern for rule in VAE_RULES if rule.match(key)] for key in _original()}
    assert len(matches) == 194
    assert {key: patterns for key, patterns in matches.items() if len(patterns) != 1} == {}


def test_converted_keys_and_shapes_are_the_models():
    converted = convert_vae_state_dict(_original())
    with torch.device("meta"):
        model = AutoencoderKLWan(**vae_config_from_original(_shapes(_original())))
    assert _shapes(converted) == {key: tuple(value.shape) for key, value in model.state_dict().items()}


@pytest.mark.oracle
def test_conversion_agrees_with_diffusers_single_file_converter():
    """diffusers' `from_single_file` converter (a hand-written table for the released layout) gives the same keys
    and the very same tensors."""
    original = _original()
    theirs = convert_wan_vae_to_diffusers(dict(original))
    ours = convert_vae_state_dict(original)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)


def test_config_is_read_from_the_weight_shapes():
    config = vae_config_from_original(_shapes(_original()))
    vae_args = manifest("t2v")["vae_args"]  # the constructor arguments the fixtures were made with
    assert config["base_dim"] == vae_args["dim"]
    for key in ("z_dim", "dim_mult", "num_res_blocks", "temperal_downsample"):
        assert config[key] == vae_args[key], key
    assert config["attn_scales"] == vae_args["attn_scales"] == []
    for key in ("latents_mean", "latents_std"):  # the manifest holds the float32 values the original computed with
        assert torch.equal(torch.tensor(config[key]), torch.tensor(vae_args[key])), key
    assert (config["scale_factor_temporal"], config["scale_factor_spatial"]) == (4, 8)


def test_released_size_config_is_the_hub_config():
    """At the released width (96) the shapes alone give exactly the config of the official Hub repos (diffusers'
    defaults). The released shapes are taken from the Hub-layout model through the key map, key by key."""
    with torch.device("meta"):
        released = AutoencoderKLWan()
    hub_shapes = {key: tuple(value.shape) for key, value in released.state_dict().items()}
    original_shapes = {}
    for original_key in _original():
        (hub_key,) = rename_state_dict({original_key: torch.empty(0)}, VAE_RULES)
        original_shapes[original_key] = hub_shapes[hub_key]
    config = vae_config_from_original(original_shapes)
    assert config == {key: value for key, value in released.config.items() if not key.startswith("_")}


def test_layout_with_one_residual_block_per_stage():
    """diffusers' test VAE layout (1 residual block per encoder stage, so 2 per decoder stage): the regrouping of the
    decoder's flat list follows `num_res_blocks`."""
    rules = vae_rules(num_res_blocks=1, num_stages=4)
    # decoder.upsamples: stage s holds entries 3s, 3s + 1 (residual blocks) and 3s + 2 (upsampler)
    probes = {
        "decoder.upsamples.1.residual.0.gamma": "decoder.up_blocks.0.resnets.1.norm1.gamma",
        "decoder.upsamples.2.time_conv.weight": "decoder.up_blocks.0.upsamplers.0.time_conv.weight",
        "decoder.upsamples.3.shortcut.bias": "decoder.up_blocks.1.resnets.0.conv_shortcut.bias",
        "decoder.upsamples.8.resample.1.weight": "decoder.up_blocks.2.upsamplers.0.resample.1.weight",
        "decoder.upsamples.10.residual.6.weight": "decoder.up_blocks.3.resnets.1.conv2.weight",
        "encoder.downsamples.5.resample.1.bias": "encoder.down_blocks.5.resample.1.bias",
    }
    for original_key, hub_key in probes.items():
        (rule,) = [rule for rule in rules if rule.match(original_key)]
        assert rule.apply(rule.match(original_key), torch.empty(0)).keys() == {hub_key}
    assert not any(rule.match("decoder.upsamples.11.resample.1.weight") for rule in rules)  # no fifth stage


def test_loads_strictly_on_the_meta_device():
    vae = AutoencoderKLWan.from_single_file(_original(), torch_dtype=torch.bfloat16)
    assert all(parameter.device.type == "cpu" for parameter in vae.parameters())
    assert all(parameter.dtype == torch.bfloat16 for parameter in vae.parameters())
    assert not vae.training


def test_unknown_key_is_named():
    original = _original()
    original["encoder.downsamples.0.residual.9.weight"] = torch.zeros(1)
    with pytest.raises(ConversionError, match=r"keys the Wan 2\.1 VAE key map does not know \(1\):\n.*residual\.9"):
        convert_vae_state_dict(original)


def test_wrong_shape_is_named():
    original = _original()
    original["decoder.middle.1.to_qkv.weight"] = torch.zeros(1, 2, 1, 1)
    with pytest.raises(ConversionError, match=r"decoder\.mid_block\.attentions\.0\.to_qkv\.weight: checkpoint"):
        AutoencoderKLWan.from_single_file(original)


def test_missing_key_is_named():
    original = _original()
    del original["decoder.head.0.gamma"]
    with pytest.raises(ConversionError, match=r"missing keys \(1\):\n\s+decoder\.norm_out\.gamma"):
        AutoencoderKLWan.from_single_file(original)


def test_incomplete_wan22_checkpoint_is_refused():
    """Wan 2.2 nests its residual blocks (`encoder.downsamples.0.downsamples.0.residual...`); missing layers are named."""
    shapes = {
        "encoder.conv1.weight": (160, 12, 3, 3, 3),
        "conv2.weight": (48, 48, 1, 1, 1),
        "decoder.head.2.weight": (12, 256, 3, 3, 3),
        "encoder.downsamples.0.downsamples.0.residual.2.weight": (160, 160, 3, 3, 3),
    }
    with pytest.raises(ConversionError, match=r"not a complete Wan 2\.2 VAE; it lacks encoder\.downsamples\.0\.down"):
        vae_config_from_original(shapes)


def test_not_a_vae_is_refused():
    with pytest.raises(ConversionError, match=r"Not a Wan VAE checkpoint: missing \['encoder\.conv1\.weight'"):
        vae_config_from_original({"blocks.0.modulation": (1, 6, 8)})


# ---------------------------------------------------------------------------------------------------------------------
# Wan 2.2 (`Wan2.2_VAE.pth`: nested stages, patchify, 48 latent channels)


def _original22() -> dict[str, torch.Tensor]:
    return torch.load(WAN22_FIXTURE_DIR / "Wan2.2_VAE.pth", map_location="cpu", weights_only=True)


def test_wan22_every_original_key_matches_exactly_one_rule():
    rules = vae_rules(is_residual=True)
    matches = {key: [rule.pattern for rule in rules if rule.match(key)] for key in _original22()}
    assert len(matches) == 196
    assert {key: patterns for key, patterns in matches.items() if len(patterns) != 1} == {}


def test_wan22_config_is_read_from_the_weight_shapes():
    """The fixtures' constructor arguments (`manifest.json` -> `vae_args`), the decoder's own width (4 here, 256
    released: not the encoder's), the patchify and the 48 released constants, in the official config's field names."""
    config = vae_config_from_original(_shapes(_original22()))
    vae_args = json.loads((WAN22_FIXTURE_DIR / "manifest.json").read_text())["vae_args"]
    assert (config["base_dim"], config["decoder_base_dim"]) == (vae_args["dim"], vae_args["dec_dim"]) == (3, 4)
    for key in ("z_dim", "dim_mult", "num_res_blocks", "temperal_downsample", "patch_size", "scale_factor_spatial"):
        assert config[key] == vae_args[key], key
    assert config["in_channels"] == config["out_channels"] == vae_args["in_out_channels"] == 12
    assert config["is_residual"] and config["scale_factor_temporal"] == 4
    assert config["latents_mean"] == vae_args["latents_mean"] and config["latents_std"] == vae_args["latents_std"]


def test_wan22_converted_keys_and_shapes_are_the_models():
    converted = convert_vae_state_dict(_original22())
    with torch.device("meta"):
        model = AutoencoderKLWan(**vae_config_from_original(_shapes(_original22())))
    assert _shapes(converted) == {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert "decoder.up_blocks.0.upsampler.time_conv.weight" in converted
    assert "encoder.down_blocks.2.downsampler.time_conv.weight" in converted


def test_wan22_unknown_or_missing_keys_are_named():
    original = _original22()
    original["decoder.upsamples.0.upsamples.9.residual.0.gamma"] = torch.ones(1)
    with pytest.raises(ConversionError, match=r"decoder\.upsamples\.0\.upsamples\.9\.residual\.0\.gamma"):
        convert_vae_state_dict(original)
    original = _original22()
    del original["encoder.downsamples.1.downsamples.0.residual.3.gamma"]
    with pytest.raises(
        ConversionError, match=r"missing keys \(1\):\n    encoder\.down_blocks\.1\.resnets\.0\.norm2\.gamma"
    ):
        AutoencoderKLWan.from_single_file(original)
