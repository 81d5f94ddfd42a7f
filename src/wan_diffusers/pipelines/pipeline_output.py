"""What every Wan pipeline returns."""

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput


@dataclass
class WanPipelineOutput(BaseOutput):
    r"""
    Output of the Wan pipelines.

    Args:
        frames (`np.ndarray`, `torch.Tensor` or `list[list[PIL.Image.Image]]`):
            One video per generated sample: `output_type="np"` gives an array [B, F, H, W, 3] in [0, 1], `"pt"` a
            tensor [B, F, 3, H, W] in [0, 1], `"pil"` a list of B lists of F images, and `"latent"` the normalised
            latents [B, 16, (F - 1) / 4 + 1, H / 8, W / 8].
    """

    frames: np.ndarray | torch.Tensor | list[list[PIL.Image.Image]]
