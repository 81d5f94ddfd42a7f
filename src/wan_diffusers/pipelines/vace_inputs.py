"""VACE conditioning, built exactly as the original `WanVace` builds it (`prepare_source`, `vace_encode_frames`,
`vace_encode_masks` in `wan/vace.py`).

The DiT's control input (`vace_context`, 96 channels per latent position) is `cat(z0, m0)`:

- `z0` (32 channels): the source frames split by the **binarised** mask (`> 0.5`) into an inactive part
  `frames * (1 - m)` (kept) and a reactive part `frames * m` (to regenerate), each VAE-encoded to normalised latents
  (16 + 16). Each reference image is encoded on its own into one latent frame, zero-padded to 32 channels, and the
  references are put in front in time **in the given order** (reference 0 first). diffusers prepends them one at a
  time, which reverses the order of two or more references (53 % different `z0` on the parity fixture).
- `m0` (64 channels): the **raw** mask (not thresholded): every 8 x 8 pixel block becomes 64 channels
  (channel = 8 * row offset + column offset), the time axis is resized to the latent frame count with
  `nearest-exact`, and one zero frame per reference is put in front.

Mask convention: 1 (white) = generate, 0 (black) = keep. Without a video the source is all zeros with an all-ones
mask (plain text-to-video); a video without a mask is a control signal (depth, pose, edges...) with an all-ones mask.
Frames of another size are resized the original's way (cover the target size, bicubic with antialiasing, centre
crop); reference images of another size are fitted into a white canvas (bilinear, `int()` sizes, centred).
"""

from collections.abc import Callable, Sequence

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from .image_processing import image_to_tensor


def video_to_tensor(video, name: str = "video") -> torch.Tensor:
    """Source or control frames -> float32 [3, F, H, W] in [-1, 1], at their own size.

    `video` is a list of frames (each a PIL image, a numpy array [H, W, 3] or a tensor [3, H, W], uint8 or float in
    [0, 1]), or a numpy array [F, H, W, 3] / tensor [F, 3, H, W] holding them.
    """
    frames = [image_to_tensor(frame, f"{name}[{index}]") for index, frame in enumerate(_frame_list(video, name, 4))]
    _check_same_size(frames, name)
    return torch.stack(frames, dim=1)


def mask_to_tensor(mask, name: str = "mask") -> torch.Tensor:
    """Mask frames -> float32 [1, F, H, W] in [0, 1] (1 = generate, 0 = keep), at their own size.

    `mask` is a list of frames (each a PIL image in any mode, a numpy array [H, W] or [H, W, C], or a tensor [H, W]
    or [C, H, W]; uint8, bool, or float in [0, 1]), or an array / tensor [F, ...] holding them. As the original
    reads a mask video, only the first channel (red, or the grey level) counts.
    """
    frames = [
        _mask_frame_to_tensor(frame, f"{name}[{index}]") for index, frame in enumerate(_frame_list(mask, name, 3))
    ]
    _check_same_size(frames, name)
    return torch.stack(frames)[None]


