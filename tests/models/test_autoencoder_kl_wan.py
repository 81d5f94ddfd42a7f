"""AutoencoderKLWan: parity with the original Wan2.1 VAE, equality with diffusers' built-in class, causal streaming
with a cache that resets, frame-by-frame decoding equal to chunk-by-chunk, bounded memory, tiling, slicing, saving
and loading, offload hooks and input checks.

Models are tiny (base width 3) and built in `factories/vae.py`; the parity model is the fixtures' `Wan2.1_VAE.pth`.
"""

import json
from itertools import product
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from accelerate import cpu_offload, cpu_offload_with_hook
from accelerate.utils import send_to_device
from diffusers import AutoencoderKLWan as DiffusersAutoencoderKLWan

from wan_diffusers import AutoencoderKLWan
from wan_diffusers.models.autoencoder_kl_wan import (
    WAN21_LATENTS_MEAN,
    WAN21_LATENTS_STD,
    CausalConvCache,
    WanCausalConv3d,
    _plan_tiles,
    _pytorch_uses_onednn,
    _set_chunk_factor,
)

from factories.parity import component_references
from factories.vae import (
    PARITY_VAE_CONFIG,
    WIDE_VAE_CONFIG,
    diffusers_twin,
    largest_intermediates,
    parity_vae,
    random_latents,
    random_video,
    tiny_vae,
)
from testing_utils import max_abs, max_rel


@pytest.fixture(autouse=True)
def _inference():
    with torch.no_grad():
        yield


# ---------------------------------------------------------------------------------------------------------------------
# 1. Parity with the original Wan2.1 code (tests/fixtures/wan21_parity/tiny-t2v, computed in float32 on CPU)

ENCODE_CASES = ("video_13f_16x24", "video_5f_40x24", "image_1f_16x32")
DECODE_CASES = ("latent_4f_2x3", "latent_3f_5x2", "latent_1f_2x4")


@pytest.fixture
def parity():
    """The fixtures' VAE, its reference tensors, and the latent normalisation [1, 16, 1, 1, 1] (mean, std)."""
    vae = parity_vae()
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean, std = torch.tensor(vae.config.latents_mean).view(shape), torch.tensor(vae.config.latents_std).view(shape)
    return vae, component_references("t2v"), mean, std


@pytest.mark.parity
@pytest.mark.parametrize("case", ENCODE_CASES)
def test_encode_matches_the_original(parity, case):
    vae, references, mean, std = parity
    posterior_mean = vae.encode(references[f"vae.encode.{case}.input"]).latent_dist.mean
    error = max_rel((posterior_mean - mean) / std, references[f"vae.encode.{case}.output"])
    # 1e-5: the float32 parity bound of the fixtures' README. Measured 1.0e-7 - 2.9e-7 with 2 CPU threads, 2.0e-7 -
    # 5.1e-7 with 1 (the thread count changes the summation order inside the convolutions; for the SiLU tail see
    # `test_parity_with_the_original_normalisation_arithmetic`)
    assert error <= 1e-5, f"encode {case}: max_rel {error:.3g} > 1e-5"


@pytest.mark.parity
@pytest.mark.parametrize("case", DECODE_CASES)
def test_decode_matches_the_original(parity, case):
    vae, references, mean, std = parity
    video = vae.decode(references[f"vae.decode.{case}.input"] * std + mean).sample  # decode clamps to [-1, 1]
    error = max_abs(video, references[f"vae.decode.{case}.output"])
    # 2e-5: the bound this project set for decode (the README recommends 5e-5; the original's own float32-vs-float64
    # noise floor is 4.8e-6 - 1.2e-5). Measured 3.8e-6 - 8.6e-6 with 2 CPU threads, mostly from rounding
    # z * std + mean unlike the original (see the next test), and 3.2e-6 - 1.3e-5 with 1 thread
    assert error <= 2e-5, f"decode {case}: max_abs {error:.3g} > 2e-5"


