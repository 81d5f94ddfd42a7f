"""`from_single_file`: every format a Wan user downloads, written here in its real layout from the parity weights.

Each case is compared with the converter's result (`parity_transformer`; for the VAE, the state dict
loaded directly, as the parity tests load it): exact for the lossless
formats, within the quantization error (stated per test) for fp8 and GGUF.
"""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from wan_diffusers import AutoencoderKLWan, WanTransformer3DModel, WanVACETransformer3DModel
from wan_diffusers.conversion.rules import ConversionError
from wan_diffusers.loaders.single_file import original_config_from_shapes

from factories.parity import original_component_state_dict, original_dit_state_dict
from factories.transformer import parity_transformer
from factories.vace import parity_vace_transformer

COMFY = "model.diffusion_model."


def _assert_same_weights(model, reference):
    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key].float(), theirs[key].float(), rtol=0, atol=0, msg=key)


def _t2v_inputs(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    config = model.config
    return dict(
        hidden_states=torch.randn(1, config.in_channels, 3, 4, 6, generator=generator),
        timestep=torch.tensor([500.0]),
        encoder_hidden_states=torch.randn(1, 7, config.text_dim, generator=generator),
    )


def _output(model, inputs):
    with torch.no_grad():
        return model(**inputs, return_dict=False)[0].float()


def _relative_error(output, reference):
    return ((output - reference).norm() / reference.norm()).item()


def test_original_safetensors_config_from_shapes(tmp_path):
    # the tiny T2V fixture is 128 wide with one head, like the releases' 128 channels per head
    path = tmp_path / "wan2.1_t2v.safetensors"
    save_file(original_dit_state_dict("t2v"), path)
    model = WanTransformer3DModel.from_single_file(path)
    reference = parity_transformer("t2v")
    _assert_same_weights(model, reference)
    assert {k: model.config[k] for k in reference.config} == dict(reference.config)


def test_comfyui_prefix_with_config_folder(tmp_path):
    reference = parity_transformer("i2v")
    reference.save_pretrained(tmp_path / "repo" / "transformer")  # a pipeline folder: the subfolder is found
    path = tmp_path / "wan2.1_i2v_comfy.safetensors"
    save_file({COMFY + key: value for key, value in original_dit_state_dict("i2v").items()}, path)
    model = WanTransformer3DModel.from_single_file(path, config=tmp_path / "repo", torch_dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert model.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32  # _keep_in_fp32_modules
    torch.testing.assert_close(
        model.blocks[0].attn1.to_q.weight, reference.blocks[0].attn1.to_q.weight.bfloat16(), rtol=0, atol=0
    )


def test_vace_and_the_wrong_class(tmp_path):
    reference = parity_vace_transformer()
    reference.save_pretrained(tmp_path / "vace")
    path = tmp_path / "vace.safetensors"
    save_file(original_dit_state_dict("vace"), path)
    _assert_same_weights(WanVACETransformer3DModel.from_single_file(path, config=tmp_path / "vace"), reference)
    with pytest.raises(ConversionError, match=r"(?s)vace\.safetensors.*unexpected keys.*vace_blocks"):
        WanTransformer3DModel.from_single_file(path, config=tmp_path / "vace")


def test_vae_pth_weights_only(tmp_path):
    state_dict = original_component_state_dict("Wan2.1_VAE.pth")
    path = tmp_path / "Wan2.1_VAE.pth"
    torch.save(state_dict, path)
    _assert_same_weights(AutoencoderKLWan.from_single_file(path), AutoencoderKLWan.from_single_file(state_dict))
    # a pickle with more than tensors is refused by weights_only=True, naming the file
    torch.save({"weights": state_dict, "opener": print}, tmp_path / "evil.pth")
    with pytest.raises(ConversionError, match="evil.pth"):
        AutoencoderKLWan.from_single_file(tmp_path / "evil.pth")


def test_partial_file_and_missing_file(tmp_path):
    state_dict = original_dit_state_dict("t2v")
    del state_dict["blocks.1.ffn.2.bias"]
    state_dict["blocks.0.extra.weight"] = torch.zeros(1)
    path = tmp_path / "partial.safetensors"
    save_file(state_dict, path)
    with pytest.raises(ConversionError, match=r"(?s)partial\.safetensors.*blocks\.0\.extra\.weight"):
        WanTransformer3DModel.from_single_file(path)
    del state_dict["blocks.0.extra.weight"]
    save_file(state_dict, path)
    with pytest.raises(ConversionError, match=r"(?s)partial\.safetensors.*missing keys.*blocks\.1\.ffn\.net\.2\.bias"):
        WanTransformer3DModel.from_single_file(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        WanTransformer3DModel.from_single_file(tmp_path / "nothing.safetensors")


def test_released_configs_from_shapes():
    """The released DiTs' configs follow from their shapes (built on the meta device, no weights)."""
    from factories.original_release import original_dit_shapes

    # Wan 2.1 1.3B and 14B (the Wan 2.2 A14B experts have the 14B's shapes), Wan 2.2 TI2V-5B (48 latent channels)
    for dim, ffn_dim, num_layers, heads, channels in (
        (1536, 8960, 30, 12, 16),
        (5120, 13824, 40, 40, 16),
        (3072, 14336, 30, 24, 48),
    ):
        shapes = original_dit_shapes(
            dim=dim, ffn_dim=ffn_dim, num_layers=num_layers, in_dim=channels, out_dim=channels
        )
        config = original_config_from_shapes(shapes)
        found = (config["num_heads"], config["num_layers"], config["ffn_dim"], config["in_dim"], config["out_dim"])
        assert found == (heads, num_layers, ffn_dim, channels, channels)


def _fp8_scaled(state_dict):
    """An fp8_scaled file as ComfyUI writes it: each 2-D block weight as `w / s` in float8_e4m3fn, `s` per layer."""
    out = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for key, value in state_dict.items():
        if key.startswith("blocks.") and key.endswith(".weight") and value.ndim == 2:
            scale = value.abs().max().float() / 448.0
            out[key] = (value / scale).to(torch.float8_e4m3fn)
            out[key.removesuffix("weight") + "scale_weight"] = scale.reshape(1)
            out[key.removesuffix("weight") + "scale_input"] = torch.ones(1)
        else:
            out[key] = value
    return out


def test_fp8_scaled_dequantized_and_kept(tmp_path):
    original = original_dit_state_dict("t2v")
    fp8 = _fp8_scaled(original)
    path = tmp_path / "wan_fp8_scaled.safetensors"
    save_file({COMFY + key: value for key, value in fp8.items()}, path)
    reference = parity_transformer("t2v")
    inputs = _t2v_inputs(reference)
    expected = _output(reference, inputs)

    dequantized = WanTransformer3DModel.from_single_file(path)
    torch.testing.assert_close(
        dequantized.blocks[0].attn1.to_q.weight,
        fp8["blocks.0.self_attn.q.weight"].float() * fp8["blocks.0.self_attn.q.scale_weight"],
        rtol=0,
        atol=0,
    )
    kept = WanTransformer3DModel.from_single_file(path, keep_fp8=True)
    assert kept.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    # The hook computes with exactly the dequantized weights (float32 here): same output to float32 rounding.
    torch.testing.assert_close(_output(kept, inputs), _output(dequantized, inputs), rtol=1e-6, atol=1e-6)
    # fp8's 3 mantissa bits with a scale per layer: measured 8.4e-3 relative (L2) on the tiny model; bound 2e-2.
    assert _relative_error(_output(kept, inputs), expected) < 2e-2


def test_fp8_unscaled_kept_with_layerwise_casting(tmp_path):
    original = original_dit_state_dict("t2v")
    path = tmp_path / "wan_fp8_e4m3fn.safetensors"
    save_file(
        {key: value.to(torch.float8_e4m3fn) if value.ndim == 2 else value for key, value in original.items()}, path
    )
    kept = WanTransformer3DModel.from_single_file(path, keep_fp8=True)
    assert kept.blocks[1].ffn.net[2].weight.dtype == torch.float8_e4m3fn
    reference = parity_transformer("t2v")
    inputs = _t2v_inputs(reference)
    # unscaled fp8 puts many of Wan's small weights in fp8's subnormal range: measured 3.7e-2; bound 8e-2.
    assert _relative_error(_output(kept, inputs), _output(reference, inputs)) < 8e-2


def _write_gguf(path, state_dict, quant_type):
    """A GGUF file as city96's converter writes one: original keys, 2-D weights quantized when their rows fit the
    quantization blocks, 5-D tensors flattened with their shape in `comfy.gguf.orig_shape.<name>`."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch="wan")
    block_size, _ = gguf.GGML_QUANT_SIZES[quant_type]
    for key, value in state_dict.items():
        data = value.float().numpy()
        if data.ndim > 4:
            writer.add_array(f"comfy.gguf.orig_shape.{key}", list(data.shape))
            data = data.reshape(data.shape[0], -1)
        if data.ndim == 2 and data.shape[1] % block_size == 0 and key.startswith("blocks."):
            writer.add_tensor(key, gguf.quants.quantize(data, quant_type), raw_dtype=quant_type)
        else:
            writer.add_tensor(key, data.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_stays_quantized(tmp_path):
    import gguf
    from diffusers import GGUFQuantizationConfig
    from diffusers.quantizers.gguf.utils import GGUFParameter

    path = tmp_path / "wan2.1-t2v-Q8_0.gguf"
    _write_gguf(path, original_dit_state_dict("t2v"), gguf.GGMLQuantizationType.Q8_0)
    reference = parity_transformer("t2v")
    inputs = _t2v_inputs(reference)
    quantized = WanTransformer3DModel.from_single_file(
        path, quantization_config=GGUFQuantizationConfig(compute_dtype=torch.float32)
    )
    assert isinstance(quantized.blocks[0].attn1.to_q.weight, GGUFParameter)
    dequantized = WanTransformer3DModel.from_single_file(path)
    assert dequantized.patch_embedding.weight.shape == reference.patch_embedding.weight.shape
    torch.testing.assert_close(_output(quantized, inputs), _output(dequantized, inputs), rtol=1e-5, atol=1e-5)
    # Q8_0: 8 bits per weight with a scale per 32: measured 2.0e-3 relative (L2); bound 1e-2 (Q4_0: 3.0e-2).
    assert _relative_error(_output(quantized, inputs), _output(reference, inputs)) < 1e-2


@pytest.mark.parametrize("model", ["t2v-a14b", "i2v-a14b", "ti2v-5b"])
def test_wan22_dits(tmp_path, model):
    """The Wan 2.2 experts and TI2V-5B have Wan 2.1's keys: ComfyUI's single files of them load the same way."""
    from factories import parity22

    for name, folder in parity22.dit_folders(model).items():
        reference = parity22.parity_transformer(folder)
        reference.save_pretrained(tmp_path / name)
        path = tmp_path / f"wan2.2_{model}_{name}.safetensors"
        save_file({COMFY + k: v for k, v in parity22.original_dit_state_dict(folder).items()}, path)
        _assert_same_weights(WanTransformer3DModel.from_single_file(path, config=tmp_path / name), reference)


def test_wan22_vae_config_from_shapes(tmp_path):
    from wan_diffusers.conversion.vae import convert_vae_state_dict

    from factories import parity22

    state_dict = parity22.original_component_state_dict("Wan2.2_VAE.pth")
    torch.save(state_dict, tmp_path / "Wan2.2_VAE.pth")
    vae = AutoencoderKLWan.from_single_file(tmp_path / "Wan2.2_VAE.pth")
    assert vae.config.z_dim == 48 and vae.config.is_residual
    expected = convert_vae_state_dict(state_dict)
    assert vae.state_dict().keys() == expected.keys()
    for key, value in vae.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)
