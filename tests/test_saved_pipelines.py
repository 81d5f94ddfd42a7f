"""Repos saved by an earlier wan-diffusers still load and compute the same (tests/fixtures/saved_pipelines/README.md).

`model_index.json` records each component's module path and every config its keys: moving a module or renaming a
config field breaks repos already on disk and on the Hub. Tolerance: 1e-5 relative (float32 on the CPU; the same
code gives the same bits, the margin is for other CPUs' kernels).
"""

from pathlib import Path

import PIL.Image
import pytest
import torch
from safetensors.torch import load_file

from wan_diffusers import WanImageToVideoPipeline, WanVACEPipeline

from testing_utils import max_rel

SAVED = Path(__file__).parent / "fixtures" / "saved_pipelines"


@pytest.mark.parametrize("task, cls", [("i2v", WanImageToVideoPipeline), ("vace", WanVACEPipeline)])
def test_a_pipeline_saved_before_still_loads_and_computes_the_same(task, cls):
    pipe = cls.from_pretrained(SAVED / task, torch_dtype=torch.float32)
    kwargs = dict(prompt="A cat.", num_inference_steps=2, num_frames=5, height=32, width=32, output_type="latent")
    if task == "i2v":
        kwargs["image"] = PIL.Image.new("RGB", (32, 32), (200, 30, 90))
    latents = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).frames
    assert max_rel(latents, load_file(SAVED / "expected_latents.safetensors")[task]) <= 1e-5