@pytest.mark.parity
def test_parity_with_the_original_normalisation_arithmetic(parity):
    """The original normalises with a reciprocal: (mu - mean) * (1 / std) and z / (1 / std) + mean (diffusers'
    pipelines do the same). With that arithmetic diffusers' class reproduces the original bit for bit with 2 CPU
    threads. Ours: encode max_rel 0 - 2.9e-7 with 2 threads, 2.0e-7 - 5.1e-7 with 1; decode max_abs 0 - 3.9e-6 with
    2 threads, 1.3e-6 - 1.0e-5 with 1 (diffusers with 1 thread: 1.3e-6 - 6.3e-6).

    The difference is SiLU's tail. We apply SiLU to one frame at a time where the original applies it to a chunk of
    2 or 4 frames; PyTorch computes it with a vectorised exp, except for the elements past the last multiple of 32
    (the tail), which get a scalar exp that rounds differently, and a frame's tail falls on other elements than a
    chunk's. This VAE's norms over 3 to 12 channels amplify the difference. With channel counts that are multiples
    of 32, as in the released VAE, there is no tail, and no difference:
    `test_streaming_is_bit_identical_to_diffusers_at_released_like_widths`.
    Bounds: 1e-6 (encode) and 2e-5 (decode, the decode parity bound)."""
    vae, references, mean, std = parity
    for case in ENCODE_CASES:
        posterior_mean = vae.encode(references[f"vae.encode.{case}.input"]).latent_dist.mean
        assert max_rel((posterior_mean - mean) * (1 / std), references[f"vae.encode.{case}.output"]) <= 1e-6, case
    for case in DECODE_CASES:
        video = vae.decode(references[f"vae.decode.{case}.input"] / (1 / std) + mean).sample
        assert max_abs(video, references[f"vae.decode.{case}.output"]) <= 2e-5, case


# ---------------------------------------------------------------------------------------------------------------------
# 2. Equality with diffusers' built-in AutoencoderKLWan on the same weights


@pytest.mark.oracle
@pytest.mark.parametrize(
    "batch, frames, height, width",
    [(1, 1, 16, 16), (1, 9, 16, 24), (1, 5, 32, 16), (2, 5, 16, 16)],
    ids=["image", "9f-non-square", "5f-tall", "batch2"],
)
def test_matches_diffusers(batch, frames, height, width):
    vae = tiny_vae()
    twin = diffusers_twin(vae)
    video = random_video(batch, frames, height, width)
    ours, theirs = vae.encode(video).latent_dist, twin.encode(video).latent_dist
    # Same operations in the same order: measured bit-identical, except decoding 9 frames (1.5e-7: SiLU's tail, see
    # `test_parity_with_the_original_normalisation_arithmetic`). 1e-6: rounding level.
    assert max_abs(ours.mean, theirs.mean) <= 1e-6
    assert max_abs(ours.logvar, theirs.logvar) <= 1e-6
    sample = ours.sample(generator=torch.Generator().manual_seed(1))
    assert max_abs(sample, theirs.sample(generator=torch.Generator().manual_seed(1))) <= 1e-6
    assert max_abs(vae.decode(sample).sample, twin.decode(sample).sample) <= 1e-6
    ours_forward = vae(video, sample_posterior=True, generator=torch.Generator().manual_seed(2)).sample
    theirs_forward = twin(video, sample_posterior=True, generator=torch.Generator().manual_seed(2)).sample
    assert max_abs(ours_forward, theirs_forward) <= 1e-6


@pytest.mark.oracle
def test_gradients_match_diffusers():
    """Streaming writes into a preallocated output, adds and clamps in place: autograd still sees the same graph."""
    vae = tiny_vae()
    twin = diffusers_twin(vae)
    gradients = {}
    with torch.enable_grad():
        for name, model in (("ours", vae), ("diffusers", twin)):
            latents = random_latents(1, 2, 2, 2).requires_grad_(True)
            video = model.decode(latents).sample
            (video * torch.linspace(-1, 1, video.numel()).view(video.shape)).sum().backward()
            gradients[name] = latents.grad, model.decoder.conv_in.weight.grad
    # same operations, so the same gradients up to summation order and SiLU's tail (see above):
    # measured 7e-9 (latents) and 2.2e-7 relative (weights)
    assert max_abs(gradients["ours"][0], gradients["diffusers"][0]) <= 1e-6
    assert max_rel(gradients["ours"][1], gradients["diffusers"][1]) <= 1e-6


