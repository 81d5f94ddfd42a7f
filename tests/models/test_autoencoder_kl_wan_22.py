"""AutoencoderKLWan with the Wan 2.2 configuration (`is_residual`, `patch_size` 2, z_dim 48): parity with the original
`wan/modules/vae2_2.py`, equality with diffusers' built-in class, the patchify order, streaming, tiling, slicing,
saving and loading the official Hub config.

The parity model is `tests/fixtures/wan22_parity/tiny-ti2v-5b/Wan2.2_VAE.pth` (the
fixture's README says how the references were computed); the other models are tiny and random (`factories/vae.py`). What the
Wan 2.1 VAE tests establish for the shared machinery (the cache, the convolution algorithm rule, the tile weights,
offload hooks) is not repeated here.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan as DiffusersAutoencoderKLWan

from wan_diffusers import AutoencoderKLWan
from wan_diffusers.models.autoencoder_kl_wan import (
    WAN22_LATENTS_MEAN,
    WAN22_LATENTS_STD,
    WanResidualDownBlock,
    WanResidualUpBlock,
    patchify,
    unpatchify,
)

from factories.vae import (
    WAN22_PARITY_VAE_CONFIG,
    WAN22_TINY_VAE_CONFIG,
    WAN22_WIDE_VAE_CONFIG,
    diffusers_twin,
    largest_intermediates,
    random_latents,
    random_video,
    tiny_vae,
    wan22_parity_vae,
    wan22_vae_references,
)
from testing_utils import max_abs, max_rel


@pytest.fixture(autouse=True)
def _inference():
    with torch.no_grad():
        yield


def tiny_vae22(**overrides) -> AutoencoderKLWan:
    return tiny_vae(**{**WAN22_TINY_VAE_CONFIG, **overrides})


def latents48(batch: int = 1, frames: int = 2, height: int = 2, width: int = 2, seed: int = 0) -> torch.Tensor:
    return random_latents(batch, frames, height, width, seed=seed, channels=48)


# ---------------------------------------------------------------------------------------------------------------------
# 1. Parity with the original Wan 2.2 code (float32 on CPU)

ENCODE_CASES = ("video_5f_32x48", "image_1f_48x16")
DECODE_CASES = ("latent_2f_2x3", "latent_1f_3x1")


@pytest.fixture(scope="module")
def parity():
    """The fixtures' VAE, its reference tensors, and the latent normalisation [1, 48, 1, 1, 1] (mean, std)."""
    vae = wan22_parity_vae()
    shape = (1, 48, 1, 1, 1)
    mean, std = torch.tensor(vae.config.latents_mean).view(shape), torch.tensor(vae.config.latents_std).view(shape)
    return vae, wan22_vae_references(), mean, std


@pytest.mark.parity
@pytest.mark.parametrize("case", ENCODE_CASES)
def test_encode_matches_the_original(parity, case):
    vae, references, mean, std = parity
    with torch.no_grad():
        posterior_mean = vae.encode(references[f"vae.encode.{case}.input"]).latent_dist.mean
    error = max_rel((posterior_mean - mean) / std, references[f"vae.encode.{case}.output"])
    # 1e-5: the fixtures' float32 bound. Measured 5e-8 - 3.6e-7 with 2 CPU threads, 3.6e-7 - 4.8e-7 with 1 (the
    # original's own float32-vs-float64 noise floor is 2.8e-7 - 6.2e-7)
    assert error <= 1e-5, f"encode {case}: max_rel {error:.3g} > 1e-5"


@pytest.mark.parity
@pytest.mark.parametrize("case", DECODE_CASES)
def test_decode_matches_the_original(parity, case):
    vae, references, mean, std = parity
    with torch.no_grad():
        video = vae.decode(references[f"vae.decode.{case}.input"] * std + mean).sample  # clamped to [-1, 1]
    error = max_abs(video, references[f"vae.decode.{case}.output"])
    # 2e-5: the fixtures' decode bound. Measured 1.1e-6 - 1.8e-6, all from rounding z * std + mean where the
    # original computes z / (1 / std) + mean: with that arithmetic the decoded videos are bit-identical (next test)
    assert error <= 2e-5, f"decode {case}: max_abs {error:.3g} > 2e-5"


@pytest.mark.parity
def test_parity_with_the_original_normalisation_arithmetic(parity):
    """With the original's reciprocal normalisation, decoding is bit-identical to the original (measured with 1 and 2
    threads); encoding differs by SiLU's scalar tail on the tiny widths (see the Wan 2.1 test of the same name):
    measured max_rel 0 - 3.3e-7 with 2 threads, 3.5e-7 - 5.4e-7 with 1. Bounds: 1e-6 and exact."""
    vae, references, mean, std = parity
    for case in ENCODE_CASES:
        posterior_mean = vae.encode(references[f"vae.encode.{case}.input"]).latent_dist.mean
        assert max_rel((posterior_mean - mean) * (1 / std), references[f"vae.encode.{case}.output"]) <= 1e-6, case
    for case in DECODE_CASES:
        video = vae.decode(references[f"vae.decode.{case}.input"] / (1 / std) + mean).sample
        assert torch.equal(video, references[f"vae.decode.{case}.output"]), case


