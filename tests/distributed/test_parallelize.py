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
from wan_diffusers.distributed import ParallelLayout, parallelize_pipeline, parallelize_transformer, transformers_of

from factories.pipelines import call_kwargs, sample_image, sample_video, tiny_pipeline, tiny_two_expert_pipeline
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
        "Wan 2.2 two experts t2v cfg-parallel + fsdp": (
            "t2v two experts",
            ParallelLayout(cfg_parallel=True, fsdp=True),
            (16, 32),
        ),
        "Wan 2.2 TI2V-style per-token timesteps t2v ulysses 2": (
            "t2v per-token",
            ParallelLayout(ulysses_degree=2),
            (16, 32),
        ),
    },
    4: {
        "t2v ulysses 2 x ring 2": ("t2v", ParallelLayout(ulysses_degree=2, ring_degree=2), (32, 32)),
        "i2v cfg-parallel x ring 2": ("i2v", ParallelLayout(ring_degree=2, cfg_parallel=True), (32, 32)),
        "v2v ring 4": ("v2v", ParallelLayout(ring_degree=4), (32, 32)),
        "Wan 2.2 two experts i2v ulysses 2 x ring 2": (
            "i2v two experts",
            ParallelLayout(ulysses_degree=2, ring_degree=2),
            (32, 32),
        ),
        "vace cfg-parallel x ulysses 2 + fsdp": (
            "vace",
            ParallelLayout(ulysses_degree=2, cfg_parallel=True, fsdp=True),
            (32, 32),
        ),
    },
}


def _pipeline(task: str):
    """The tiny pipeline of `task`, which may name a Wan 2.2 variant: "two experts" (A14B: `transformer_2` takes the
    second step) or "per-token" (TI2V-5B's one timestep per token)."""
    task, _, variant = task.partition(" ")
    if variant == "two experts":
        return tiny_two_expert_pipeline(task)
    if variant == "per-token":
        return tiny_pipeline(task, expand_timesteps=True)
    return tiny_vace_pipeline() if task == "vace" else tiny_pipeline(task)


def _arguments(task: str, size: tuple[int, int]) -> dict:
    task = task.partition(" ")[0]
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


def _record_shapes(model) -> list:
    """Records, for every call of `model`, the latents it was given and what its first block's FFN got: whether
    this rank computed a share of the batch and of the tokens."""
    shapes = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["hidden_states"].shape)), with_kwargs=True
    )
    model.blocks[0].ffn.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))
    return shapes


def _check_shares(shapes: list, layout: ParallelLayout) -> None:
    """Every call of every DiT (both Wan 2.2 experts) ran on 1 / cfg of the batch and 1 / (ring x ulysses) of the
    tokens (patches of 1 x 2 x 2)."""
    for calls in shapes:
        assert calls, "a DiT never ran"
        for (batch, _, frames, height, width), (local_batch, local_tokens, _) in zip(calls[::2], calls[1::2]):
            assert local_batch * layout.cfg_degree == batch
            assert local_tokens * layout.context_degree == frames * height // 2 * width // 2


def _run_rank(rank: int, world_size: int, init_file: str, output_dir: str):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        for index, (task, layout, size) in enumerate(CASES[world_size].values()):
            pipe = _pipeline(task)
            parallelize_pipeline(pipe, layout)
            shapes = [_record_shapes(model) for model in transformers_of(pipe)]
            latents = pipe(**_arguments(task, size)).frames
            torch.save((latents, shapes), f"{output_dir}/case{index}-rank{rank}.pt")
        if world_size == 2:
            model, inputs = _per_token_timestep_model()
            parallelize_transformer(model, ParallelLayout(ulysses_degree=2))
            tokens_seen = []
            model.blocks[1].ffn.register_forward_pre_hook(lambda module, args: tokens_seen.append(args[0].shape[1]))
            with torch.no_grad():
                sample = model(**inputs).sample
                try:  # 1 x 2 x 6 latents: 3 tokens, which 2 ranks cannot split
                    model(**dict(inputs, hidden_states=inputs["hidden_states"][:, :, :1, :2], timestep=[500.0]))
                    error = None
                except ValueError as raised:
                    error = str(raised)
            torch.save((sample, tokens_seen, error), f"{output_dir}/per-token-rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("world_size", [2, 4])
def test_every_mode_matches_a_single_process(world_size, tmp_path):
    mp.spawn(_run_rank, args=(world_size, str(tmp_path / "store"), str(tmp_path)), nprocs=world_size, join=True)
    failures = []
    for index, (name, (task, layout, size)) in enumerate(CASES[world_size].items()):
        reference = _pipeline(task)(**_arguments(task, size)).frames
        for rank in range(world_size):
            latents, shapes = torch.load(tmp_path / f"case{index}-rank{rank}.pt")
            assert len(shapes) == (2 if "two experts" in task else 1)
            _check_shares(shapes, layout)
            difference = max_rel(latents, reference)
            print(f"world {world_size}, {name}, rank {rank}: max_rel {difference:.2e}")
            if not difference <= TOLERANCE:
                failures.append(f"{name}, rank {rank}: max_rel {difference:.2e}")
    if world_size == 2:
        model, inputs = _per_token_timestep_model()
        with torch.no_grad():
            reference = model(**inputs).sample
        for rank in range(world_size):
            sample, tokens_seen, error = torch.load(tmp_path / f"per-token-rank{rank}.pt")
            assert tokens_seen == [6], f"rank {rank} saw {tokens_seen} tokens per block: the plan did not shard"
            assert "has 3 tokens, which do not split over ring x ulysses = 2 ranks" in error
            difference = max_rel(sample, reference)
            print(f"world 2, DiT with per-token timesteps, ulysses 2, rank {rank}: max_rel {difference:.2e}")
            if not difference <= TOLERANCE:
                failures.append(f"per-token timesteps, rank {rank}: max_rel {difference:.2e}")
    assert not failures, failures
