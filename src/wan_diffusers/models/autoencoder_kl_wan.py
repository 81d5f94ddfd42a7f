"""AutoencoderKLWan: the causal 3D video VAEs of Wan 2.1 and Wan 2.2, streamed frame by frame.

The Wan 2.1 VAE compresses a video [B, 3, 1 + 4k, H, W] in [-1, 1] into latents [B, 16, 1 + k, H/8, W/8] and back;
the Wan 2.2 VAE (TI2V-5B) into latents [B, 48, 1 + k, H/16, W/16]. Every
convolution is causal in time, so a video can be processed in short chunks while carrying a small cache of the
last input frames of each convolution (`CausalConvCache`): encoding takes the first frame, then chunks of 4 frames,
one latent frame each; decoding takes one latent frame at a time. Within a chunk, every layer but the causal
convolutions works on each frame alone, so the frames go through one at a time, as deep as they can (the encoder's
temporal downsamplings wait for pairs; the decoder's temporal upsamplings make two frames, finished one after the
other), with the result of the whole chunk. Results go into a preallocated output: memory holds the output, the
caches and the activations of about one frame, whatever the number of frames.

Numerics follow the original Wan2.1 `wan/modules/vae.py` (RMS norm through `F.normalize`, 'nearest-exact'
upsampling in float32, right/bottom zero padding before stride-2 convolutions, the first-chunk rules of the temporal
resampling, the clamp of decoded videos). Module and parameter names follow diffusers' Hub format, so the `vae/`
folder of the official `Wan-AI/Wan2.1-*-Diffusers` repos loads unchanged.

The Wan 2.2 VAE (`wan/modules/vae2_2.py`, `WanVAE_`; config `is_residual=True, patch_size=2`) uses the same layers.
Three things differ: 2 x 2 pixels are folded into channels before the encoder and unfolded after the decoder
(`patchify`), each encoder stage is one residual down block whose output adds a parameter-free shortcut averaging
the input's space-to-depth (`WanAvgDown3D`), and each decoder stage a residual up block adding a channel-repeating
depth-to-space of its input (`WanDupUp3D`). Both shortcuts work frame by frame (or on pairs of frames, which the
cache assembles), so the Wan 2.2 VAE streams, tiles and slices exactly as the Wan 2.1 VAE does. The
`Wan-AI/Wan2.2-TI2V-5B-Diffusers` `vae/` folder loads unchanged.

On the CPU in float32, the streamed convolutions use the algorithm PyTorch would pick for the whole chunk, so the
results stay bit-identical to the chunked computation (the original's and diffusers'); that policy is one section
below, applied to a built model by `apply_chunked_convolution_algorithm`.
"""

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import AutoencoderMixin, DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import logging
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import nn

from ..loaders.single_file import VAESingleFileMixin

logger = logging.get_logger(__name__)

# Per-channel statistics of the Wan 2.1 latents (`wan/modules/vae.py`, class `WanVAE`). The pipelines normalise
# encoded latents as (z - mean) / std and undo it before decoding; the VAE itself never applies them.
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip
# The same for the 48 latent channels of the Wan 2.2 VAE (`wan/modules/vae2_2.py`, class `Wan2_2_VAE`).
WAN22_LATENTS_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)  # fmt: skip
WAN22_LATENTS_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# The causal-convolution cache