# ---------------------------------------------------------------------------------------------------------------------
# 2. Equality with diffusers' built-in class on the same weights


@pytest.mark.oracle
def test_parity_model_matches_diffusers(parity):
    """The fixture's weights in diffusers' class (`is_residual=True, patch_size=2`): decoding is bit-identical; encoding
    differs by SiLU's tail on widths 3 - 12 (measured 3.9e-7 with 2 threads, 2.4e-7 with 1 on the 5-frame video, 0
    on the single frame). Bound 1e-6."""
    vae, references, _, _ = parity
    twin = diffusers_twin(vae)
    for case in ENCODE_CASES:
        video = references[f"vae.encode.{case}.input"]
        assert max_abs(vae.encode(video).latent_dist.mean, twin.encode(video).latent_dist.mean) <= 1e-6, case
    for case in DECODE_CASES:
        latents = references[f"vae.decode.{case}.input"]
        assert torch.equal(vae.decode(latents).sample, twin.decode(latents).sample), case


@pytest.mark.oracle
def test_streaming_is_bit_identical_to_diffusers_at_released_like_widths():
    """Widths 32 (no SiLU tail) and frames 256 pixels tall (128 after the patchify), where PyTorch convolves a 4-frame
    chunk through oneDNN but a single frame through im2col: the streamed residual stages, their shortcuts, and the
    frame-by-frame decoding give diffusers' chunked results bit for bit."""
    vae = tiny_vae(**WAN22_WIDE_VAE_CONFIG)
    twin = diffusers_twin(vae)
    video, latents = random_video(1, 5, 256, 32), latents48(1, 2, 16, 2)
    assert torch.equal(vae.encode(video).latent_dist.parameters, twin.encode(video).latent_dist.parameters)
    assert torch.equal(vae.decode(latents).sample, twin.decode(latents).sample)


# The official `Wan-AI/Wan2.2-TI2V-5B-Diffusers` `vae/config.json` (diffusers 0.35.0.dev0 wrote it; `clip_output`
# is a retired argument that diffusers ignores).
OFFICIAL_TI2V_5B_VAE_CONFIG = {
    "_class_name": "AutoencoderKLWan",
    "_diffusers_version": "0.35.0.dev0",
    "attn_scales": [],
    "base_dim": 160,
    "clip_output": False,
    "decoder_base_dim": 256,
    "dim_mult": [1, 2, 4, 4],
    "dropout": 0.0,
    "in_channels": 12,
    "is_residual": True,
    "latents_mean": list(WAN22_LATENTS_MEAN),
    "latents_std": list(WAN22_LATENTS_STD),
    "num_res_blocks": 2,
    "out_channels": 12,
    "patch_size": 2,
    "scale_factor_spatial": 16,
    "scale_factor_temporal": 4,
    "temperal_downsample": [False, True, True],
    "z_dim": 48,
}


@pytest.mark.oracle
def test_official_hub_config_builds_the_hub_layout(tmp_path):
    """The official config loads (unknown `clip_output` ignored) into the Hub's tensors, names and shapes, as
    diffusers' class builds them: 196 tensors, 704.7 M parameters (the decoder is the larger part)."""
    (tmp_path / "config.json").write_text(json.dumps(OFFICIAL_TI2V_5B_VAE_CONFIG))
    with torch.device("meta"):
        ours = AutoencoderKLWan.from_config(AutoencoderKLWan.load_config(tmp_path))
        theirs = DiffusersAutoencoderKLWan.from_config(DiffusersAutoencoderKLWan.load_config(tmp_path))
    ours_shapes = {key: tuple(value.shape) for key, value in ours.state_dict().items()}
    assert ours_shapes == {key: tuple(value.shape) for key, value in theirs.state_dict().items()}
    assert len(ours_shapes) == 196
    assert ours_shapes["encoder.conv_in.weight"] == (160, 12, 3, 3, 3)
    assert ours_shapes["decoder.conv_out.weight"] == (12, 256, 3, 3, 3)
    assert round(sum(parameter.numel() for parameter in ours.parameters()) / 1e6, 1) == 704.7
    assert ours.spatial_compression_ratio == 16 and ours.temporal_compression_ratio == 4 and ours.z_dim == 48


# ---------------------------------------------------------------------------------------------------------------------
# 3. The patchify and the residual stages


