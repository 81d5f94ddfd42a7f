"""Image-to-video conditioning, prepared exactly as the original `WanI2V.generate` / `WanFLF2V.generate`
(`wan/image2video.py`, `wan/first_last_frame2video.py`) and `CLIPModel.visual` (`wan/modules/clip.py`).

- The image becomes a float32 tensor in [-1, 1] the torchvision way (`uint8 / 255`, then `(x - 0.5) / 0.5`).
- Without an explicit size, the video size follows from `max_area` and the image's aspect ratio by the original
  float64 expression, so a 832 x 480 image at `max_area = 480 * 832` gives 464 x 832, as the original does.
- The VAE sees the image resized with `torch.nn.functional.interpolate(mode="bicubic")`: no antialiasing, no crop, no
  clamp. diffusers uses PIL Lanczos to the requested size, which changes the condition by 40-71 % on the fixtures.
- CLIP sees the *full-size* image squashed to its square input size with the same bicubic interpolation, then
  normalised with the OpenAI constants. diffusers' `CLIPImageProcessor` (short side, centre crop, antialiased PIL
  resize) changes the image features by more than 100 %.
- FLF2V: a last frame of another size than the first is scaled to cover the first frame's size, keeping its aspect
  ratio, and centre-cropped to it (`fit_to_size`). That is what the original's `WanFLF2V.generate` sets out to do;
  its code computes the scale but then only centre-crops, with the width and height swapped, so this case has no
  original output to match.
- Wan 2.2 TI2V-5B (`WanTI2V.i2v`) sizes the video with `best_output_size` (multiples of 32), scales the image with
  PIL LANCZOS to cover that size and centre-crops it (`cover_and_crop_lanczos`); diffusers resizes it to the given
  size without keeping the aspect ratio (46 % off on the fixtures' latent).
- The mask has 4 channels per latent frame: frame 0 is repeated 4 times in front of the pixel-frame mask, which is
  then folded into groups of 4 (`vae_scale_factor_temporal`).
"""

import math

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from .checks import check_finite_tensor

# OpenAI CLIP normalisation, which the original applies for its open-clip ViT-H/14 (`_clip` in `wan/modules/clip.py`);
# the converter writes it into `image_processor/preprocessor_config.json` too.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

IMAGE_TYPES = "a PIL.Image.Image, a numpy array [H, W, 3] (uint8, or float in [0, 1]) or a torch.Tensor [3, H, W]"


def image_to_tensor(image, name: str = "image") -> torch.Tensor:
    """An RGB image as a float32 tensor [3, H, W] in [-1, 1], computed as the original's `TF.to_tensor` + shift.

    Accepts a `PIL.Image.Image` (converted to RGB), a numpy array [H, W, 3] (uint8, or float in [0, 1]), or a tensor
    [3, H, W] or [1, 3, H, W] (uint8, or float in [0, 1]). Anything else raises a ValueError naming `name`.
    """
    if isinstance(image, PIL.Image.Image):
        tensor = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    elif isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"`{name}` as a numpy array must have shape [H, W, 3], got {list(image.shape)}")
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        tensor = image[0] if image.ndim == 4 and image.shape[0] == 1 else image
        if tensor.ndim != 3 or tensor.shape[0] != 3:
            raise ValueError(
                f"`{name}` as a tensor must have shape [3, H, W] or [1, 3, H, W], got {list(image.shape)}"
            )
        tensor = tensor.detach().cpu()
    else:
        raise ValueError(f"`{name}` must be {IMAGE_TYPES}, got {type(image).__name__}")

    if tensor.dtype == torch.uint8:
        tensor = tensor.contiguous().to(torch.float32).div(255)
    elif tensor.is_floating_point():
        check_finite_tensor(name, tensor)
        low, high = tensor.min().item(), tensor.max().item()
        if low < 0 or high > 1:
            raise ValueError(
                f"`{name}` with floating-point values must be in [0, 1], got values in [{low:.3g}, {high:.3g}]"
            )
        tensor = tensor.to(torch.float32)
    else:
        raise ValueError(f"`{name}` must hold uint8 or floating-point values, got {tensor.dtype}")
    return tensor.sub(0.5).div(0.5)


