"""The FLOP model of a DiT forward (utils/flops.py) against figures counted by hand from the original
`wan/modules/model.py` (e.g. 283 TFLOP for a T2V-1.3B forward at 832 x 480 x 81, 6,523 for T2V-14B at 1280 x 720 x 81).

Those figures are rounded to the TFLOP, so each check allows half a TFLOP (or 0.5 %) of rounding.
"""

import pytest
import torch

from wan_diffusers import WanTransformer3DModel, WanVACETransformer3DModel
from wan_diffusers.utils.flops import peak_tflops, transformer_forward_flops, video_tokens

T2V_1_3B = dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30)
T2V_14B = dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40)
LATENT_480P, LATENT_720P = (21, 60, 104), (21, 90, 160)  # 81 frames of 832 x 480 and 1280 x 720


@pytest.mark.parametrize(
    "config, latent, tokens, total, linear, attention, seconds_per_step",
    [
        (T2V_1_3B, LATENT_480P, 32_760, 283, 82, 201, 0.72),
        (T2V_14B, LATENT_720P, 75_600, 6_523, 1_810, 4_714, 16.5),
        (T2V_14B, LATENT_480P, 32_760, 1_678, 785, 893, 4.25),
    ],
)
def test_matches_the_reference_table(config, latent, tokens, total, linear, attention, seconds_per_step):
    flops = transformer_forward_flops(config, *latent)
    assert video_tokens(config, *latent) == tokens
    assert flops.total / 1e12 == pytest.approx(total, abs=0.5)
    assert flops.linear / 1e12 == pytest.approx(linear, abs=0.5)
    assert flops.attention / 1e12 == pytest.approx(attention, abs=0.5)
    # the floor of a guided step: two forwards at 790 TFLOP/s
    assert 2 * flops.total / (peak_tflops("NVIDIA H200") * 1e12) == pytest.approx(seconds_per_step, rel=5e-3)


def test_image_tokens_and_vace_blocks_add_work():
    t2v = transformer_forward_flops(T2V_14B, *LATENT_480P)
    i2v = transformer_forward_flops({**T2V_14B, "image_dim": 1280, "in_channels": 36}, *LATENT_480P)
    flf2v = transformer_forward_flops({**T2V_14B, "image_dim": 1280, "pos_embed_seq_len": 514}, *LATENT_480P)
    assert t2v.total < i2v.total < flf2v.total
    vace = transformer_forward_flops({**T2V_1_3B, "vace_layers": list(range(0, 30, 2))}, *LATENT_480P)
    plain = transformer_forward_flops(T2V_1_3B, *LATENT_480P)
    assert vace.attention == pytest.approx(plain.attention * 45 / 30)  # 15 hint blocks on top of 30


def test_accepts_the_models_own_configs():
    """A saved config (what `wan-diffusers bench` reads) has every field the count needs."""
    for cls, extra in ((WanTransformer3DModel, {}), (WanVACETransformer3DModel, {"vace_layers": [0]})):
        with torch.device("meta"):
            model = cls(num_attention_heads=2, attention_head_dim=8, ffn_dim=32, num_layers=2, text_dim=16, **extra)
        assert transformer_forward_flops(dict(model.config), 3, 4, 6).total > 0


def test_known_and_unknown_accelerators():
    assert peak_tflops("NVIDIA H200") == 790.0
    assert peak_tflops("NVIDIA H20") == 148.0  # not read as an H200
    assert peak_tflops("NVIDIA GeForce RTX 4090") == 165.0
    assert peak_tflops("cpu") is None