def test_patchify_uses_the_originals_channel_order():
    """`rearrange(x, "b c f (h q) (w r) -> b (c r q) f h w")`: channel 4c + 2r + q, r the column offset and q the row
    offset; `pixel_unshuffle` puts the row offset first, so its channels 1 and 2 are swapped."""
    video = torch.randn(1, 3, 2, 4, 6)
    patches = patchify(video, 2)
    assert patches.shape == (1, 12, 2, 2, 3)
    for c, column, row in ((0, 0, 0), (0, 1, 0), (1, 0, 1), (2, 1, 1)):
        assert torch.equal(patches[:, 4 * c + 2 * column + row], video[:, c, :, row::2, column::2])
    unshuffled = F.pixel_unshuffle(video.transpose(1, 2), 2).transpose(1, 2)
    assert not torch.equal(patches, unshuffled)
    assert torch.equal(patches, unshuffled[:, [0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11]])
    assert torch.equal(unpatchify(patches, 2), video)


def test_residual_stages_have_the_originals_structure():
    """Released layout: one residual down block per encoder stage (2 residual blocks, then the downsampler; none in the
    last), one residual up block per decoder stage (3 residual blocks and an upsampler keeping the width); widths
    3 / 6 / 12 / 12 in the encoder, 16 / 16 / 8 / 4 in the decoder (base 4)."""
    vae = tiny_vae(**WAN22_PARITY_VAE_CONFIG)
    down, up = vae.encoder.down_blocks, vae.decoder.up_blocks
    assert all(isinstance(block, WanResidualDownBlock) for block in down) and len(down) == 4
    assert all(isinstance(block, WanResidualUpBlock) for block in up) and len(up) == 4
    assert [block.downsampler.mode if block.downsampler else None for block in down] == [
        "downsample2d",
        "downsample3d",
        "downsample3d",
        None,
    ]
    assert [block.upsampler.mode if block.upsampler else None for block in up] == [
        "upsample3d",
        "upsample3d",
        "upsample2d",
        None,
    ]
    assert [block.resnets[-1].conv2.out_channels for block in down] == [3, 6, 12, 12]
    assert [block.resnets[-1].conv2.out_channels for block in up] == [16, 16, 8, 4]
    assert [(block.avg_shortcut.factor_t, block.avg_shortcut.group_size) for block in down] == [
        (1, 4),
        (2, 4),
        (2, 4),
        (1, 1),
    ]
    assert [block.avg_shortcut.repeats for block in up[:3]] == [8, 8, 2] and up[3].avg_shortcut is None


def test_encoder_and_decoder_stream_frame_by_frame():
    """As in Wan 2.1: the encoder's full-resolution stages see one frame per call, a temporal downsampling (and its
    shortcut) lets every second frame through; the decoder's stages after the first temporal upsampling run once per
    output frame. The convolutions know the frame counts of the chunked computation (`chunk_factor`)."""
    vae = tiny_vae(**WAN22_PARITY_VAE_CONFIG)
    calls = {name: [] for name in ("encoder.down_blocks.1", "encoder.down_blocks.2", "decoder.up_blocks.2")}
    for name, frames in calls.items():
        vae.get_submodule(name).register_forward_pre_hook(lambda _, args, f=frames: f.append(args[0].shape[2]))
    assert vae.encode(random_video(1, 9, 32, 32)).latent_dist.mean.shape == (1, 48, 3, 2, 2)
    assert vae.decode(latents48(1, 3)).sample.shape == (1, 3, 9, 32, 32)
    assert calls["encoder.down_blocks.1"] == [1] * 9
    assert calls["encoder.down_blocks.2"] == [1] * (1 + 2 + 2)
    assert calls["decoder.up_blocks.2"] == [1] * 9
    assert vae.encoder.down_blocks[1].downsampler.time_conv.chunk_factor == 2
    assert vae.encoder.down_blocks[2].downsampler.time_conv.chunk_factor == 1
    assert [block.resnets[0].conv1.chunk_factor for block in vae.decoder.up_blocks] == [1, 2, 4, 4]


def test_outputs_are_causal_and_calls_independent():
    """A prefix of the input gives a prefix of the output (1e-6: the 1x1x1 convolutions around the latent run on all
    latent frames at once; measured 6e-8 - 4.8e-7), and a second call gives the same result as the first."""
    vae = tiny_vae22()
    video, latents = random_video(1, 9, 32, 16), latents48(1, 3, 2, 1)
    moments, decoded = vae.encode(video).latent_dist.parameters, vae.decode(latents).sample
    assert max_abs(vae.encode(video[:, :, :5]).latent_dist.parameters, moments[:, :, :2]) <= 1e-6
    assert max_abs(vae.decode(latents[:, :, :2]).sample, decoded[:, :, :5]) <= 1e-6
    assert torch.equal(vae.encode(video).latent_dist.parameters, moments)
    assert torch.equal(vae.decode(latents).sample, decoded)