class CausalConvCache:
    """The trailing input frames of every causal convolution, carried from one temporal chunk to the next.

    A causal convolution with a temporal kernel of k frames and a temporal stride of s needs the last k - s frames of
    its input stream to continue it exactly (`WanCausalConv3d.history_frames`). `update` hands a convolution the
    frames kept from the previous chunks (None on its first call) and keeps the new trailing frames, so a video run
    chunk by chunk gives the same result as the whole video at once.

    The temporal resampling layers treat the first chunk differently (the first frame of a video is never merged with
    or split into other frames); the driving loop sets `is_first_chunk` for them. A temporal downsampling given one
    frame at a time also needs the first frame of each pair held back until the second arrives (`whole_pairs`). A
    fresh cache is made for every video (and every spatial tile), so nothing leaks from one call into the next.

    The cache is a plain object without a `.to` method and travels as the keyword argument `cache`, which
    `AutoencoderKLWan._skip_keys` names: accelerate's and diffusers' offload hooks leave it where it is instead of
    copying it (a copy would lose the updates).
    """

    def __init__(self):
        self.is_first_chunk = True
        self._trailing_frames: dict[nn.Module, torch.Tensor] = {}
        self._held_frames: dict[nn.Module, torch.Tensor] = {}

    def update(self, conv: "WanCausalConv3d", x: torch.Tensor) -> torch.Tensor | None:
        """Return the frames kept for `conv` from earlier chunks (or None), then keep the last frames of `x`.

        Shapes: `x` [B, C, T, H, W]; returned and kept tensors [B, C, <= conv.history_frames, H, W].
        """
        previous = self._trailing_frames.get(conv)
        keep = conv.history_frames
        if x.shape[2] >= keep or previous is None:
            # clone: a slice would keep the whole chunk (or the caller's whole video) alive
            self._trailing_frames[conv] = x[:, :, -keep:].clone()
        else:  # a chunk shorter than the history (one frame): the missing frames come from the previous chunks
            self._trailing_frames[conv] = torch.cat([previous[:, :, x.shape[2] - keep :], x], dim=2)
        return previous

    def whole_pairs(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        """The frames of `x`, after the one held back for `layer` by the previous call, in whole pairs (None if there
        is none yet); an odd last frame is held back for the next call.

        Shapes: `x` [B, C, T, H, W] -> [B, C, even T', H, W].
        """
        held = self._held_frames.pop(layer, None)
        if held is not None:
            x = torch.cat([held, x], dim=2)
        if x.shape[2] % 2:
            self._held_frames[layer] = x[:, :, -1:]
            x = x[:, :, :-1]
        return x if x.shape[2] else None


# ---------------------------------------------------------------------------------------------------------------------
# The CPU convolution algorithm of the streamed computation
#
# The encoder and decoder run a chunk's frames through their layers one at a time (`WanEncoder3d.forward`,
# `WanDecoder3d._finish_frames`), where the chunked computation (the original's, diffusers') runs a layer on
# `chunk_factor` times as many frames together (4 at full resolution). On the CPU in float32, PyTorch picks the
# convolution algorithm by input size (`_pytorch_uses_onednn`), and a frame can fall under the line that its chunk
# is above. Such a frame goes through oneDNN explicitly, as the chunk would: oneDNN gives each frame the result it has
# within the chunk, so the VAE stays bit-identical to the chunked computation; the im2col fallback would also
# allocate a column buffer 27 times the frame (decoding with the released VAE at 64 x 64: 91 MiB beyond the output
# instead of 67). The convolutions only carry their `chunk_factor` (1, the default, leaves the choice to PyTorch);
# `apply_chunked_convolution_algorithm` sets it from the architecture, once per model.


def _pytorch_uses_onednn(conv: nn.Conv2d | nn.Conv3d, input_shape: tuple[int, ...]) -> bool:
    """Whether PyTorch runs `conv` (one group, undilated, kernel <= 3) on a float32 CPU input through oneDNN.

    Its rule (`use_mkldnn` in aten/src/ATen/native/Convolution.cpp): oneDNN when enabled, except for a batch of one
    with batch x channels x input dims 2 and 3 <= 20480, or an unstrided 1x1 kernel in space with one thread and a
    batch under 16; those go through im2col and a matrix product, which sums in another order.
    `test_autoencoder_kl_wan.py` checks this rule against PyTorch's own choice.
    """
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    batch, channels, size2, size3 = input_shape[:4]
    unstrided_1x1 = tuple(conv.kernel_size[-2:]) == (1, 1) and all(stride == 1 for stride in conv.stride)
    if unstrided_1x1 and torch.get_num_threads() == 1 and batch < 16:
        return False
    return batch > 1 or batch * channels * size2 * size3 > 20480


class _StreamedConvolution:
    """Mixin of the VAE's convolutions: with a `chunk_factor` above 1, a float32 CPU input gets the algorithm that
    PyTorch picks for the chunked computation's input (see the section comment above)."""

    chunk_factor = 1

    def _convolve(
        self, padded: torch.Tensor, cache: CausalConvCache | None, frame_dim: int, new_frames: int
    ) -> torch.Tensor:
        """This layer applied to its (padded) input; the chunked computation has `chunk_factor` times the
        `new_frames` frames behind any kept in front, along `frame_dim` (the batch for frames [B*T, C, H, W])."""
        # the first chunk is a single frame, encoding and decoding alike: the chunked computation has no more
        factor = 1 if cache is None or cache.is_first_chunk else self.chunk_factor
        if factor > 1 and padded.device.type == "cpu" and padded.dtype == torch.float32:
            chunk_shape = list(padded.shape)
            chunk_shape[frame_dim] += (factor - 1) * new_frames
            if _pytorch_uses_onednn(self, chunk_shape):
                return torch.mkldnn_convolution(
                    padded, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups
                )
        return super().forward(padded)


def apply_chunked_convolution_algorithm(vae: "AutoencoderKLWan") -> None:
    """Give every streamed convolution of `vae` the number of frames the chunked computation runs it on per frame
    that the streamed one does (`chunk_factor`). `AutoencoderKLWan.__init__` calls it once.

    Encoder: a chunk has `temporal_compression_ratio` (4) frames until the first temporal downsampling, which halves
    them (its time conv already sees the pairs); the bottleneck sees one. Decoder: one frame per latent frame until
    the first temporal upsampling, which doubles them, then 4 from there to `conv_out`.
    """
    _set_chunk_factor(vae, 1)
    encoder, decoder = vae.encoder, vae.decoder
    frames_per_chunk = 2 ** sum(vae.temperal_downsample)
    _set_chunk_factor(encoder.conv_in, frames_per_chunk)
    for block in encoder.down_blocks:  # Wan 2.1: residual blocks and resamplers; Wan 2.2: one block per stage
        _set_chunk_factor(block, frames_per_chunk)
        resample = block.downsampler if isinstance(block, WanResidualDownBlock) else block
        if isinstance(resample, WanResample) and resample.mode == "downsample3d":
            frames_per_chunk //= 2
            resample.time_conv.chunk_factor = frames_per_chunk
    frames_per_latent_frame = 1
    for block in decoder.up_blocks:
        _set_chunk_factor(block, frames_per_latent_frame)
        if isinstance(block, WanResidualUpBlock):
            upsample = block.upsampler
        else:
            upsample = block.upsamplers[0] if block.upsamplers is not None else None
        if upsample is not None and upsample.mode == "upsample3d":
            frames_per_latent_frame *= 2
    _set_chunk_factor(decoder.conv_out, frames_per_latent_frame)


def _set_chunk_factor(module: nn.Module, chunk_factor: int) -> None:
    """Set the `chunk_factor` of every streamed convolution in `module`."""
    for layer in module.modules():
        if isinstance(layer, _StreamedConvolution):
            layer.chunk_factor = chunk_factor


# ---------------------------------------------------------------------------------------------------------------------
# Building blocks


class WanConv2d(_StreamedConvolution, nn.Conv2d):
    """`nn.Conv2d` applied to the frames [B*T, C, H, W] of a video, with the algorithm of the chunked computation."""

    def forward(self, x: torch.Tensor, cache: CausalConvCache | None = None) -> torch.Tensor:
        return self._convolve(x, cache, frame_dim=0, new_frames=x.shape[0])


class WanCausalConv3d(_StreamedConvolution, nn.Conv3d):
    """A Conv3d that only looks back in time: the temporal padding goes in front of the first frame.

    Built like `nn.Conv3d(in_channels, out_channels, kernel_size, stride, padding)`: a temporal padding p becomes 2p
    zero frames in front and none behind, the spatial padding stays symmetric. With a `cache`, the frames kept from
    the previous chunks replace as many of the zero frames in front (or, without temporal padding, are simply put in
    front: the strided temporal downsampling).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        time_padding, height_padding, width_padding = self.padding
        # F.pad order: (left, right, top, bottom, front, back)
        self.causal_padding = (width_padding, width_padding, height_padding, height_padding, 2 * time_padding, 0)
        self.padding = (0, 0, 0)  # padding is applied in forward
        # input frames the next chunk needs from this one: 2 for the 3x3x3 convs, 1 for the stride-2 temporal
        # downsampling, 0 for the 1x1x1 convs (which therefore never touch the cache)
        self.history_frames = self.kernel_size[0] - self.stride[0]

    def forward(self, x: torch.Tensor, cache: CausalConvCache | None = None) -> torch.Tensor:
        # no name for the previous frames: they are freed once copied into the padded input, before the convolution
        padded = self._pad(x, cache.update(self, x) if cache is not None and self.history_frames > 0 else None)
        return self._convolve(padded, cache, frame_dim=2, new_frames=x.shape[2])

    def _pad(self, x: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """[previous frames | x] with zero frames in front (as many as `previous` lacks) and zero borders.

        The same tensor as `F.pad(torch.cat([previous, x], dim=2), padding)`, built in one allocation: the
        concatenation would be a second copy of the chunk, alive at the same time.
        """
        left, right, top, bottom, front, _ = self.causal_padding
        history = 0 if previous is None else previous.shape[2]
        front = max(front - history, 0)
        if not (left or top or front or history):
            return x
        batch, channels, frames, height, width = x.shape
        padded = x.new_zeros(batch, channels, front + history + frames, top + height + bottom, left + width + right)
        rows, columns = slice(top, top + height), slice(left, left + width)
        if previous is not None:
            padded[:, :, front : front + history, rows, columns] = previous
        padded[:, :, front + history :, rows, columns] = x
        return padded


class WanRMSNorm(nn.Module):
    """RMS norm over channels as the original computes it: `F.normalize(x, dim=1) * sqrt(C) * gamma`.

    `F.normalize` divides by max(||x||_2, 1e-12), with no epsilon inside the square root. Half-precision inputs are
    normalised in float32. `gamma` is [C, 1, 1, 1] for videos [B, C, T, H, W] and [C, 1, 1] for frames [N, C, H, W]
    (`images=True`, the attention blocks).
    """

    def __init__(self, dim: int, images: bool = False):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1) if images else torch.ones(dim, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normalized = F.normalize(x.float() if x.element_size() < 4 else x, dim=1).to(x.dtype)
        return normalized * self.scale * self.gamma


class WanUpsample2x(nn.Module):
    """Nearest-exact 2x spatial upsampling of frames [N, C, H, W], computed in float32 as the original does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x.float(), scale_factor=2.0, mode="nearest-exact").to(x.dtype)