@pytest.mark.oracle
def test_parity_model_matches_diffusers():
    """The released layout (2 residual blocks per stage, widths x1 x2 x4 x4) on the fixture's weights."""
    vae = parity_vae()
    twin = diffusers_twin(vae)
    video = random_video(1, 5, 24, 16)
    # measured 1.8e-7 (3.0e-7 with 2 threads): SiLU's tail, see the parity tests above
    assert max_abs(vae.encode(video).latent_dist.mean, twin.encode(video).latent_dist.mean) <= 1e-6
    latents = random_latents(1, 2, 3, 2)
    # measured 1.5e-6 (1.9e-6 with 2 threads): SiLU's tail, amplified by norms over 3 to 12 channels. diffusers' own
    # output moves by up to 7.3e-6 between a batch of 1 and 2 (PyTorch then picks other convolution algorithms).
    # Bound 1e-5.
    assert max_abs(vae.decode(latents).sample, twin.decode(latents).sample) <= 1e-5


@pytest.mark.oracle
@pytest.mark.parametrize("batch", [1, 2])
def test_streaming_is_bit_identical_to_diffusers_at_released_like_widths(batch):
    """The released layout at width 32 (channel counts multiples of 32, as the released 96 / 192 / 384): no SiLU
    tail, and frames 128 pixels tall, where PyTorch convolves a 4-frame chunk at full resolution through oneDNN but
    a single frame through im2col; the streamed layers follow the chunk (`_StreamedConvolution`)."""
    vae = tiny_vae(**WIDE_VAE_CONFIG)
    twin = diffusers_twin(vae)
    video, latents = random_video(batch, 9, 128, 16), random_latents(batch, 3, 16, 2)
    assert torch.equal(vae.encode(video).latent_dist.parameters, twin.encode(video).latent_dist.parameters)
    assert torch.equal(vae.decode(latents).sample, twin.decode(latents).sample)


@pytest.mark.oracle
def test_real_size_model_has_the_hub_layout():
    """The released config builds the Hub's 194 tensors (126.9 M parameters) with diffusers' names and shapes."""
    with torch.device("meta"):
        ours, theirs = AutoencoderKLWan(), DiffusersAutoencoderKLWan()
    ours_shapes = {key: tuple(value.shape) for key, value in ours.state_dict().items()}
    assert ours_shapes == {key: tuple(value.shape) for key, value in theirs.state_dict().items()}
    assert len(ours_shapes) == 194
    assert round(sum(parameter.numel() for parameter in ours.parameters()) / 1e6, 1) == 126.9


@pytest.mark.oracle
def test_default_config_matches_diffusers():
    with torch.device("meta"):
        ours, theirs = AutoencoderKLWan(), DiffusersAutoencoderKLWan()
    ours_config = json.loads(ours.to_json_string())
    theirs_config = json.loads(theirs.to_json_string())
    for key in ("_class_name", "_diffusers_version"):
        ours_config.pop(key), theirs_config.pop(key)
    assert ours_config == theirs_config
    # attributes diffusers' pipelines read from the VAE object
    assert ours.z_dim == 16 and ours.spatial_compression_ratio == 8
    assert ours.temperal_downsample == [False, True, True] and ours.temperal_upsample == [True, True, False]


# ---------------------------------------------------------------------------------------------------------------------
# 3. Causal streaming, the cache, bounded memory


def test_two_calls_give_identical_results():
    """A fresh cache per call: nothing of one video leaks into the next."""
    vae = tiny_vae()
    video, other_video = random_video(1, 9, 16, 16, seed=0), random_video(1, 5, 16, 24, seed=1)
    latents, other_latents = random_latents(1, 3, 2, 2, seed=0), random_latents(1, 2, 3, 2, seed=1)
    first_encode, first_decode = vae.encode(video).latent_dist.parameters, vae.decode(latents).sample
    vae.encode(other_video), vae.decode(other_latents)
    assert torch.equal(vae.encode(video).latent_dist.parameters, first_encode)
    assert torch.equal(vae.decode(latents).sample, first_decode)