def resize_to_cover(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[C, F, h, w] -> [C, F, height, width]: scale to cover the target (bicubic, antialiased), crop the centre.

    This is the original `VaceVideoProcessor.resize_crop`; frames of the target size pass unchanged. (For a mask,
    clamp the result to [0, 1] afterwards, as the original does.)
    """
    frame_height, frame_width = frames.shape[-2:]
    if (frame_height, frame_width) == (height, width):
        return frames
    scale = max(width / frame_width, height / frame_height)
    size = (round(scale * frame_height), round(scale * frame_width))
    resized = F.interpolate(frames.transpose(0, 1), size=size, mode="bicubic", antialias=True).transpose(0, 1)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    return resized[..., top : top + height, left : left + width].contiguous()


def reference_on_canvas(image, height: int, width: int, name: str = "reference_images") -> torch.Tensor:
    """A reference image -> float32 [3, 1, height, width] in [-1, 1].

    An image of another size is scaled by `min(height / h, width / w)` (bilinear, sizes truncated with `int()`) and
    pasted in the centre of a white canvas, as the original `prepare_source` does.
    """
    image = image_to_tensor(image, name)
    image_height, image_width = image.shape[-2:]
    if (image_height, image_width) == (height, width):
        return image[:, None]
    scale = min(height / image_height, width / image_width)
    new_height, new_width = int(image_height * scale), int(image_width * scale)
    resized = F.interpolate(image[None], size=(new_height, new_width), mode="bilinear", align_corners=False)[0]
    canvas = torch.ones(3, height, width)
    top, left = (height - new_height) // 2, (width - new_width) // 2
    canvas[:, top : top + new_height, left : left + new_width] = resized
    return canvas[:, None]


def reference_image_list(reference_images, name: str = "reference_images") -> list:
    """`None`, one image, a list of images, or (as diffusers accepts) a list of one such list per prompt -> a list of
    images (in the given order). Every video of a call shares one set of references, so the lists per prompt must
    be equal."""
    if reference_images is None:
        return []
    if not isinstance(reference_images, (list, tuple)):
        return [reference_images]
    nested = [isinstance(images, (list, tuple)) for images in reference_images]
    if not any(nested):
        return list(reference_images)
    if not all(nested):
        raise ValueError(
            f"`{name}` must be one image, a list of images, or a list of one list of images per prompt, got a list "
            "that mixes images and lists"
        )
    first = list(reference_images[0])
    for index, images in enumerate(reference_images[1:], start=1):
        if len(images) != len(first) or any(image is not other for image, other in zip(images, first)):
            raise ValueError(
                f"`{name}`: every video of a call shares one set of references, but `{name}[{index}]` differs from "
                f"`{name}[0]`; pass one list of images, or make one call per set of references"
            )
    for index, image in enumerate(first):
        if isinstance(image, (list, tuple)):
            raise ValueError(f"`{name}` nests lists more than two deep (at `{name}[0][{index}]`)")
    return first


def vace_frame_latents(
    encode: Callable[[torch.Tensor], torch.Tensor],
    frames: torch.Tensor,
    mask: torch.Tensor,
    references: Sequence[torch.Tensor] = (),
) -> torch.Tensor:
    """`z0` of the original `vace_encode_frames`: [32, n_ref + T, h, w].

    Args:
        encode: pixels [1, 3, F, H, W] in [-1, 1] -> normalised VAE latents [1, 16, T, h, w].
        frames: [3, F, H, W] in [-1, 1].
        mask: [1, F, H, W] in [0, 1]; thresholded at 0.5 here.
        references: each [3, 1, H, W] in [-1, 1], in order.
    """
    binary_mask = torch.where(mask > 0.5, 1.0, 0.0).to(frames.dtype)
    inactive = encode((frames * (1 - binary_mask))[None])[0]
    reactive = encode((frames * binary_mask)[None])[0]
    latents = torch.cat([inactive, reactive])  # [32, T, h, w]
    reference_latents = []
    for reference in references:
        latent = encode(reference[None])[0]  # [16, 1, h, w]
        reference_latents.append(torch.cat([latent, torch.zeros_like(latent)]))
    return torch.cat([*reference_latents, latents], dim=1)


def vace_mask_channels(
    mask: torch.Tensor, num_references: int = 0, spatial_scale: int = 8, temporal_scale: int = 4
) -> torch.Tensor:
    """`m0` of the original `vace_encode_masks`: [spatial_scale ** 2, n_ref + T, H / s, W / s].

    The raw mask [1, F, H, W] is folded space-to-depth (channel = s * row offset + column offset), resized in time to
    `(F + temporal_scale - 1) // temporal_scale` frames with `nearest-exact`, and preceded by one zero frame per
    reference image.
    """
    _, num_frames, height, width = mask.shape
    if height % spatial_scale or width % spatial_scale:
        raise ValueError(
            f"`mask` height and width must be multiples of {spatial_scale} (the VAE stride), got {height}x{width}"
        )
    latent_height, latent_width = height // spatial_scale, width // spatial_scale
    channels = mask[0].reshape(num_frames, latent_height, spatial_scale, latent_width, spatial_scale)
    channels = channels.permute(2, 4, 0, 1, 3).reshape(spatial_scale**2, num_frames, latent_height, latent_width)
    latent_frames = (num_frames + temporal_scale - 1) // temporal_scale
    channels = F.interpolate(channels[None], size=(latent_frames, latent_height, latent_width), mode="nearest-exact")
    channels = channels[0]
    padding = channels.new_zeros(spatial_scale**2, num_references, latent_height, latent_width)
    return torch.cat([padding, channels], dim=1)


def vace_context(
    encode: Callable[[torch.Tensor], torch.Tensor],
    frames: torch.Tensor,
    mask: torch.Tensor,
    references: Sequence[torch.Tensor] = (),
    spatial_scale: int = 8,
    temporal_scale: int = 4,
) -> torch.Tensor:
    """The DiT's control input [32 + s * s, n_ref + T, h, w] = `cat(z0, m0)` (see the module docstring)."""
    latents = vace_frame_latents(encode, frames, mask, references)
    mask_channels = vace_mask_channels(mask, len(references), spatial_scale, temporal_scale)
    return torch.cat([latents, mask_channels.to(latents)])


# ---------------------------------------------------------------------------------------------------------------------
# helpers


def _frame_list(frames, name: str, min_ndim: int) -> list:
    """A list of frames, or an array / tensor (at least `min_ndim` dimensions) with frames on its first axis."""
    if isinstance(frames, (np.ndarray, torch.Tensor)) and frames.ndim >= min_ndim:
        frames = list(frames)
    if not isinstance(frames, (list, tuple)) or not frames:
        raise ValueError(
            f"`{name}` must be a non-empty list of frames (or an array / tensor with frames on its first axis), got "
            f"{type(frames).__name__}"
        )
    return list(frames)


def _mask_frame_to_tensor(frame, name: str) -> torch.Tensor:
    """One mask frame -> float32 [H, W] in [0, 1], from its first channel."""
    if isinstance(frame, PIL.Image.Image):
        tensor = torch.from_numpy(np.array(frame.convert("RGB"))[..., 0])
    elif isinstance(frame, np.ndarray) and frame.ndim in (2, 3):
        tensor = torch.from_numpy(np.ascontiguousarray(frame if frame.ndim == 2 else frame[..., 0]))
    elif isinstance(frame, torch.Tensor) and frame.ndim in (2, 3):
        tensor = (frame if frame.ndim == 2 else frame[0]).detach().cpu()
    else:
        shape = f" of shape {list(frame.shape)}" if isinstance(frame, (np.ndarray, torch.Tensor)) else ""
        raise ValueError(
            f"`{name}` must be a PIL image, a numpy array [H, W] or [H, W, C], or a tensor [H, W] or [C, H, W], got "
            f"{type(frame).__name__}{shape}"
        )
    if tensor.dtype == torch.uint8:
        return tensor.float().div(255)
    if tensor.dtype == torch.bool:
        return tensor.float()
    if not tensor.is_floating_point():
        raise ValueError(f"`{name}` must hold uint8, bool or floating-point values, got {tensor.dtype}")
    low, high = tensor.min().item(), tensor.max().item()
    if low < 0 or high > 1:
        raise ValueError(
            f"`{name}` with floating-point values must be in [0, 1], got values in [{low:.3g}, {high:.3g}]"
        )
    return tensor.float()


def _check_same_size(frames: list[torch.Tensor], name: str) -> None:
    sizes = {tuple(frame.shape[-2:]) for frame in frames}
    if len(sizes) > 1:
        raise ValueError(f"all frames of `{name}` must have the same size, got sizes {sorted(sizes)}")
