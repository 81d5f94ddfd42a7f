"""Model files shipped inside the package: the tiny shapes pipeline and its cyan LoRA.

The tiny shapes pipeline (1.8 MB) is a real Wan 2.1 text-to-video model (DiT, VAE, umT5 encoder) trained on this
package's moving-shapes dataset (`wan_diffusers.training.shapes`) by `scripts/train_tiny_shapes.py`, on prompts
`a {colour} {shape} moves {direction}`. It writes 64 x 64, 17-frame videos of a moving shape offline in seconds and is
the default model of `wan-diffusers generate --task t2v` without --model. After its short training on a 2-core CPU
it does not follow its prompts yet (benchmarks/RESULTS.md).
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
    """The folder of a LoRA for the tiny shapes pipeline trained on a new colour, cyan (200 steps; it does not make the
    output cyan yet): `pipe.load_lora_weights(tiny_lora_path())`; `lora_comfyui.safetensors` in it has the original key
    format."""
    return _HERE / "tiny_shapes_cyan_lora"