def test_outputs_are_causal_in_time():
    """Latent frame i depends only on frames up to 4i; decoded frames only on latent frames up to theirs, so a prefix
    of the input gives a prefix of the output. (Same chunks and operations, except that the 1x1x1 convolutions around
    the latent run on all latent frames at once, which changes float rounding: measured 6e-8 - 1.5e-7.)"""
    vae = tiny_vae()
    video = random_video(1, 9, 16, 16)
    moments = vae.encode(video).latent_dist.parameters  # [1, 32, 3, 2, 2]
    assert max_abs(vae.encode(video[:, :, :1]).latent_dist.parameters, moments[:, :, :1]) <= 1e-6
    assert max_abs(vae.encode(video[:, :, :5]).latent_dist.parameters, moments[:, :, :2]) <= 1e-6
    latents = random_latents(1, 3, 2, 2)
    decoded = vae.decode(latents).sample  # [1, 3, 9, 16, 16]
    assert max_abs(vae.decode(latents[:, :, :1]).sample, decoded[:, :, :1]) <= 1e-6
    assert max_abs(vae.decode(latents[:, :, :2]).sample, decoded[:, :, :5]) <= 1e-6


def test_cache_keeps_the_trailing_frames_of_each_convolution():
    conv = WanCausalConv3d(2, 2, 3, padding=1)  # 3 frames of kernel: needs the last 2 input frames
    cache = CausalConvCache()
    chunks = [torch.randn(1, 2, frames, 3, 3) for frames in (1, 1, 4)]
    assert cache.update(conv, chunks[0]) is None
    assert torch.equal(cache.update(conv, chunks[1]), chunks[0])  # only one frame seen so far
    kept = cache.update(conv, chunks[2])
    assert torch.equal(kept, torch.cat([chunks[0], chunks[1]], dim=2))
    assert torch.equal(cache.update(conv, chunks[0]), chunks[2][:, :, -2:])
    assert kept.untyped_storage().data_ptr() != chunks[0].untyped_storage().data_ptr()  # copies, not views


def test_chunked_convolution_equals_the_whole_sequence():
    conv = WanCausalConv3d(2, 3, 3, padding=1)
    video = torch.randn(1, 2, 9, 5, 5)
    whole = conv(video)  # two zero frames in front
    cache = CausalConvCache()
    chunked = torch.cat([conv(video[:, :, chunk], cache) for chunk in (slice(0, 1), slice(1, 5), slice(5, 9))], 2)
    assert max_abs(chunked, whole) <= 1e-6  # measured 0: identical padded windows


@pytest.mark.parametrize("tiling", [False, True], ids=["whole-frames", "tiled"])
def test_no_intermediate_grows_with_the_number_of_frames(tiling):
    """Streaming: besides the preallocated output (and the caller's input), the largest tensor created while decoding
    2 or 4 latent frames (5 or 13 frames) is the same, one chunk's activations; likewise for encoding 5 or 13 frames."""
    vae = tiny_vae()
    if tiling:
        vae.enable_tiling(24, 24, 16, 16)  # 2 x 2 tiles of a 32 x 32 frame
    largest = largest_intermediates(vae, 32, 32)
    assert largest["decode", 2] == largest["decode", 4], largest
    assert largest["encode", 2] == largest["encode", 4], largest
    # one decoded frame: the padded input of a full-resolution convolution, 3 channels x (2 cached + 1 new frames) x
    # 34 x 34 (a chunk would be 6 frames; the 13-frame output has 39,936 values)
    assert largest["decode", 4] <= 3 * 3 * 34 * 34, largest


def _frames_per_call(module: torch.nn.Module, names: tuple[str, ...]) -> dict[str, list[int]]:
    """Records, for each named submodule, the number of frames of its input at every call."""
    calls = {name: [] for name in names}
    for name, frames in calls.items():
        module.get_submodule(name).register_forward_pre_hook(
            lambda _, args, frames=frames: frames.append(args[0].shape[2])
        )
    return calls


def _chunk_factors(module: torch.nn.Module) -> set[int]:
    return {layer.chunk_factor for layer in module.modules() if hasattr(layer, "chunk_factor")}


