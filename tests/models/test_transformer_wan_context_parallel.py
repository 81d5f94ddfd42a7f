"""Context parallelism: diffusers' engine shards our model by its `_cp_plan` and gets the single-process result.

Two CPU processes over gloo run Ulysses attention (each rank holds half of the video tokens and, inside attention,
half of the heads). diffusers assumes an accelerator when it builds the device mesh, so the ranks pretend to have one
device (CPU 0); nothing else is patched.
"""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from wan_diffusers import WanTransformer3DModel

from factories.transformer import tiny_transformer_config, tiny_transformer_inputs

WORLD_SIZE = 2


def _run_rank(rank: int, init_file: str, results):
    torch.accelerator.device_count = lambda: 1  # see the module docstring
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        from diffusers import ContextParallelConfig

        torch.manual_seed(0)
        model = WanTransformer3DModel(**tiny_transformer_config("i2v")).eval()
        inputs = tiny_transformer_inputs("i2v", batch_size=1, latent_shape=(2, 4, 6))  # 12 tokens, 6 per rank
        with torch.no_grad():
            reference = model(**inputs).sample
        model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=WORLD_SIZE))
        tokens_seen = []
        model.blocks[1].ffn.register_forward_pre_hook(lambda module, args: tokens_seen.append(args[0].shape[1]))
        with torch.no_grad():
            sharded = model(**inputs).sample
        results[rank] = ((sharded - reference).abs().max().item(), tokens_seen)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ulysses_context_parallel_matches_a_single_process(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_run_rank, args=(str(tmp_path / "store"), results), nprocs=WORLD_SIZE, join=True)
    for rank in range(WORLD_SIZE):
        difference, tokens_seen = results[rank]
        assert tokens_seen == [6], f"rank {rank} saw {tokens_seen} tokens per block: the plan did not shard"
        # Same per-token arithmetic, attention over the same keys: float32 rounding at most.
        assert difference <= 1e-6, f"rank {rank}: max abs difference {difference:.2e}"
