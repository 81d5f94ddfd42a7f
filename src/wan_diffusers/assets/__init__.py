"""Model files shipped inside the package: the tiny shapes pipeline and its cyan LoRA.

The tiny shapes pipeline (3.7 MB) is a real Wan 2.1 text-to-video model (DiT, VAE, umT5 encoder) trained on this
package's moving-shapes dataset (`wan_diffusers.training.shapes`) by `scripts/train_tiny_shapes.py`, on prompts
`a {colour} {shape} moves {direction}`. It writes 64 x 64, 17-frame videos of a moving shape offline in seconds and is
the default model of `wan-diffusers generate --task t2v` without --model. It follows the colour and the direction of
its prompt (99 % and 100 %, held-out combinations included) but draws every shape as a roundish blob
(benchmarks/RESULTS.md).
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
    """The folder of a LoRA for the tiny shapes pipeline that teaches it a colour it never saw, cyan (rank 8, 600 steps:
    24 of 24 cyan prompts come out cyan, none without it): `pipe.load_lora_weights(tiny_lora_path())`;
    `lora_comfyui.safetensors` in it holds the same weights in the original key format."""
    return _HERE / "tiny_shapes_cyan_lora"