def size_from_max_area(
    image_height: int, image_width: int, max_area: int, spatial_scale: int = 8, patch_size: int = 2
) -> tuple[int, int]:
    """The original's video size (height, width) for an image and a pixel budget.

    `lat = round(sqrt(max_area * aspect) // spatial_scale // patch_size * patch_size)` per axis, in float64 and with
    the floor divisions exactly as written (`wan/image2video.py`); the size is `spatial_scale * lat`.
    """
    aspect_ratio = image_height / image_width
    latent_height = round(math.sqrt(max_area * aspect_ratio) // spatial_scale // patch_size * patch_size)
    latent_width = round(math.sqrt(max_area / aspect_ratio) // spatial_scale // patch_size * patch_size)
    if latent_height < 1 or latent_width < 1:
        raise ValueError(
            f"`max_area` {max_area} is too small for a {image_height}x{image_width} image: it gives a "
            f"{latent_height * spatial_scale}x{latent_width * spatial_scale} video; use at least "
            f"{(spatial_scale * patch_size) ** 2 * max(aspect_ratio, 1 / aspect_ratio):.0f}"
        )
    return latent_height * spatial_scale, latent_width * spatial_scale


def resize_bicubic(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[C, H, W] -> [C, height, width] with torch's bicubic interpolation (align_corners False, no antialias)."""
    return F.interpolate(image[None], size=(height, width), mode="bicubic", align_corners=False)[0]


def fit_to_size(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[C, H, W] -> [C, height, width]: bicubic scaling to cover the target (aspect ratio kept), then a centre crop."""
    if tuple(image.shape[1:]) == (height, width):
        return image
    scale = max(height / image.shape[1], width / image.shape[2])
    covering = resize_bicubic(
        image, max(height, round(image.shape[1] * scale)), max(width, round(image.shape[2] * scale))
    )
    top, left = (covering.shape[1] - height) // 2, (covering.shape[2] - width) // 2
    return covering[:, top : top + height, left : left + width]


def best_output_size(image_height: int, image_width: int, max_area: int, multiple: int) -> tuple[int, int]:
    """Wan 2.2 TI2V's video size (height, width) for an image: multiples of `multiple` (32 = VAE stride 16 x patch
    2) within `max_area` pixels, as the original's `best_output_size` (`wan/utils/utils.py`) computes it.

    It rounds the ideal float size down width-first and height-first, and keeps the one whose aspect ratio is closer
    to the image's (the height-first one on a tie).
    """
    ratio = image_width / image_height
    ideal_width = (max_area * ratio) ** 0.5
    ideal_height = max_area / ideal_width
    candidates = []
    width = int(ideal_width // multiple * multiple)
    if width > 0:
        candidates.append((int(max_area / width // multiple * multiple), width))
    height = int(ideal_height // multiple * multiple)
    if height > 0:
        candidates.append((height, int(max_area / height // multiple * multiple)))
    candidates = [(h, w) for h, w in candidates if h > 0 and w > 0]
    if not candidates:
        raise ValueError(
            f"`max_area` {max_area} is too small for a {image_height}x{image_width} image: the video size must be "
            f"multiples of {multiple}; use at least {multiple * multiple * max(ratio, 1 / ratio):.0f}"
        )
    return min(reversed(candidates), key=lambda size: max(ratio / (size[1] / size[0]), size[1] / size[0] / ratio))


def cover_and_crop_lanczos(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[3, H, W] in [-1, 1] -> [3, height, width] in [-1, 1], as Wan 2.2's `WanTI2V.i2v` prepares its image: a PIL
    LANCZOS resize by `max(width / W, height / H)` (sizes rounded) so that it covers the target, then a centre crop.

    The image goes through 8-bit RGB for PIL (exact for images given as uint8 or PIL, rounded for float images).
    """
    pixels = image.mul(0.5).add(0.5).mul(255).round().clamp(0, 255).to(torch.uint8)
    picture = PIL.Image.fromarray(pixels.permute(1, 2, 0).numpy())
    scale = max(width / picture.width, height / picture.height)
    picture = picture.resize((round(picture.width * scale), round(picture.height * scale)), PIL.Image.LANCZOS)
    left, top = (picture.width - width) // 2, (picture.height - height) // 2
    picture = picture.crop((left, top, left + width, top + height))
    return image_to_tensor(picture)


def clip_pixel_values(images: list[torch.Tensor], image_size: int) -> torch.Tensor:
    """CLIP input [N, 3, image_size, image_size] from images [3, H, W] in [-1, 1], as the original `CLIPModel.visual`.

    Each whole image is squashed to a square (aspect ratio not kept, nothing cropped), mapped back to [0, 1] and
    normalised with the OpenAI mean and std.
    """
    squashed = torch.cat(
        [
            F.interpolate(image[None], size=(image_size, image_size), mode="bicubic", align_corners=False)
            for image in images
        ]
    )
    mean = torch.tensor(CLIP_MEAN, dtype=squashed.dtype).view(-1, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=squashed.dtype).view(-1, 1, 1)
    return (squashed.mul(0.5).add(0.5) - mean) / std


def condition_mask(
    num_frames: int, latent_height: int, latent_width: int, last_frame: bool = False, temporal_scale: int = 4
) -> torch.Tensor:
    """The I2V / FLF2V mask channels [temporal_scale, latent_frames, latent_height, latent_width].

    Pixel frame 0 is known (and, for FLF2V, the last pixel frame). Frame 0 is repeated `temporal_scale` times in front
    so that the `num_frames + temporal_scale - 1` frames fold into groups of `temporal_scale`: latent frame 0 has all
    channels set, and channel j of latent frame k >= 1 belongs to pixel frame `temporal_scale * (k - 1) + 1 + j`.
    """
    known = torch.zeros(num_frames, latent_height, latent_width)
    known[0] = 1
    if last_frame:
        known[-1] = 1
    known = torch.cat([known[:1].expand(temporal_scale - 1, -1, -1), known])
    known = known.view(-1, temporal_scale, latent_height, latent_width)  # [latent_frames, 4, h, w]
    return known.transpose(0, 1).contiguous()