def test_encoder_runs_one_frame_at_a_time_until_temporal_downsamplings_merge_pairs():
    """Released layout (stages of 2 residual blocks and a resampler; stages 1 and 2 halve the frame rate): each
    frame of a chunk goes through the full-resolution stages alone; a temporal downsampling lets every second frame
    through, merged with the one before. The convolutions know how many frames the chunked computation gives them
    instead (`chunk_factor`, set by `apply_chunked_convolution_algorithm`: 4, then 2 after the first temporal
    downsampling, then 1)."""
    vae = tiny_vae(**PARITY_VAE_CONFIG)
    encoder = vae.encoder
    frames_per_call = _frames_per_call(encoder, ("conv_in", "down_blocks.5", "down_blocks.6", "mid_block"))
    assert vae.encode(random_video(1, 9, 16, 16)).latent_dist.mean.shape[2] == 3  # chunks of 1, 4 and 4 frames
    assert frames_per_call["conv_in"] == frames_per_call["down_blocks.5"] == [1] * 9
    assert frames_per_call["down_blocks.6"] == [1] * (1 + 2 + 2)
    assert frames_per_call["mid_block"] == [1] * 3
    stages = [encoder.down_blocks[start : start + 3] for start in (0, 3, 6, 9)]
    assert [_chunk_factors(stage) for stage in stages] == [{4}, {4, 2}, {2, 1}, {1}]
    assert encoder.down_blocks[5].time_conv.chunk_factor == 2 and encoder.down_blocks[8].time_conv.chunk_factor == 1
    assert encoder.conv_in.chunk_factor == 4 and _chunk_factors(encoder.mid_block) == {1}


def test_decoder_runs_one_frame_at_a_time_after_the_first_temporal_upsampling():
    """Released layout: up block 0 takes each latent frame and its temporal upsampling makes 2 frames of it (1 of
    the first), which up block 1 takes one at a time; its upsampling makes 2 of each, and from there on every layer
    runs once per output frame, on that frame alone. `chunk_factor`: 1, 2, then 4."""
    vae = tiny_vae(**PARITY_VAE_CONFIG)
    decoder = vae.decoder
    names = ("up_blocks.0", "up_blocks.1", "up_blocks.2", "up_blocks.3", "conv_out")
    frames_per_call = _frames_per_call(decoder, names)
    assert vae.decode(random_latents(1, 3, 2, 2)).sample.shape[2] == 9
    assert frames_per_call["up_blocks.0"] == [1] * 3
    assert frames_per_call["up_blocks.1"] == [1] * (1 + 2 + 2)
    assert frames_per_call["up_blocks.2"] == frames_per_call["up_blocks.3"] == frames_per_call["conv_out"] == [1] * 9
    assert [_chunk_factors(block) for block in decoder.up_blocks] == [{1}, {2}, {4}, {4}]
    assert decoder.conv_out.chunk_factor == 4 and _chunk_factors(decoder.mid_block) == {1}


def _decode_chunk_by_chunk(vae: AutoencoderKLWan, latents: torch.Tensor) -> torch.Tensor:
    """Decoding as the original and diffusers' class do it, with `vae`'s layers: each latent frame's 1 or 4 frames go
    through every layer together, and PyTorch picks every convolution algorithm for the whole chunk."""
    decoder, cache, chunks = vae.decoder, CausalConvCache(), []
    _set_chunk_factor(decoder, 1)  # each layer is given its whole chunk
    latents = vae.post_quant_conv(latents)
    for index in range(latents.shape[2]):
        cache.is_first_chunk = index == 0
        x = decoder.mid_block(decoder.conv_in(latents[:, :, index : index + 1], cache), cache)
        for up_block in decoder.up_blocks:
            x = up_block(x, cache)
        chunks.append(decoder.conv_out(F.silu(decoder.norm_out(x)), cache))
    return torch.cat(chunks, dim=2).clamp(-1, 1)


@pytest.mark.parametrize("batch", [1, 2])
def test_frame_by_frame_decoding_is_bit_identical_to_chunk_by_chunk(batch):
    """Streaming frames one at a time changes no result: every layer but the causal convolutions is frame-local,
    and a causal convolution fed a chunk's frames one by one sees them through its cache. At width 32 (no SiLU
    tail) and 128 pixels tall, where a frame and its chunk would get different convolution algorithms from PyTorch
    (checked first), the decoded videos are equal bit for bit. (Encoding: against diffusers, in section 2.)"""
    streamed, chunked = tiny_vae(**WIDE_VAE_CONFIG), tiny_vae(**WIDE_VAE_CONFIG)
    conv = streamed.decoder.conv_out  # full resolution, 32 channels, 2 frames of history
    assert not _pytorch_uses_onednn(conv, (1, 32, 2 + 1, 128 + 2, 16 + 2))  # one frame: im2col
    assert _pytorch_uses_onednn(conv, (1, 32, 2 + 4, 128 + 2, 16 + 2))  # its chunk: oneDNN
    latents = random_latents(batch, 3, 16, 2)  # -> 9 frames of 128 x 16
    assert torch.equal(streamed.decode(latents).sample, _decode_chunk_by_chunk(chunked, latents))


