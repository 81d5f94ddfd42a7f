"""Tiny pipelines for every task, the arguments of a fast call, and test images and videos.

- `tiny_pipeline(task)`: `WanPipeline` (t2v), `WanImageToVideoPipeline` (i2v, flf2v) or `WanVideoToVideoPipeline` (v2v)
  from the tiny transformer, VAE and encoders of the other factories, with random weights from fixed seeds.
- `call_kwargs(task, **overrides)`: a 2-step call on a 9-frame 16 x 32 video (3 latent frames of 2 x 4).
- `sample_image(...)`, `sample_video(...)`: deterministic inputs.
- `parity_pipeline(task)`: a pipeline holding the parity fixtures' converted DiT and VAE (and CLIP for i2v/flf2v).
"""

import numpy as np
import torch

from wan_diffusers import (
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
    WanVideoToVideoPipeline,
)
from wan_diffusers.pipelines.sampling import default_scheduler

from factories.encoders import (
    parity_image_encoder,
    tiny_image_encoder,
    tiny_image_processor,
    tiny_text_encoder,
    tiny_tokenizer,
)
from factories.transformer import parity_transformer, tiny_transformer_config
from factories.vae import parity_vae, tiny_vae

TASKS = ("t2v", "i2v", "flf2v", "v2v")
HEIGHT, WIDTH, NUM_FRAMES = 16, 32, 9
PIPELINE_CLASSES = {
    "t2v": WanPipeline,
    "i2v": WanImageToVideoPipeline,
    "flf2v": WanImageToVideoPipeline,
    "v2v": WanVideoToVideoPipeline,
}


def tiny_transformer(task: str = "t2v", seed: int = 0) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    return WanTransformer3DModel(**tiny_transformer_config("t2v" if task == "v2v" else task)).eval()


def tiny_components(task: str = "t2v") -> dict:
    transformer = tiny_transformer(task)
    components = dict(
        tokenizer=tiny_tokenizer(),
        text_encoder=tiny_text_encoder(transformer.config.text_dim),
        vae=tiny_vae(),
        scheduler=default_scheduler(task),
        transformer=transformer,
    )
    if task in ("i2v", "flf2v"):
        components["image_encoder"] = tiny_image_encoder(transformer.config.image_dim)
        components["image_processor"] = tiny_image_processor()
    return components


def tiny_pipeline(task: str = "t2v", **component_overrides):
    pipe = PIPELINE_CLASSES[task](**{**tiny_components(task), **component_overrides})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample_image(height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> np.ndarray:
    """A uint8 RGB image [height, width, 3]."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def sample_video(num_frames: int = NUM_FRAMES, height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> np.ndarray:
    """A float video [num_frames, height, width, 3] in [0, 1]."""
    return np.random.default_rng(seed).random((num_frames, height, width, 3), dtype=np.float32)


def call_kwargs(task: str = "t2v", **overrides) -> dict:
    kwargs = dict(
        prompt="A cat walks on the grass.",
        num_inference_steps=2,
        guidance_scale=4.0,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    )
    if task == "v2v":
        kwargs.update(video=sample_video(), strength=1.0)
    else:
        kwargs.update(height=HEIGHT, width=WIDTH, num_frames=NUM_FRAMES)
    if task in ("i2v", "flf2v"):
        kwargs["image"] = sample_image(seed=1)
    if task == "flf2v":
        kwargs["last_image"] = sample_image(seed=2)
    kwargs.update(overrides)
    return kwargs


def parity_pipeline(task: str):
    """The fixtures' DiT and VAE (and CLIP) in a pipeline; text comes in as the fixtures' embeddings."""
    components = dict(
        tokenizer=tiny_tokenizer(),
        text_encoder=tiny_text_encoder(48),
        vae=parity_vae(),
        scheduler=default_scheduler(task),
        transformer=parity_transformer(task),
    )
    if task == "t2v":
        pipe = WanPipeline(**components)
    else:
        pipe = WanImageToVideoPipeline(**components, image_encoder=parity_image_encoder())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_two_expert_pipeline(task: str = "t2v", boundary_ratio: float = 0.875):
    """A Wan 2.2 A14B-style pipeline: two tiny experts (different weights) split at `boundary_ratio`. With the
    default scheduler's 2 steps (timesteps 1000 and 833) the first step runs `transformer`, the second `transformer_2`.
    """
    return tiny_pipeline(task, transformer_2=tiny_transformer(task, seed=1), boundary_ratio=boundary_ratio)
