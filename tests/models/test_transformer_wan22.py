"""WanTransformer3DModel on Wan 2.2: both experts of the A14B models and TI2V-5B's per-token timesteps.

Parity with the original Wan2.2 `WanModel` (tests/fixtures/wan22_parity). Tolerance max_rel <= 1e-5, as for Wan 2.1:
the original re-run in float64 moves these outputs by 2.7e-7 - 5.6e-7 (their noise floor), and the smallest modelling
mistake (one timestep per sample instead of per token, a float32 sinusoid) shows up as 2.5e-6 to 0.39.
"""

import diffusers
import pytest
import torch

from wan_diffusers import WanTransformer3DModel

from factories.parity22 import dit_case, dit_folders, expected_outputs, parity_transformer
from factories.transformer import pad_text, tiny_transformer_config, tiny_transformer_inputs
from testing_utils import max_rel

MODELS = ("t2v-a14b", "i2v-a14b", "ti2v-5b")


def run(model, **inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).sample


@pytest.mark.parity
@pytest.mark.parametrize("model", MODELS)
def test_every_expert_matches_the_original_wan22_dit(model):
    """Cases A (t 613, one sample) and B (batch 2, per-token t [2, 18]); for A14B through both experts. TI2V-5B's
    case B row 1 is 0 on the first latent frame's tokens and 12.75 elsewhere, as `wan/textimage2video.py` builds it."""
    for folder, path in dit_folders(model).items():
        transformer = parity_transformer(path)
        for case in ("A", "B"):
            output = run(transformer, **dit_case(model, case))
            error = max_rel(output, expected_outputs(model, case, folder))
            # measured 2.1e-7 - 3.9e-7, at the fixtures' float64 noise floor
            assert error <= 1e-5, f"{model} {folder} case {case}: max_rel {error:.2e}"


@pytest.mark.parity
def test_ti2v_needs_its_per_token_timesteps():
    """One timestep per sample instead of per token (0 on the image frame) moves TI2V's case B far off."""
    transformer = parity_transformer(dit_folders("ti2v-5b")["model"])
    per_sample = run(transformer, **dit_case("ti2v-5b", "B", per_token=False))
    assert max_rel(per_sample[1], expected_outputs("ti2v-5b", "B", "model")[1]) > 0.05


@pytest.mark.parity
def test_constant_per_token_timesteps_equal_one_timestep_per_sample():
    transformer = parity_transformer(dit_folders("t2v-a14b")["high_noise_model"])
    inputs = dit_case("t2v-a14b", "B")
    per_sample = run(transformer, **dict(inputs, timestep=inputs["timestep"][:, 0]))
    assert max_rel(run(transformer, **inputs), per_sample) <= 1e-6  # the same maths, other matmul shapes


def test_per_token_timesteps_must_cover_every_patch():
    transformer = WanTransformer3DModel(**tiny_transformer_config("t2v")).eval()
    inputs = tiny_transformer_inputs("t2v", batch_size=2, latent_shape=(3, 4, 6))  # 3 * 2 * 3 = 18 patches
    with pytest.raises(ValueError, match=r"\[2, 18\]"):
        transformer(**dict(inputs, timestep=torch.zeros(2, 17)))


@pytest.mark.oracle
def test_per_token_timesteps_match_diffusers():
    """diffusers' 2-D timestep path (`expand_timesteps`), on the same weights; its float32 timestep sinusoid alone
    moves the output by a few 1e-6 (README), so 2e-5."""
    torch.manual_seed(0)
    model = WanTransformer3DModel(**tiny_transformer_config("t2v")).eval()
    twin = diffusers.WanTransformer3DModel(**{k: v for k, v in model.config.items() if not k.startswith("_")})
    twin.load_state_dict(model.state_dict(), strict=True)
    inputs = tiny_transformer_inputs("t2v", batch_size=2, latent_shape=(3, 4, 6))
    inputs["encoder_hidden_states"] = pad_text(list(inputs["encoder_hidden_states"]))
    timestep = torch.full((2, 18), 731.0)
    timestep[1, :6] = 0  # the image frame's tokens
    inputs["timestep"] = timestep
    assert max_rel(run(model, **inputs), run(twin.eval(), **inputs)) <= 2e-5


@pytest.mark.oracle
def test_image_tokens_without_their_own_projections_share_the_text_projections_as_in_diffusers():
    """diffusers' I2V tests build `image_dim` without `added_kv_proj_dim`: the image tokens are then prepended to the
    text tokens and attended through the text K/V projections. Same weights, same output (2e-5: the sinusoid)."""
    torch.manual_seed(0)
    config = tiny_transformer_config("i2v", added_kv_proj_dim=None)
    model = WanTransformer3DModel(**config).eval()
    assert model.blocks[0].attn2.add_k_proj is None
    twin = diffusers.WanTransformer3DModel(**{k: v for k, v in model.config.items() if not k.startswith("_")})
    twin.load_state_dict(model.state_dict(), strict=True)
    inputs = tiny_transformer_inputs("i2v", batch_size=2)
    inputs["encoder_hidden_states"] = pad_text(list(inputs["encoder_hidden_states"]))
    expected = run(twin.eval(), **inputs)
    assert max_rel(run(model, **inputs), expected) <= 2e-5
    without_image = dict(inputs, encoder_hidden_states_image=torch.zeros_like(inputs["encoder_hidden_states_image"]))
    assert max_rel(run(model, **without_image), expected) > 1e-3  # the image tokens are attended to