@pytest.mark.parametrize("threads", [1, 2])
def test_convolution_algorithm_rule_is_pytorchs(threads):
    """`_pytorch_uses_onednn` restates PyTorch's choice between oneDNN and im2col for float32 CPU convolutions (the
    streamed layers follow it to keep their chunk's algorithm); if a PyTorch release changes the rule, this test
    says so. Inputs are zero-stride stand-ins: the choice depends on shapes only."""
    layers = [((3, 3, 3), (1, 1, 1)), ((3, 1, 1), (1, 1, 1)), ((3, 1, 1), (2, 1, 1)), ((1, 1, 1), (1, 1, 1))]
    layers += [((3, 3), (1, 1)), ((3, 3), (2, 2)), ((1, 1), (1, 1))]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for (kernel, stride), batch, channels, size2, size3 in product(
            layers, (1, 2, 16), (3, 32, 96, 384), (3, 6, 18, 66), (4, 66, 130)
        ):
            shape = (batch, channels, size2, size3, 18)[: 2 + len(kernel)]
            stand_in = torch.zeros(()).expand(shape)
            weight = torch.zeros(()).expand(8, channels, *kernel)
            ones, zeros = [1] * len(kernel), [0] * len(kernel)
            backend = torch._C._select_conv_backend(stand_in, weight, None, stride, zeros, ones, False, zeros, 1, None)
            layer = SimpleNamespace(kernel_size=kernel, stride=stride)
            expected = backend == torch._C._ConvBackend.Mkldnn
            assert _pytorch_uses_onednn(layer, shape) == expected, (shape, kernel, stride, threads, backend)
    finally:
        torch.set_num_threads(previous_threads)


# ---------------------------------------------------------------------------------------------------------------------
# 4. Tiling and slicing


def test_tiling_is_exact_when_the_frame_fits_one_tile():
    vae = tiny_vae()
    video, latents = random_video(1, 5, 32, 24), random_latents(1, 2, 4, 3)
    untiled = vae.encode(video).latent_dist.parameters, vae.decode(latents).sample
    vae.enable_tiling(32, 32, 24, 24)
    assert torch.equal(vae.encode(video).latent_dist.parameters, untiled[0])
    assert torch.equal(vae.decode(latents).sample, untiled[1])


