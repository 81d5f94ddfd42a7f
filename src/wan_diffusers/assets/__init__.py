"""Model files shipped inside the package: the tiny shapes pipeline and its cyan LoRA.

The tiny shapes pipeline (about 1.8 MB) is a real Wan 2.1 text-to-video model trained on this package's moving-shapes
dataset (`wan_diffusers.training.shapes`) by `scripts/train_tiny_shapes.py`: prompts of the form
`a {colour} {shape} moves {direction}` (red, green, blue, yellow, white; circle, square, triangle; left, right, up,
down) give 64 x 64, 17-frame videos of that shape moving that way. It runs offline on a CPU in seconds and is the
default model of `wan-diffusers generate` when `--model` is not given.
"""

from pathlib import Path

_HERE = Path(__file__).parent


def tiny_model_path() -> Path:
    """The folder of the tiny shapes pipeline, in the Hub format (load it with `from_pretrained`).

    Example:
    ```py
    >>> import torch
    >>> from wan_diffusers import WanPipeline, tiny_model_path

    >>> pipe = WanPipeline.from_pretrained(tiny_model_path())
    >>> video = pipe("a red circle moves right", height=64, width=64, num_frames=17, num_inference_steps=20,
    ...              generator=torch.Generator().manual_seed(0)).frames[0]
    ```
    """
    return _HERE / "tiny_shapes"


def tiny_lora_path() -> Path:
    """The folder of a LoRA for the tiny shapes pipeline that teaches it a new colour, cyan
    (`pipe.load_lora_weights(tiny_lora_path())`); `lora_comfyui.safetensors` in it has the original key format."""
    return _HERE / "tiny_shapes_cyan_lora"
