"""The paper cost model of docs/multi_gpu.md: its byte counts against a hand count, its FLOPs split over the ranks."""

import pytest

from wan_diffusers.distributed import ParallelLayout
from wan_diffusers.distributed.cost import MODELS, parameter_count, step_cost
from wan_diffusers.utils.flops import transformer_forward_flops

T2V_1_3B, LATENT_480P = MODELS["1.3B"], (21, 60, 104)  # 32,760 tokens of width 1536, 30 layers


def test_bytes_per_step_by_hand():
    tokens, width, layers = 32_760, 1536, 30
    # Ulysses 4: 4 all-to-alls per layer of (L / 4) x d values, 3/4 of them leave; 2 forwards; 2 bytes each
    ulysses = step_cost(T2V_1_3B, LATENT_480P, ParallelLayout(ulysses_degree=4), 4)
    assert ulysses.all_to_all_bytes == pytest.approx(2 * layers * 4 * tokens / 4 * width * 3 / 4 * 2)
    # Ring 4: the keys and values of 3 other ranks per layer
    ring = step_cost(T2V_1_3B, LATENT_480P, ParallelLayout(ring_degree=4), 4)
    assert ring.ring_bytes == pytest.approx(2 * layers * 2 * 3 * tokens / 4 * width * 2)
    # FSDP over 2 with CFG-parallel: one forward per rank gathers half of the weights; plus the float32 prediction
    fsdp = step_cost(T2V_1_3B, LATENT_480P, ParallelLayout(cfg_parallel=True, fsdp=True), 2)
    assert fsdp.all_gather_bytes == pytest.approx(parameter_count(T2V_1_3B) * 2 / 2 + tokens * 64 * 4)
    assert 1.41e9 < parameter_count(T2V_1_3B) < 1.43e9  # "1.3B"


def test_compute_is_split_over_every_rank():
    forward = transformer_forward_flops(T2V_1_3B, *LATENT_480P).total
    layout = ParallelLayout(ulysses_degree=2, ring_degree=2, cfg_parallel=True)
    assert step_cost(T2V_1_3B, LATENT_480P, layout, 8).flops == pytest.approx(2 * forward / 8)
    assert step_cost(T2V_1_3B, LATENT_480P, ParallelLayout(fsdp=True), 8).flops == pytest.approx(2 * forward)