@pytest.mark.oracle
@pytest.mark.parametrize("height, width", [(16, 48), (48, 16)], ids=["columns", "rows"])
def test_tiling_along_one_axis_matches_diffusers(height, width):
    """Along one axis the tiles and the blending weights are diffusers' own (`blend_h` / `blend_v`); only the order of
    the floating-point operations differs. (In 2-D diffusers blends a tile that was already blended with its upper
    neighbour; our weights are a product of the two ramps.)"""
    vae = tiny_vae()
    twin = diffusers_twin(vae)
    for model in (vae, twin):
        model.enable_tiling(32, 32, 24, 24)
    video, latents = random_video(1, 5, height, width), random_latents(1, 2, height // 8, width // 8)
    ours, theirs = vae.encode(video).latent_dist.parameters, twin.encode(video).latent_dist.parameters
    assert max_abs(ours, theirs) <= 1e-6  # measured 6e-8 - 9e-8
    assert max_abs(vae.decode(latents).sample, twin.decode(latents).sample) <= 1e-6  # measured 2.4e-7 - 2.8e-7


@pytest.mark.oracle
def test_tiled_output_is_as_close_to_untiled_as_diffusers_tiling():
    """2-D tiling of a 64 x 48 frame in 32-pixel tiles every 24 pixels (4 tiles, 8 pixels of overlap).

    A tiny random VAE sees the whole frame (the attention of the middle blocks is global, and random weights are not
    smooth), so any tiling changes its output a lot; what tiling can promise is seamless blending, not equality.
    Measured here, ours vs untiled: encode mean abs error 0.354 x the mean magnitude; decode mean abs 0.0109, max_abs
    0.281. diffusers' tiling on the same weights: 0.354, 0.0111, 0.281. Bounds: within 2 % of diffusers, and the
    measured figures plus 10 %.
    """
    vae = tiny_vae()
    twin = diffusers_twin(vae)
    video, latents = random_video(1, 5, 64, 48), random_latents(1, 2, 8, 6)
    errors = {}
    for name, model in (("ours", vae), ("diffusers", twin)):
        untiled_mean, untiled_video = model.encode(video).latent_dist.mean, model.decode(latents).sample
        model.enable_tiling(32, 32, 24, 24)
        tiled_mean, tiled_video = model.encode(video).latent_dist.mean, model.decode(latents).sample
        errors[name] = (
            (tiled_mean - untiled_mean).abs().mean().item() / untiled_mean.abs().mean().item(),
            (tiled_video - untiled_video).abs().mean().item(),
            max_abs(tiled_video, untiled_video),
        )
    assert all(ours <= 1.02 * theirs for ours, theirs in zip(errors["ours"], errors["diffusers"])), errors
    assert errors["ours"] <= (0.39, 0.012, 0.31), errors


@pytest.mark.parametrize(
    "size, tile, stride", [((50, 30), (16, 16), (12, 12)), ((9, 40), (8, 16), (4, 10)), ((24, 24), (8, 8), (8, 8))]
)
def test_tile_weights_sum_to_one(size, tile, stride):
    weights = torch.zeros(size, dtype=torch.float64)
    for tile_ in _plan_tiles(size, tile, stride, output_per_input=1):
        weights[tile_.output_rows, tile_.output_columns] += tile_.weight
    assert max_abs(weights, torch.ones(size, dtype=torch.float64)) <= 1e-12


def test_slicing_matches_the_batched_call():
    vae = tiny_vae()
    video, latents = random_video(2, 5, 16, 16), random_latents(2, 2, 2, 2)
    batched = vae.encode(video).latent_dist.parameters, vae.decode(latents).sample
    vae.enable_slicing()
    sliced = vae.encode(video).latent_dist.parameters, vae.decode(latents).sample
    # batch size changes the convolution kernels' summation order: measured 1.2e-7 (encode), 3.9e-7 (decode)
    assert max_abs(sliced[0], batched[0]) <= 1e-5
    assert max_abs(sliced[1], batched[1]) <= 1e-5
    vae.disable_slicing()
    assert torch.equal(vae.decode(latents).sample, batched[1])


# ---------------------------------------------------------------------------------------------------------------------
# 5. Saving and loading


def test_save_pretrained_round_trip(tmp_path):
    vae = tiny_vae()
    vae.save_pretrained(tmp_path)
    loaded = AutoencoderKLWan.from_pretrained(tmp_path).eval()
    public = lambda config: {key: value for key, value in config.items() if not key.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(vae.config)
    latents = random_latents(1, 2, 2, 2)
    assert torch.equal(loaded.decode(latents).sample, vae.decode(latents).sample)


@pytest.mark.oracle
def test_loads_a_folder_saved_by_diffusers(tmp_path):
    twin = diffusers_twin(tiny_vae(**PARITY_VAE_CONFIG))
    twin.save_pretrained(tmp_path)
    loaded = AutoencoderKLWan.from_pretrained(tmp_path).eval()
    video = random_video(1, 5, 16, 16)
    assert torch.equal(loaded.encode(video).latent_dist.parameters, twin.encode(video).latent_dist.parameters)


def test_loads_an_old_hub_config_with_unknown_keys(tmp_path):
    """The Wan2.1 Hub configs predate `decoder_base_dim`, `in_channels`, `patch_size`, ...; Wan 2.2's carries the
    retired `clip_output`. Missing keys take the Wan 2.1 defaults, unknown ones are ignored."""
    vae = tiny_vae()
    vae.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("decoder_base_dim", "is_residual", "in_channels", "out_channels", "patch_size", "latents_mean"):
        config.pop(key)
    config.pop("scale_factor_temporal"), config.pop("scale_factor_spatial")
    config["clip_output"] = False
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = AutoencoderKLWan.from_pretrained(tmp_path)
    assert loaded.config.in_channels == 3 and loaded.config.patch_size is None
    assert list(loaded.config.latents_mean) == list(WAN21_LATENTS_MEAN)
    assert list(loaded.config.latents_std) == list(WAN21_LATENTS_STD)


# ---------------------------------------------------------------------------------------------------------------------
# 6. Offload hooks


def test_offload_hooks_keep_the_cache_and_the_results():
    """accelerate's sequential offload (an AlignDevicesHook on every layer), model offload (the hook that
    `apply_forward_hook` triggers) and diffusers' group offloading, all onto the CPU: identical outputs, which also
    shows the cache was updated in place rather than copied by a hook."""
    video, latents = random_video(1, 5, 16, 16), random_latents(1, 2, 2, 2)
    reference = tiny_vae()
    expected = reference.encode(video).latent_dist.parameters, reference.decode(latents).sample
    cpu = torch.device("cpu")
    sequential = tiny_vae()
    cpu_offload(sequential, execution_device=cpu)
    model_offload, _ = cpu_offload_with_hook(tiny_vae(), execution_device=cpu)
    group_offload = tiny_vae()
    group_offload.enable_group_offload(cpu, offload_device=cpu, offload_type="block_level", num_blocks_per_group=1)
    for vae in (sequential, model_offload, group_offload):
        assert torch.equal(vae.encode(video).latent_dist.parameters, expected[0])
        assert torch.equal(vae.decode(latents).sample, expected[1])


def test_hooks_do_not_move_the_cache():
    cache = CausalConvCache()
    assert "cache" in AutoencoderKLWan._skip_keys
    moved = send_to_device({"cache": cache}, "cpu", skip_keys=AutoencoderKLWan._skip_keys)
    assert moved["cache"] is cache
    assert send_to_device(cache, "cpu") is cache  # no `.to`: even a hook that ignores skip_keys passes it through


# ---------------------------------------------------------------------------------------------------------------------
# 7. Bad inputs


@pytest.mark.parametrize(
    "shape, message",
    [
        ((3, 5, 16, 16), r"`x` must be a video tensor \[batch, 3, frames, height, width\], got \(3, 5, 16, 16\)"),
        ((1, 4, 5, 16, 16), r"`x` must have 3 channels"),
        ((1, 3, 6, 16, 16), r"`x` must have 1 \+ 4k frames \(1, 5, 9, \.\.\.\), got 6"),
        ((1, 3, 5, 20, 16), r"height and width of `x` must be positive multiples of 8, got 20 and 16"),
        ((1, 3, 5, 0, 16), r"height and width of `x` must be positive multiples of 8, got 0 and 16"),
    ],
)
def test_encode_rejects_bad_videos(shape, message):
    with pytest.raises(ValueError, match=message):
        tiny_vae().encode(torch.zeros(shape))


def test_bad_inputs_name_the_argument():
    vae = tiny_vae()
    with pytest.raises(ValueError, match=r"`z` must be latents \[batch, 16, latent_frames >= 1, height, width\]"):
        vae.decode(torch.zeros(1, 4, 2, 2, 2))
    with pytest.raises(ValueError, match=r"`z` must be latents .*got list"):
        vae.decode([torch.zeros(1, 16, 2, 2, 2)])
    with pytest.raises(ValueError, match=r"`sample` must have 1 \+ 4k frames"):
        vae(torch.zeros(1, 3, 3, 16, 16))


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"tile_sample_min_height": 100}, r"`tile_sample_min_height` must be a positive multiple of 8, got 100"),
        ({"tile_sample_stride_width": -8}, r"`tile_sample_stride_width` must be a positive multiple of 8"),
        ({"tile_sample_stride_height": 96}, r"`tile_sample_stride_height` must lie between half the tile"),
        ({"tile_sample_stride_width": 264}, r"`tile_sample_stride_width` must lie between half the tile"),
    ],
)
def test_enable_tiling_rejects_bad_sizes(arguments, message):
    vae = tiny_vae()
    with pytest.raises(ValueError, match=message):
        vae.enable_tiling(**arguments)
    assert not vae.use_tiling


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        ({"patch_size": 2}, ValueError, r"multiples of `patch_size`\*\*2 = 4, got 3 and 3"),
        ({"patch_size": 0}, ValueError, r"`patch_size` must be None or a positive integer, got 0"),
        ({"attn_scales": [0.5]}, NotImplementedError, r"`attn_scales` must be empty, got \[0\.5\]"),
        ({"temperal_downsample": [True, True]}, ValueError, r"`temperal_downsample` needs one entry per"),
        ({"scale_factor_spatial": 16}, ValueError, r"must match the architecture \(4 and 8: .*\), got 4 and 16"),
    ],
)
def test_config_errors(overrides, error, message):
    with pytest.raises(error, match=message):
        tiny_vae(**overrides)