class WanResample(nn.Module):
    """Halve or double H and W, and for the '3d' modes also the frame rate after the first frame.

    Modes:
    - `downsample2d`: zero-pad right and bottom by one, then a stride-2 3x3 Conv2d per frame.
    - `downsample3d`: the same, then `time_conv` (3 frames, stride 2) merges frames. The first chunk (the first
      frame) passes through unchanged; later frames merge two by two, each pair with the frame before it. A pair
      given one frame at a time comes out with its second frame: after the first, `forward` returns None.
    - `upsample2d`: nearest-exact 2x upsampling, then a 3x3 Conv2d to `upsample_out_dim` channels (default dim // 2).
    - `upsample3d`: first `time_conv` (causal, 3 frames) doubles the channels, and the two halves become two frames
      each; then the spatial upsampling. The first chunk skips `time_conv` (one latent frame decodes to one frame),
      and the time conv of the second chunk starts from zero frames, not from the first chunk.
    The spatial layers sit in `resample` (index 1 holds the weights) to keep the Hub key names.
    """

    def __init__(self, dim: int, mode: str, upsample_out_dim: int | None = None):
        super().__init__()
        self.mode = mode
        upsample_out_dim = upsample_out_dim or dim // 2
        if mode in ("upsample2d", "upsample3d"):
            self.resample = nn.Sequential(WanUpsample2x(), WanConv2d(dim, upsample_out_dim, 3, padding=1))
        elif mode in ("downsample2d", "downsample3d"):
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), WanConv2d(dim, dim, 3, stride=2))
        else:
            raise ValueError(f"`mode` must be up/downsample2d/3d, got {mode!r}")
        if mode == "upsample3d":
            self.time_conv = WanCausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = WanCausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor, cache: CausalConvCache) -> torch.Tensor | None:
        if self.mode == "upsample3d" and not cache.is_first_chunk:
            batch, channels, frames, height, width = x.shape
            x = self.time_conv(x, cache)  # [B, 2C, T, H, W]
            # channel half 0 -> frame 2t, half 1 -> frame 2t + 1
            x = x.view(batch, 2, channels, frames, height, width).permute(0, 2, 3, 1, 4, 5)
            x = x.reshape(batch, channels, 2 * frames, height, width)

        batch, _, frames, _, _ = x.shape
        x = x.permute(0, 2, 1, 3, 4).flatten(0, 1)  # [B*T, C, H, W]
        resize, conv = self.resample  # (2x upsampling or zero padding), convolution
        x = conv(resize(x), cache)  # [B*T, C', H', W']
        x = x.unflatten(0, (batch, frames)).permute(0, 2, 1, 3, 4)  # [B, C', T, H', W']

        if self.mode == "downsample3d":
            if cache.is_first_chunk:
                cache.update(self.time_conv, x)  # the next chunk merges its frames with this chunk's last one
                return x
            # Frames merge two by two (each pair with the frame before it); given one frame at a time, the first of
            # a pair waits in the cache for the second, and nothing comes out (None).
            x = cache.whole_pairs(self, x)
            if x is not None:
                x = self.time_conv(x, cache)  # [B, C, T/2, H', W']
        return x


class WanResidualBlock(nn.Module):
    """RMSNorm -> SiLU -> causal 3x3x3 conv -> RMSNorm -> SiLU -> dropout -> causal 3x3x3 conv, plus a shortcut
    (a 1x1x1 conv when the width changes)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = WanRMSNorm(in_dim)
        self.conv1 = WanCausalConv3d(in_dim, out_dim, 3, padding=1)
        self.norm2 = WanRMSNorm(out_dim)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = WanCausalConv3d(out_dim, out_dim, 3, padding=1)
        self.conv_shortcut = WanCausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else None

    def forward(self, x: torch.Tensor, cache: CausalConvCache) -> torch.Tensor:
        # One step per line, rebinding `x`: each activation is freed as soon as the next exists (a nested call would
        # keep conv1's output alive while conv2 runs).
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x, cache)
        x = F.silu(self.norm1(x))
        x = self.conv1(x, cache)
        x = F.silu(self.norm2(x))
        x = self.conv2(self.dropout(x), cache)
        return x.add_(shortcut)  # in place into conv2's fresh output: the same sum, one tensor fewer


class WanAttentionBlock(nn.Module):
    """Single-head self-attention over the H*W positions of each frame (frames do not attend to each other)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = WanRMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)  # output channels: query | key | value
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        batch, channels, frames, height, width = x.shape
        x = x.permute(0, 2, 1, 3, 4).flatten(0, 1)  # [B*T, C, H, W]
        qkv = self.to_qkv(self.norm(x)).view(batch * frames, 1, channels * 3, height * width)
        qkv = qkv.permute(0, 1, 3, 2).contiguous()  # [B*T, 1 head, H*W, 3C]
        query, key, value = qkv.chunk(3, dim=-1)  # each [B*T, 1, H*W, C]
        x = F.scaled_dot_product_attention(query, key, value)  # scale 1/sqrt(C)
        x = x.squeeze(1).permute(0, 2, 1).reshape(batch * frames, channels, height, width)
        x = self.proj(x)
        x = x.unflatten(0, (batch, frames)).permute(0, 2, 1, 3, 4)  # [B, C, T, H, W]
        return x + identity


class WanMidBlock(nn.Module):
    """Residual block, attention, residual block: the bottleneck of the encoder and of the decoder."""

    def __init__(self, dim: int, dropout: float = 0.0):
        super().__init__()
        # Built in forward order, as diffusers' class builds them: from the same seed, the same random weights (its
        # own tests compare outputs of randomly initialised models with stored values)
        first = WanResidualBlock(dim, dim, dropout)
        attention = WanAttentionBlock(dim)
        second = WanResidualBlock(dim, dim, dropout)
        self.attentions = nn.ModuleList([attention])
        self.resnets = nn.ModuleList([first, second])

    def forward(self, x: torch.Tensor, cache: CausalConvCache) -> torch.Tensor:
        x = self.resnets[0](x, cache)
        x = self.attentions[0](x)
        return self.resnets[1](x, cache)