def test_no_intermediate_grows_with_the_number_of_frames():
    """Streaming: besides the output and the input, the largest tensor created while decoding 2 or 4 latent frames (5
    or 13 frames) is the same, and likewise for encoding."""
    largest = largest_intermediates(tiny_vae22(), 32, 32)
    assert largest["decode", 2] == largest["decode", 4], largest
    assert largest["encode", 2] == largest["encode", 4], largest


# ---------------------------------------------------------------------------------------------------------------------
# 4. Tiling and slicing


def test_tiling_is_exact_when_the_frame_fits_one_tile():
    vae = tiny_vae22()
    video, latents = random_video(1, 5, 64, 48), latents48(1, 2, 4, 3)
    untiled = vae.encode(video).latent_dist.parameters, vae.decode(latents).sample
    vae.enable_tiling(64, 64, 48, 48)
    assert torch.equal(vae.encode(video).latent_dist.parameters, untiled[0])
    assert torch.equal(vae.decode(latents).sample, untiled[1])


@pytest.mark.oracle
def test_tiled_output_is_as_close_to_untiled_as_diffusers_tiling():
    """2-D tiling of a 128 x 96 frame in 64-pixel tiles every 48 pixels (4 latent rows / columns every 3).

    A tiny random VAE sees the whole frame (global attention in the middle blocks), so tiling changes its output a
    lot; what tiling promises is seamless blending. Our tile sizes are pixels of the video. diffusers' encoder
    measures them on the patchified frame (half the size), so its tiles cover twice the pixels asked for: it is
    given 32 / 24 here to tile as we do. Its decoder blends the patchified tiles over 8 positions (2 x 2 pixels each)
    and un-patchifies; ours blends the video over the 16 pixels of overlap. Measured, ours vs untiled: encode mean
    abs error 0.499 x the mean magnitude, decode mean abs 0.133 and max 1.44; diffusers: the same to 3 digits.
    Bound: within 2 % of diffusers' errors.
    """
    vae = tiny_vae22()
    twin = diffusers_twin(vae)
    video, latents = random_video(1, 5, 128, 96), latents48(1, 2, 8, 6)
    errors = {}
    for name, model, encoder_tiles in (("ours", vae, (64, 64, 48, 48)), ("diffusers", twin, (32, 32, 24, 24))):
        untiled_mean, untiled_video = model.encode(video).latent_dist.mean, model.decode(latents).sample
        model.enable_tiling(*encoder_tiles)
        tiled_mean = model.encode(video).latent_dist.mean
        model.enable_tiling(64, 64, 48, 48)
        tiled_video = model.decode(latents).sample
        errors[name] = (
            (tiled_mean - untiled_mean).abs().mean().item() / untiled_mean.abs().mean().item(),
            (tiled_video - untiled_video).abs().mean().item(),
            max_abs(tiled_video, untiled_video),
        )
    assert all(ours <= 1.02 * theirs for ours, theirs in zip(errors["ours"], errors["diffusers"])), errors


def test_slicing_matches_the_batched_call():
    vae = tiny_vae22()
    video, latents = random_video(2, 5, 32, 16), latents48(2, 2, 2, 1)
    batched = vae.encode(video).latent_dist.parameters, vae.decode(latents).sample
    vae.enable_slicing()
    sliced = vae.encode(video).latent_dist.parameters, vae.decode(latents).sample
    # the batch size changes the convolutions' summation order: measured 1.2e-7 (encode), 8.9e-7 (decode). Bound 1e-5
    assert max_abs(sliced[0], batched[0]) <= 1e-5
    assert max_abs(sliced[1], batched[1]) <= 1e-5


# ---------------------------------------------------------------------------------------------------------------------
# 5. Saving and loading, bad inputs


def test_save_pretrained_round_trip(tmp_path):
    vae = tiny_vae22()
    vae.save_pretrained(tmp_path)
    loaded = AutoencoderKLWan.from_pretrained(tmp_path).eval()
    assert loaded.config.is_residual and loaded.config.patch_size == 2
    latents = latents48()
    assert torch.equal(loaded.decode(latents).sample, vae.decode(latents).sample)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1, 12, 5, 32, 32), r"`x` must have 3 channels"),
        ((1, 3, 5, 24, 32), r"height and width of `x` must be positive multiples of 16, got 24 and 32"),
    ],
)
def test_encode_rejects_bad_videos(shape, message):
    with pytest.raises(ValueError, match=message):
        tiny_vae22().encode(torch.zeros(shape))


def test_config_errors():
    with pytest.raises(ValueError, match=r"must match the architecture \(4 and 16: .*\), got 4 and 8"):
        tiny_vae22(scale_factor_spatial=8)
    with pytest.raises(ValueError, match=r"multiples of `patch_size`\*\*2 = 4, got 3 and 12"):
        tiny_vae22(in_channels=3)
