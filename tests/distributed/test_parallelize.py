"""Every parallel mode reproduces the single-process pipeline: real gloo process groups of 2 and 4 CPU ranks.

One process group per world size runs several cases in turn (starting processes dominates the cost). Each case
builds the same tiny pipeline from the same seeds in every rank and in this process, calls it with the same seeded
arguments, and compares every rank's final latents with the single-process ones. Tolerance 1e-5 relative to the
largest latent: the ranks do the same per-token arithmetic, but attention over key/value chunks merged by their
log-sum-exp (Ring), float32 math attention instead of the fused kernel, and all-to-all layouts change the rounding
(float32, a 2-step sampler on random weights: measured at most 2.7e-6, listed in docs/multi_gpu.md; `pytest -s`
prints them).
"""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from wan_diffusers import WanTransformer3DModel
from wan_diffusers.distributed import ParallelLayout, parallelize_pipeline, parallelize_transformer

from factories.pipelines import call_kwargs, sample_image, sample_video, tiny_pipeline
from factories.transformer import tiny_transformer_config, tiny_transformer_inputs
from factories.vace import tiny_vace_pipeline
from testing_utils import max_rel

TOLERANCE = 1e-5

# (task, layout, size): a 16 x 32 video has 6 tokens (3 latent frames of 1 x 2 patches), 32 x 32 has 12.
CASES = {
    2: {
        "t2v ulysses 2": ("t2v", ParallelLayout(ulysses_degree=2), (16, 32)),
        "t2v ring 2": ("t2v", ParallelLayout(ring_degree=2), (16, 32)),
        "t2v cfg-parallel": ("t2v", ParallelLayout(cfg_parallel=True), (16, 32)),
        "t2v fsdp (DiT and text encoder)": ("t2v", ParallelLayout(fsdp=True), (16, 32)),
        "i2v ulysses 2": ("i2v", ParallelLayout(ulysses_degree=2), (16, 32)),
        "flf2v ring 2 + fsdp": ("flf2v", ParallelLayout(ring_degree=2, fsdp=True), (16, 32)),
        "vace ulysses 2": ("vace", ParallelLayout(ulysses_degree=2), (16, 32)),
        "vace ring 2": ("vace", ParallelLayout(ring_degree=2), (16, 32)),
    },
    4: {
        "t2v ulysses 2 x ring 2": ("t2v", ParallelLayout(ulysses_degree=2, ring_degree=2), (32, 32)),
        "i2v cfg-parallel x ring 2": ("i2v", ParallelLayout(ring_degree=2, cfg_parallel=True), (32, 32)),
        "v2v ring 4": ("v2v", ParallelLayout(ring_degree=4), (32, 32)),
        "vace cfg-parallel x ulysses 2 + fsdp": (
            "vace",
            ParallelLayout(ulysses_degree=2, cfg_parallel=True, fsdp=True),
            (32, 32),
        ),
    },
}


def _pipeline(task: str):
    return tiny_vace_pipeline() if task == "vace" else tiny_pipeline(task)


def _arguments(task: str, size: tuple[int, int]) -> dict:
    height, width = size
    if task == "vace":  # masked editing with one reference image in front: 4 latent frames
        mask = np.zeros((9, height, width), dtype=np.float32)
        mask[:, height // 4 :, width // 4 :] = 1
        return dict(
            call_kwargs("t2v", output_type="latent"),
            video=list(sample_video(height=height, width=width)),
            mask=list(mask),
            reference_images=[sample_image(12, 20, seed=3)],
            num_frames=None,
        )
    if task == "v2v":
        return call_kwargs("v2v", video=sample_video(height=height, width=width), output_type="latent")
    overrides = dict(height=height, width=width, output_type="latent")
    if task in ("i2v", "flf2v"):
        overrides["image"] = sample_image(height, width, seed=1)
        if task == "flf2v":
            overrides["last_image"] = sample_image(height, width, seed=2)
    return call_kwargs(task, **overrides)


def _per_token_timestep_model():
    """The tiny DiT on 12 tokens with one timestep per token (Wan 2.2 TI2V): the plan must split those too."""
    torch.manual_seed(0)
    model = WanTransformer3DModel(**tiny_transformer_config("t2v")).eval()
    inputs = tiny_transformer_inputs("t2v", batch_size=1, latent_shape=(2, 4, 6))
    inputs["timestep"] = torch.linspace(0.0, 999.0, 12)[None]
    return model, inputs


def _run_rank(rank: int, world_size: int, init_file: str, output_dir: str):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        for index, (task, layout, size) in enumerate(CASES[world_size].values()):
            pipe = _pipeline(task)
            parallelize_pipeline(pipe, layout)
            latents = pipe(**_arguments(task, size)).frames
            torch.save(latents, f"{output_dir}/case{index}-rank{rank}.pt")
        if world_size == 2:
            model, inputs = _per_token_timestep_model()
            parallelize_transformer(model, ParallelLayout(ulysses_degree=2))
            tokens_seen = []
            model.blocks[1].ffn.register_forward_pre_hook(lambda module, args: tokens_seen.append(args[0].shape[1]))
            with torch.no_grad():
                torch.save((model(**inputs).sample, tokens_seen), f"{output_dir}/per-token-rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("world_size", [2, 4])
def test_every_mode_matches_a_single_process(world_size, tmp_path):
    mp.spawn(_run_rank, args=(world_size, str(tmp_path / "store"), str(tmp_path)), nprocs=world_size, join=True)
    failures = []
    for index, (name, (task, _, size)) in enumerate(CASES[world_size].items()):
        reference = _pipeline(task)(**_arguments(task, size)).frames
        for rank in range(world_size):
            difference = max_rel(torch.load(tmp_path / f"case{index}-rank{rank}.pt"), reference)
            print(f"world {world_size}, {name}, rank {rank}: max_rel {difference:.2e}")
            if not difference <= TOLERANCE:
                failures.append(f"{name}, rank {rank}: max_rel {difference:.2e}")
    if world_size == 2:
        model, inputs = _per_token_timestep_model()
        with torch.no_grad():
            reference = model(**inputs).sample
        for rank in range(world_size):
            sample, tokens_seen = torch.load(tmp_path / f"per-token-rank{rank}.pt")
            assert tokens_seen == [6], f"rank {rank} saw {tokens_seen} tokens per block: the plan did not shard"
            difference = max_rel(sample, reference)
            print(f"world 2, DiT with per-token timesteps, ulysses 2, rank {rank}: max_rel {difference:.2e}")
            if not difference <= TOLERANCE:
                failures.append(f"per-token timesteps, rank {rank}: max_rel {difference:.2e}")
    assert not failures, failures