# ---------------------------------------------------------------------------------------------------------------------
# Wan 2.2: the patchify and the residual stages with parameter-free shortcuts


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Fold `patch_size` x `patch_size` pixels into channels: [B, C, T, H, W] -> [B, C * p * p, T, H / p, W / p].

    The channel order is the original's (`wan/modules/vae2_2.py`, `patchify`): channel `c * p * p + column * p + row`,
    the column offset before the row offset. `F.pixel_unshuffle` orders the row offset first, which would hand the
    first convolution its input channels in another order.
    """
    if patch_size == 1:
        return x
    batch, channels, frames, height, width = x.shape
    x = x.reshape(batch, channels, frames, height // patch_size, patch_size, width // patch_size, patch_size)
    x = x.permute(0, 1, 6, 4, 2, 3, 5)  # [B, C, column, row, T, H/p, W/p]
    return x.reshape(batch, channels * patch_size * patch_size, frames, height // patch_size, width // patch_size)


def unpatchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The inverse of `patchify`: [B, C * p * p, T, h, w] -> [B, C, T, h * p, w * p]."""
    if patch_size == 1:
        return x
    batch, channels, frames, height, width = x.shape
    x = x.reshape(batch, channels // (patch_size * patch_size), patch_size, patch_size, frames, height, width)
    x = x.permute(0, 1, 4, 5, 3, 6, 2)  # [B, C, T, h, row, w, column]
    return x.reshape(batch, channels // (patch_size * patch_size), frames, height * patch_size, width * patch_size)


class WanAvgDown3D(nn.Module):
    """The shortcut of a Wan 2.2 encoder stage: space-to-depth by `factor_t` x `factor_s` x `factor_s`, then the mean
    of each group of consecutive channels, to `out_channels` channels (`AvgDown3D` in `wan/modules/vae2_2.py`).

    [B, C, T, H, W] -> [B, out_channels, T / factor_t, H / factor_s, W / factor_s]. The frames of a video are grouped
    from the first: the first chunk (one frame) is padded with a zero frame in front, later frames go in pairs,
    assembled by the cache when they come one at a time (None until a pair is complete).
    """

    def __init__(self, in_channels: int, out_channels: int, factor_t: int, factor_s: int):
        super().__init__()
        self.out_channels = out_channels
        self.factor_t, self.factor_s = factor_t, factor_s
        factor = factor_t * factor_s * factor_s
        if (in_channels * factor) % out_channels:
            raise ValueError(
                f"A residual down block needs its input channels times {factor} to be a multiple of its output "
                f"channels, got {in_channels} -> {out_channels}: check `base_dim` and `dim_mult`"
            )
        self.group_size = in_channels * factor // out_channels

    def forward(self, x: torch.Tensor, cache: CausalConvCache) -> torch.Tensor | None:
        if self.factor_t > 1 and not cache.is_first_chunk:
            x = cache.whole_pairs(self, x)
            if x is None:
                return None
        front = (-x.shape[2]) % self.factor_t
        if front:
            x = F.pad(x, (0, 0, 0, 0, front, 0))
        batch, channels, frames, height, width = x.shape
        ft, fs = self.factor_t, self.factor_s
        x = x.reshape(batch, channels, frames // ft, ft, height // fs, fs, width // fs, fs)
        x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)  # [B, C, ft, fs (rows), fs (columns), T', H', W']
        x = x.reshape(batch, self.out_channels, self.group_size, frames // ft, height // fs, width // fs)
        return x.mean(dim=2)


class WanDupUp3D(nn.Module):
    """The shortcut of a Wan 2.2 decoder stage: every input channel repeated, then depth-to-space by `factor_t` x
    `factor_s` x `factor_s` (`DupUp3D` in `wan/modules/vae2_2.py`).

    [B, C, T, H, W] -> [B, out_channels, T * factor_t, H * factor_s, W * factor_s]; in the first chunk the first
    `factor_t - 1` frames are dropped, as the temporal upsampling of the main path makes one frame there.
    """

    def __init__(self, in_channels: int, out_channels: int, factor_t: int, factor_s: int):
        super().__init__()
        self.out_channels = out_channels
        self.factor_t, self.factor_s = factor_t, factor_s
        factor = factor_t * factor_s * factor_s
        if (out_channels * factor) % in_channels:
            raise ValueError(
                f"A residual up block needs its output channels times {factor} to be a multiple of its input "
                f"channels, got {in_channels} -> {out_channels}: check `decoder_base_dim` and `dim_mult`"
            )
        self.repeats = out_channels * factor // in_channels

    def forward(self, x: torch.Tensor, first_chunk: bool) -> torch.Tensor:
        batch, _, frames, height, width = x.shape
        ft, fs = self.factor_t, self.factor_s
        x = x.repeat_interleave(self.repeats, dim=1)
        x = x.view(batch, self.out_channels, ft, fs, fs, frames, height, width)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)  # [B, C', T, ft, H, fs (rows), W, fs (columns)]
        x = x.reshape(batch, self.out_channels, frames * ft, height * fs, width * fs)
        return x[:, :, ft - 1 :] if first_chunk else x


class WanResidualDownBlock(nn.Module):
    """One Wan 2.2 encoder stage: residual blocks, then (except in the last stage) a downsampler, plus the
    `WanAvgDown3D` shortcut of the stage's input (`Down_ResidualBlock` in `wan/modules/vae2_2.py`)."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float, downsample_mode: str | None):
        super().__init__()
        factor_t = 2 if downsample_mode == "downsample3d" else 1
        self.avg_shortcut = WanAvgDown3D(in_dim, out_dim, factor_t, 2 if downsample_mode else 1)
        self.resnets = nn.ModuleList(
            WanResidualBlock(in_dim if index == 0 else out_dim, out_dim, dropout) for index in range(num_res_blocks)
        )
        self.downsampler = WanResample(out_dim, downsample_mode) if downsample_mode else None

    def forward(self, x: torch.Tensor, cache: CausalConvCache) -> torch.Tensor | None:
        # The shortcut first: it is smaller than the input, which can then go. Both paths hold the first frame of a
        # pair back and come out with the second.
        shortcut = self.avg_shortcut(x, cache)
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.downsampler is not None:
            x = self.downsampler(x, cache)
        return None if x is None else x.add_(shortcut)


class WanResidualUpBlock(nn.Module):
    """One Wan 2.2 decoder stage: `num_res_blocks + 1` residual blocks, then (except in the last stage) an upsampler
    keeping the width, plus the `WanDupUp3D` shortcut of the stage's input (`Up_ResidualBlock` in
    `wan/modules/vae2_2.py`). Unlike Wan 2.1's `WanUpBlock`, the upsampler sits in `upsampler`, not `upsamplers.0`."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float, upsample_mode: str | None):
        super().__init__()
        self.resnets = nn.ModuleList(
            WanResidualBlock(in_dim if index == 0 else out_dim, out_dim, dropout)
            for index in range(num_res_blocks + 1)
        )
        self.upsampler = None
        self.avg_shortcut = None
        if upsample_mode:
            self.upsampler = WanResample(out_dim, upsample_mode, upsample_out_dim=out_dim)
            factor_t = 2 if upsample_mode == "upsample3d" else 1
            self.avg_shortcut = WanDupUp3D(in_dim, out_dim, factor_t, factor_s=2)

    def forward(self, x: torch.Tensor, cache: CausalConvCache) -> torch.Tensor:
        stage_input = x
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.upsampler is None:
            return x
        x = self.upsampler(x, cache)
        return x.add_(self.avg_shortcut(stage_input, cache.is_first_chunk))


# ---------------------------------------------------------------------------------------------------------------------
# Encoder and decoder


class WanEncoder3d(nn.Module):
    """A chunk of video [B, in_channels, 1 or 4, H, W] -> its posterior moments [B, out_channels, 1, H/8, W/8].

    Stage widths are `dim * [1] + dim * dim_mult`; every stage but the last ends in a spatial (and, where
    `temperal_downsample` says so, temporal) downsampling. The Wan 2.1 Hub layout keeps the residual blocks and the
    resamplers of all stages in one flat list, `down_blocks`; Wan 2.2 (`is_residual`) has one `WanResidualDownBlock`
    per stage there. Every entry is called as `block(x, cache)` either way.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dim: int,
        dim_mult: tuple[int, ...],
        num_res_blocks: int,
        temperal_downsample: tuple[bool, ...],
        dropout: float = 0.0,
        is_residual: bool = False,
    ):
        super().__init__()
        widths = [dim * multiplier for multiplier in (1, *dim_mult)]
        self.conv_in = WanCausalConv3d(in_channels, widths[0], 3, padding=1)
        down_blocks = []
        for stage, (in_dim, out_dim) in enumerate(zip(widths[:-1], widths[1:])):
            mode = None
            if stage < len(dim_mult) - 1:
                mode = "downsample3d" if temperal_downsample[stage] else "downsample2d"
            if is_residual:  # Wan 2.2: one block per stage
                down_blocks.append(WanResidualDownBlock(in_dim, out_dim, num_res_blocks, dropout, mode))
                continue
            for _ in range(num_res_blocks):
                down_blocks.append(WanResidualBlock(in_dim, out_dim, dropout))
                in_dim = out_dim
            if mode:
                down_blocks.append(WanResample(out_dim, mode))
        self.down_blocks = nn.ModuleList(down_blocks)
        self.mid_block = WanMidBlock(widths[-1], dropout)
        self.norm_out = WanRMSNorm(widths[-1])
        self.conv_out = WanCausalConv3d(widths[-1], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cache: CausalConvCache) -> torch.Tensor:
        """Encode a chunk `x` [B, C, 1 or 4, H, W] into its latent frame [B, out_channels, 1, H/8, W/8], one frame of
        the chunk at a time.

        Each frame goes as deep as it can: a temporal downsampling needs two frames, so the first of a pair stops
        there, and the second carries on with the merged frame; the chunk's last frame completes every pair and
        comes out as the latent frame. As in the decoder (`WanDecoder3d._finish_frames`), the result is the whole
        chunk's, and only one frame's activations exist at the full resolution instead of four.
        """
        latent_frames = [self._encode_frame(frame, cache) for frame in x.split(1, dim=2)]
        return torch.cat([latent for latent in latent_frames if latent is not None], dim=2)

    def _encode_frame(self, x: torch.Tensor, cache: CausalConvCache) -> torch.Tensor | None:
        x = self.conv_in(x, cache)
        for block in self.down_blocks:
            x = block(x, cache)
            if x is None:  # held back by a temporal downsampling until the next frame
                return None
        x = self.mid_block(x, cache)
        x = F.silu(self.norm_out(x))
        return self.conv_out(x, cache)


class WanUpBlock(nn.Module):
    """One decoder stage: `num_res_blocks + 1` residual blocks, then (except in the last stage) an upsampler.

    The Wan 2.1 upsampler halves the channels, which is why every stage after the first starts at half the width of
    the stage before (Wan 2.2's `WanResidualUpBlock` keeps them).
    """

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float, upsample_mode: str | None):
        super().__init__()
        self.resnets = nn.ModuleList(
            WanResidualBlock(in_dim if index == 0 else out_dim, out_dim, dropout)
            for index in range(num_res_blocks + 1)
        )
        # a one-element list: the Hub keys are `up_blocks.{i}.upsamplers.0.*`
        self.upsamplers = nn.ModuleList([WanResample(out_dim, upsample_mode)]) if upsample_mode else None

    def forward(self, x: torch.Tensor, cache: CausalConvCache) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, cache)
        return x


class WanDecoder3d(nn.Module):
    """Latents [B, z_dim, 1, h, w] of one latent frame -> its frames [B, out_channels, 1, 8h, 8w], one at a time.

    Stage widths mirror the encoder: `dim * dim_mult[-1]` for the bottleneck, then `dim * dim_mult` reversed. The
    stages are `WanUpBlock`s (Wan 2.1) or `WanResidualUpBlock`s (Wan 2.2, `is_residual`); the stages after the first
    temporal upsampling run frame by frame (`_finish_frames`).
    """

    def __init__(
        self,
        z_dim: int,
        out_channels: int,
        dim: int,
        dim_mult: tuple[int, ...],
        num_res_blocks: int,
        temperal_upsample: tuple[bool, ...],
        dropout: float = 0.0,
        is_residual: bool = False,
    ):
        super().__init__()
        widths = [dim * multiplier for multiplier in (dim_mult[-1], *reversed(dim_mult))]
        self.conv_in = WanCausalConv3d(z_dim, widths[0], 3, padding=1)
        self.mid_block = WanMidBlock(widths[0], dropout)
        up_blocks = []
        for stage, (in_dim, out_dim) in enumerate(zip(widths[:-1], widths[1:])):
            if stage > 0 and not is_residual:
                in_dim //= 2  # the previous stage's Wan 2.1 upsampler halved the channels
            upsample_mode = None
            if stage < len(dim_mult) - 1:
                upsample_mode = "upsample3d" if temperal_upsample[stage] else "upsample2d"
            block = WanResidualUpBlock if is_residual else WanUpBlock
            up_blocks.append(block(in_dim, out_dim, num_res_blocks, dropout, upsample_mode))
        self.up_blocks = nn.ModuleList(up_blocks)
        self.norm_out = WanRMSNorm(widths[-1])
        self.conv_out = WanCausalConv3d(widths[-1], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cache: CausalConvCache, write_frame: Callable[[torch.Tensor], None]) -> None:
        """Decode one latent frame `x` [B, z_dim, 1, h, w]; hand its frames [B, out_channels, 1, 8h, 8w] (1 for the
        first latent frame, 4 for the others) to `write_frame`, in order."""
        x = self.conv_in(x, cache)
        x = self.mid_block(x, cache)
        self._finish_frames(x, 0, cache, write_frame)

    def _finish_frames(
        self, x: torch.Tensor, stage: int, cache: CausalConvCache, write_frame: Callable[[torch.Tensor], None]
    ) -> None:
        """Run one frame `x` [B, C, 1, h', w'] through `up_blocks[stage:]` and the output layers, depth first.

        When a temporal upsampling turns the frame into two, the first is decoded to the end before the second
        starts, so each resolution holds the activations of one frame rather than the 2 or 4 of a chunk. The result
        is the chunk's: every layer but the causal convolutions works on each frame alone (norms over channels, the
        spatial resampling), and a causal convolution fed a chunk's frames one by one, in order, sees the same
        inputs through its cache.
        """
        if stage == len(self.up_blocks):
            x = F.silu(self.norm_out(x))
            write_frame(self.conv_out(x, cache))
            return
        frames = list(self.up_blocks[stage](x, cache).split(1, dim=2))  # 1 or 2 of [B, C', 1, H', W']
        # Hold no reference to a frame that is no longer needed: the input is dropped before going deeper, and each
        # frame is handed over (popped) rather than kept in the list.
        del x
        while frames:
            self._finish_frames(frames.pop(0), stage + 1, cache, write_frame)


# ---------------------------------------------------------------------------------------------------------------------
# Spatial tiling


@dataclass(frozen=True)
class _Tile:
    """One spatial tile: the input region it reads, the output region it writes and its blending weights there.

    `weight` [rows, columns] (output units) ramps linearly across the overlaps with the neighbouring tiles, so the
    weights of all tiles sum to one at every output position; None means the tile is the whole frame.
    """

    input_rows: slice
    input_columns: slice
    output_rows: slice
    output_columns: slice
    weight: torch.Tensor | None

    def read(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., self.input_rows, self.input_columns]

    def write(self, output: torch.Tensor, result: torch.Tensor) -> None:
        """Put `result` [B, C, T, rows, columns] into `output` [B, C, T, H, W] (weighted, when tiles overlap)."""
        region = output[..., self.output_rows, self.output_columns]
        if self.weight is None:
            region.copy_(result)
        else:
            region.addcmul_(result, self.weight.to(device=region.device, dtype=region.dtype))

    def frame_writer(self, output: torch.Tensor, patch_size: int = 1) -> Callable[[torch.Tensor], None]:
        """A function that writes the frames [B, C * p * p, 1, rows / p, columns / p] it is called with, in order and
        un-patchified (`patch_size` p), into `output`."""
        frame_indices = itertools.count()

        def write_frame(frame: torch.Tensor) -> None:
            # a slice rather than one of `output.split(...)`: autograd forbids writing into views made by split
            index = next(frame_indices)
            self.write(output[:, :, index : index + 1], unpatchify(frame, patch_size))

        return write_frame


def _tile_spans(length: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """[start, stop) of tiles of `tile` positions every `stride` positions, until the axis is covered."""
    spans = [(0, min(tile, length))]
    while spans[-1][1] < length:
        start = spans[-1][0] + stride
        spans.append((start, min(start + tile, length)))
    return spans


def _blend_ramp(length: int, overlap: int, rises: bool, falls: bool) -> torch.Tensor:
    """1-D weights of one tile: 0, 1/overlap, ... up across the overlap with the tile before, mirrored at the end.

    The tile after this one rises over exactly the positions where this one falls, so the two sum to one (the same
    weights as diffusers' `blend_v` / `blend_h`).
    """
    weight = torch.ones(length, dtype=torch.float64)
    ramp = torch.arange(overlap, dtype=torch.float64) / overlap
    if rises:
        weight[:overlap] = ramp
    if falls:
        weight[length - overlap :] = 1 - ramp
    return weight


def _plan_tiles(
    size: tuple[int, int], tile: tuple[int, int], stride: tuple[int, int], output_per_input: Fraction
) -> list[_Tile]:
    """Tiles covering an input of `size` (rows, columns); tile and stride are in input units, as is `size`."""
    per_axis = []
    for length, tile_length, tile_stride in zip(size, tile, stride):
        spans = _tile_spans(length, tile_length, tile_stride)
        overlap = int((tile_length - tile_stride) * output_per_input)
        axis = []
        for index, (start, stop) in enumerate(spans):
            output = slice(int(start * output_per_input), int(stop * output_per_input))
            ramp = _blend_ramp(output.stop - output.start, overlap, rises=index > 0, falls=index < len(spans) - 1)
            axis.append((slice(start, stop), output, ramp))
        per_axis.append(axis)
    rows, columns = per_axis
    if len(rows) == len(columns) == 1:
        return [_Tile(rows[0][0], columns[0][0], rows[0][1], columns[0][1], weight=None)]
    return [
        _Tile(in_rows, in_columns, out_rows, out_columns, weight=row_ramp[:, None] * column_ramp[None, :])
        for in_rows, out_rows, row_ramp in rows
        for in_columns, out_columns, column_ramp in columns
    ]


_TILING_ARGUMENTS = (
    "tile_sample_min_height",
    "tile_sample_min_width",
    "tile_sample_stride_height",
    "tile_sample_stride_width",
)


# ---------------------------------------------------------------------------------------------------------------------
# The model


class AutoencoderKLWan(ModelMixin, AutoencoderMixin, ConfigMixin, VAESingleFileMixin):
    r"""The Wan causal video VAE: videos [B, 3, 1 + 4k, H, W] <-> latents [B, z_dim, 1 + k, H/s, W/s].

    Wan 2.1 (the defaults): z_dim 16, s = 8. Wan 2.2 (TI2V-5B: `is_residual=True, patch_size=2, z_dim=48,
    in_channels=12, out_channels=12, scale_factor_spatial=16`, decoder wider than the encoder): s = 16.
    `encode` returns the posterior of the un-normalised latents; pipelines normalise them with `latents_mean` and
    `latents_std` (`(z - mean) / std`) and undo that before `decode`. Frame counts are 1 (an image) or 1 + 4k; height
    and width must be divisible by s. `enable_tiling()` processes large frames in overlapping spatial tiles that are
    blended linearly; `enable_slicing()` processes one video of a batch at a time.

    Args:
        base_dim (`int`, defaults to 96): width of the first encoder stage; stage widths are `base_dim * dim_mult`.
        decoder_base_dim (`int`, *optional*): the decoder's base width (its stage widths are `decoder_base_dim *
            dim_mult`, reversed); `base_dim` when not given.
        z_dim (`int`, defaults to 16): latent channels.
        dim_mult (`tuple[int]`, defaults to `(1, 2, 4, 4)`): width multipliers of the stages.
        num_res_blocks (`int`, defaults to 2): residual blocks per encoder stage (the decoder has one more).
        attn_scales (`tuple[float]`, defaults to `()`): attention outside the middle blocks; no released Wan VAE
            uses it and it is not supported.
        temperal_downsample (`tuple[bool]`, defaults to `(False, True, True)`): which encoder stages also halve the
            frame rate (the historical spelling is the Hub's config key); the decoder mirrors it.
        dropout (`float`, defaults to 0.0): dropout inside the residual blocks.
        latents_mean (`tuple[float]`): per-channel mean of the latents, for the pipelines (defaults: Wan 2.1 values).
        latents_std (`tuple[float]`): per-channel standard deviation of the latents (defaults: Wan 2.1 values).
        is_residual (`bool`, defaults to False): Wan 2.2 stages, one residual down / up block each with a
            parameter-free shortcut (`WanResidualDownBlock`, `WanResidualUpBlock`).
        in_channels (`int`, defaults to 3): input channels of the encoder, after the patchify (Wan 2.2: 12 = 3 x 2 x
            2); videos have `in_channels / patch_size**2` channels.
        out_channels (`int`, defaults to 3): output channels of the decoder, before the un-patchify.
        patch_size (`int`, *optional*): fold `patch_size` x `patch_size` pixels into channels before encoding and
            unfold them after decoding (Wan 2.2: 2); None or 1 for none.
        scale_factor_temporal (`int`, defaults to 4): frames per latent frame; must equal
            `2 ** sum(temperal_downsample)`.
        scale_factor_spatial (`int`, defaults to 8): pixels per latent pixel along H and W; must equal
            `patch_size * 2 ** (len(dim_mult) - 1)`.
    """

    _supports_gradient_checkpointing = False
    # what diffusers' group offloading moves as one unit
    _group_offload_block_modules = ["quant_conv", "post_quant_conv", "encoder", "decoder"]
    # keyword arguments accelerate's AlignDevicesHook and diffusers' group offloading must pass through untouched:
    # the cache is shared mutable state, updated in place by every causal convolution
    _skip_keys = ["cache"]

    @register_to_config
    def __init__(
        self,
        base_dim: int = 96,
        decoder_base_dim: int | None = None,
        z_dim: int = 16,
        dim_mult: tuple[int, ...] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        attn_scales: tuple[float, ...] = (),
        temperal_downsample: tuple[bool, ...] = (False, True, True),
        dropout: float = 0.0,
        latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN,
        latents_std: tuple[float, ...] = WAN21_LATENTS_STD,
        is_residual: bool = False,
        in_channels: int = 3,
        out_channels: int = 3,
        patch_size: int | None = None,
        scale_factor_temporal: int | None = 4,
        scale_factor_spatial: int | None = 8,
    ):
        super().__init__()
        patch = 1 if patch_size is None else patch_size
        if not isinstance(patch, int) or patch < 1:
            raise ValueError(f"`patch_size` must be None or a positive integer, got {patch_size!r}")
        if in_channels % (patch * patch) or out_channels % (patch * patch):
            raise ValueError(
                f"`in_channels` and `out_channels` count channels after the patchify, so they must be multiples of "
                f"`patch_size`**2 = {patch * patch}, got {in_channels} and {out_channels}"
            )
        if attn_scales:
            raise NotImplementedError(
                f"Attention outside the middle blocks is not supported (no released Wan VAE uses it): `attn_scales` "
                f"must be empty, got {list(attn_scales)}"
            )
        if len(temperal_downsample) != len(dim_mult) - 1:
            raise ValueError(
                f"`temperal_downsample` needs one entry per downsampling stage ({len(dim_mult) - 1} for "
                f"`dim_mult`={list(dim_mult)}), got {list(temperal_downsample)}"
            )
        temporal_factor, spatial_factor = 2 ** sum(temperal_downsample), patch * 2 ** (len(dim_mult) - 1)
        if scale_factor_temporal not in (None, temporal_factor) or scale_factor_spatial not in (None, spatial_factor):
            raise ValueError(
                f"`scale_factor_temporal` and `scale_factor_spatial` must match the architecture "
                f"({temporal_factor} and {spatial_factor}: `temperal_downsample`, `dim_mult` and `patch_size`), got "
                f"{scale_factor_temporal} and {scale_factor_spatial}"
            )

        # store lists, as config.json does, so that a saved and reloaded model has an identical config
        self.register_to_config(
            dim_mult=list(dim_mult),
            attn_scales=list(attn_scales),
            temperal_downsample=list(temperal_downsample),
            latents_mean=list(latents_mean),
            latents_std=list(latents_std),
        )

        self.z_dim = z_dim
        # attribute names diffusers' pipelines read (WanVACEPipeline derives its scale factors from them)
        self.temperal_downsample = list(temperal_downsample)
        self.temperal_upsample = self.temperal_downsample[::-1]
        self.temporal_compression_ratio = temporal_factor
        self.spatial_compression_ratio = spatial_factor
        self.patch = patch
        self.video_channels = in_channels // (patch * patch), out_channels // (patch * patch)  # encoded, decoded

        self.encoder = WanEncoder3d(
            in_channels, 2 * z_dim, base_dim, dim_mult, num_res_blocks, temperal_downsample, dropout, is_residual
        )
        self.quant_conv = WanCausalConv3d(2 * z_dim, 2 * z_dim, 1)  # -> posterior mean | log-variance
        self.post_quant_conv = WanCausalConv3d(z_dim, z_dim, 1)
        self.decoder = WanDecoder3d(
            z_dim,
            out_channels,
            decoder_base_dim or base_dim,
            dim_mult,
            num_res_blocks,
            self.temperal_upsample,
            dropout,
            is_residual,
        )
        # bit-identical to the chunked computation on the CPU (the section "The CPU convolution algorithm" above)
        apply_chunked_convolution_algorithm(self)

        self.use_slicing = False
        self.use_tiling = False
        # diffusers' defaults: 256x256-pixel tiles every 192 pixels, i.e. 64 pixels (8 latent rows) of overlap
        self.tile_sample_min_height = 256
        self.tile_sample_min_width = 256
        self.tile_sample_stride_height = 192
        self.tile_sample_stride_width = 192

    def enable_tiling(
        self,
        tile_sample_min_height: int | None = None,
        tile_sample_min_width: int | None = None,
        tile_sample_stride_height: int | None = None,
        tile_sample_stride_width: int | None = None,
    ) -> None:
        r"""Encode and decode frames larger than one tile in overlapping spatial tiles, blended linearly.

        Each tile runs through the whole video (with its own cache), so memory holds the output plus one tile's
        activations. Sizes are in pixels of the video and must be divisible by `spatial_compression_ratio` (8, or 16
        for Wan 2.2); frames no larger than a tile are
        processed whole, exactly as without tiling.

        Args:
            tile_sample_min_height (`int`, *optional*): tile height in pixels (default 256).
            tile_sample_min_width (`int`, *optional*): tile width in pixels (default 256).
            tile_sample_stride_height (`int`, *optional*): vertical distance between tiles (default 192); tiles overlap
                by `tile_sample_min_height - tile_sample_stride_height`, which must not exceed the stride.
            tile_sample_stride_width (`int`, *optional*): horizontal distance between tiles (default 192).
        """
        tile = (
            tile_sample_min_height or self.tile_sample_min_height,
            tile_sample_min_width or self.tile_sample_min_width,
        )
        stride = (
            tile_sample_stride_height or self.tile_sample_stride_height,
            tile_sample_stride_width or self.tile_sample_stride_width,
        )
        self._check_tiling(tile, stride)
        self.tile_sample_min_height, self.tile_sample_min_width = tile
        self.tile_sample_stride_height, self.tile_sample_stride_width = stride
        super().enable_tiling()

    # -- encoding -------------------------------------------------------------------------------------------------

    @apply_forward_hook
    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        r"""Encode videos into the posterior over (un-normalised) latents.

        Args:
            x (`torch.Tensor`): videos [B, 3, 1 + 4k, H, W] in [-1, 1], H and W divisible by
                `spatial_compression_ratio` s (8 for Wan 2.1, 16 for Wan 2.2).
            return_dict (`bool`, defaults to True): return an `AutoencoderKLOutput` instead of a tuple.

        Returns:
            `AutoencoderKLOutput(latent_dist)` (or `(latent_dist,)`), a `DiagonalGaussianDistribution` over latents
            [B, z_dim, 1 + k, H/s, W/s].
        """
        self._check_video(x, "x")
        batch, _, frames, height, width = x.shape
        tiles = self._spatial_tiles((height, width), decoding=False)
        shape = (batch, 2 * self.z_dim, self._latent_frames(frames), *self._latent_size(height, width))
        moments = x.new_zeros(shape) if len(tiles) > 1 else x.new_empty(shape)  # tiles add up their shares
        for batch_slice in self._batch_slices(batch):
            self._encode_into(x[batch_slice], moments[batch_slice], tiles)
        posterior = DiagonalGaussianDistribution(self.quant_conv(moments))
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def _encode_into(self, x: torch.Tensor, moments: torch.Tensor, tiles: list[_Tile]) -> None:
        """Stream `x` [B, C, T, H, W] through the encoder, tile by tile, into `moments` [B, 2*z_dim, T', H/s, W/s].

        Each chunk of a tile is patchified on its own (Wan 2.2), so no patchified copy of the whole video exists.
        """
        for tile in tiles:
            cache = CausalConvCache()
            for latent_index, frames in enumerate(self._encoder_chunks(x.shape[2])):
                cache.is_first_chunk = latent_index == 0
                chunk = patchify(tile.read(x[:, :, frames]), self.patch)
                latent = self.encoder(chunk, cache=cache)  # [B, 2*z_dim, 1, h, w]
                tile.write(moments[:, :, latent_index : latent_index + 1], latent)

    def _encoder_chunks(self, num_frames: int) -> list[slice]:
        """The first frame alone, then chunks of `temporal_compression_ratio` (4) frames: one latent frame each."""
        step = self.temporal_compression_ratio
        return [slice(0, 1)] + [slice(start, start + step) for start in range(1, num_frames, step)]

    # -- decoding -------------------------------------------------------------------------------------------------

    @apply_forward_hook
    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple:
        r"""Decode (un-normalised) latents into videos, clamped to [-1, 1].

        Args:
            z (`torch.Tensor`): latents [B, z_dim, T, h, w].
            return_dict (`bool`, defaults to True): return a `DecoderOutput` instead of a tuple.

        Returns:
            `DecoderOutput(sample)` (or `(sample,)`): videos [B, 3, 1 + 4(T - 1), s*h, s*w], s =
            `spatial_compression_ratio` (8 for Wan 2.1, 16 for Wan 2.2).
        """
        self._check_latents(z, "z")
        batch, _, latent_frames, latent_height, latent_width = z.shape
        z = self.post_quant_conv(z)  # 1x1x1: cheap on the whole latent, as in the original
        tiles = self._spatial_tiles((latent_height, latent_width), decoding=True)
        frames = 1 + self.temporal_compression_ratio * (latent_frames - 1)
        shape = (batch, self.video_channels[1], frames, *self._sample_size(latent_height, latent_width))
        video = z.new_zeros(shape) if len(tiles) > 1 else z.new_empty(shape)  # tiles add up their shares
        for batch_slice in self._batch_slices(batch):
            self._decode_into(z[batch_slice], video[batch_slice], tiles)
        video.clamp_(-1.0, 1.0)
        return DecoderOutput(sample=video) if return_dict else (video,)

    def _decode_into(self, z: torch.Tensor, video: torch.Tensor, tiles: list[_Tile]) -> None:
        """Stream `z` [B, z_dim, T, h, w] through the decoder, tile by tile and one latent frame at a time.

        The decoder hands over each frame as soon as it is finished (1 for the first latent frame, then 4 per latent
        frame), and it goes, un-patchified (Wan 2.2), straight into the next frame of `video`: no chunk of frames is
        ever assembled.
        """
        for tile in tiles:
            cache = CausalConvCache()
            write_frame = tile.frame_writer(video, patch_size=self.patch)
            for latent_index in range(z.shape[2]):
                cache.is_first_chunk = latent_index == 0
                latent = tile.read(z[:, :, latent_index : latent_index + 1])
                self.decoder(latent, cache=cache, write_frame=write_frame)

    # -- forward --------------------------------------------------------------------------------------------------

    def forward(
        self,
        sample: torch.Tensor,
        sample_posterior: bool = False,
        return_dict: bool = True,
        generator: torch.Generator | None = None,
    ) -> DecoderOutput | tuple:
        r"""Encode and decode `sample`.

        Args:
            sample (`torch.Tensor`): videos [B, 3, 1 + 4k, H, W] in [-1, 1].
            sample_posterior (`bool`, defaults to False): decode a sample of the posterior instead of its mode.
            return_dict (`bool`, defaults to True): return a `DecoderOutput` instead of a tuple.
            generator (`torch.Generator`, *optional*): random generator for `sample_posterior`.
        """
        self._check_video(sample, "sample")
        posterior = self.encode(sample).latent_dist
        z = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        return self.decode(z, return_dict=return_dict)

    # -- helpers --------------------------------------------------------------------------------------------------

    def _batch_slices(self, batch: int) -> list[slice]:
        return [slice(index, index + 1) for index in range(batch)] if self.use_slicing else [slice(0, batch)]

    def _latent_frames(self, frames: int) -> int:
        return 1 + (frames - 1) // self.temporal_compression_ratio

    def _latent_size(self, height: int, width: int) -> tuple[int, int]:
        return height // self.spatial_compression_ratio, width // self.spatial_compression_ratio

    def _sample_size(self, latent_height: int, latent_width: int) -> tuple[int, int]:
        return latent_height * self.spatial_compression_ratio, latent_width * self.spatial_compression_ratio

    def _spatial_tiles(self, size: tuple[int, int], decoding: bool) -> list[_Tile]:
        """The tiles of an input frame of `size`: pixels when encoding, latent pixels when decoding.

        A single tile covering the whole frame (weight None) without tiling or when the frame fits in one tile.
        """
        factor = self.spatial_compression_ratio
        output_per_input = Fraction(factor) if decoding else Fraction(1, factor)
        if not self.use_tiling:
            return _plan_tiles(size, tile=size, stride=size, output_per_input=output_per_input)
        tile = (self.tile_sample_min_height, self.tile_sample_min_width)
        stride = (self.tile_sample_stride_height, self.tile_sample_stride_width)
        self._check_tiling(tile, stride)  # the attributes may also have been set directly
        if decoding:  # the tile sizes are given in pixels; the latent is what gets tiled
            tile = (tile[0] // factor, tile[1] // factor)
            stride = (stride[0] // factor, stride[1] // factor)
        return _plan_tiles(size, tile, stride, output_per_input)

    def _check_tiling(self, tile: tuple[int, int], stride: tuple[int, int]) -> None:
        factor = self.spatial_compression_ratio
        for name, value in zip(_TILING_ARGUMENTS, (*tile, *stride)):
            if not isinstance(value, int) or value <= 0 or value % factor:
                raise ValueError(f"`{name}` must be a positive multiple of {factor}, got {value!r}")
        for axis, tile_length, tile_stride in zip(("height", "width"), tile, stride):
            if not tile_length / 2 <= tile_stride <= tile_length:
                raise ValueError(
                    f"`tile_sample_stride_{axis}` must lie between half the tile and the tile "
                    f"(`tile_sample_min_{axis}`={tile_length}), so that only neighbouring tiles overlap; "
                    f"got {tile_stride}"
                )

    def _check_video(self, x: torch.Tensor, name: str) -> None:
        channels, factor = self.video_channels[0], self.spatial_compression_ratio
        if not isinstance(x, torch.Tensor) or x.ndim != 5:
            received = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"`{name}` must be a video tensor [batch, {channels}, frames, height, width], got {received}"
            )
        if x.shape[1] != channels:
            raise ValueError(f"`{name}` must have {channels} channels (dim 1), got shape {tuple(x.shape)}")
        step = self.temporal_compression_ratio
        if (x.shape[2] - 1) % step:
            raise ValueError(
                f"`{name}` must have 1 + {step}k frames (1, {1 + step}, {1 + 2 * step}, ...), got {x.shape[2]}"
            )
        if x.shape[3] % factor or x.shape[4] % factor or min(x.shape[3:]) == 0:
            raise ValueError(
                f"The height and width of `{name}` must be positive multiples of {factor}, got {x.shape[3]} and "
                f"{x.shape[4]}"
            )

    def _check_latents(self, z: torch.Tensor, name: str) -> None:
        if not isinstance(z, torch.Tensor) or z.ndim != 5 or z.shape[1] != self.z_dim or z.shape[2] == 0:
            received = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(
                f"`{name}` must be latents [batch, {self.z_dim}, latent_frames >= 1, height, width], got {received}"
            )
