"""Quantized inference: each recipe's error against the unquantized tiny model, and the memory it saves."""

import pytest
import torch

from wan_diffusers.memory.model import module_bytes, released_transformer
from wan_diffusers.quantization import RECIPES, quantize_transformer, quantized_bytes

from factories.transformer import parity_transformer

# Relative L2 error of the DiT output against the unquantized float32 model (the tiny parity T2V model, 128 wide),
# measured: fp8-storage 1.0e-2, int8 2.0e-3, fp8 8.9e-3 (in bf16 against bf16: 9.7e-3, 4.1e-3, 9.5e-3). Bounds: 2x.
BOUNDS = {"fp8-storage": 2e-2, "int8": 4e-3, "fp8": 1.8e-2}


def _output(model):
    generator = torch.Generator().manual_seed(0)
    config = model.config
    inputs = dict(
        hidden_states=torch.randn(1, config.in_channels, 3, 4, 6, generator=generator),
        timestep=torch.tensor([500.0]),
        encoder_hidden_states=torch.randn(1, 7, config.text_dim, generator=generator),
    )
    with torch.no_grad():
        return model(**inputs, return_dict=False)[0]


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_error_and_savings(recipe):
    expected = _output(parity_transformer("t2v"))
    model = parity_transformer("t2v")
    predicted = quantized_bytes(model, recipe)
    report = quantize_transformer(model, recipe)
    error = ((_output(model) - expected).norm() / expected.norm()).item()
    assert error < BOUNDS[recipe]
    assert report.bytes_after == pytest.approx(predicted, rel=1e-3)  # quanto adds a few bytes per layer
    assert report.bytes_after < 0.52 * report.bytes_before  # float32 to 1 byte in the blocks (the tiny model's
    # embeddings and float32 modules are a larger share than in a released model)


def test_released_savings():
    for size, before, after in (("1.3B", 2.87, 1.48), ("14B", 28.95, 14.90)):
        transformer = released_transformer(size)
        assert module_bytes(transformer) / 1e9 == pytest.approx(before, abs=0.01)
        for recipe in RECIPES:
            assert quantized_bytes(transformer, recipe) / 1e9 == pytest.approx(after, abs=0.01)
    with pytest.raises(ValueError, match="`recipe` must be one of"):
        quantized_bytes(transformer, "int4")
