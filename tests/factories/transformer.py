"""Tiny WanTransformer3DModel configs and inputs, and the original-format parity DiTs converted to our layout."""

import json

import torch

from wan_diffusers.conversion.rules import rename_state_dict
from wan_diffusers.conversion.transformer import TRANSFORMER_RULES, transformer_config_from_original
from wan_diffusers.pipelines.demo import CLIP_TOKENS, TRANSFORMER_CONFIGS

from factories.parity import original_dit_state_dict, task_dir

# The tiny sizes are the offline demo's (wan_diffusers/pipelines/demo.py), one definition for both.
CONFIGS = {task: TRANSFORMER_CONFIGS[task] for task in ("t2v", "i2v", "flf2v")}
IMAGE_TOKENS = CLIP_TOKENS


def tiny_transformer_config(task: str = "t2v", **overrides) -> dict:
    return dict(CONFIGS[task], **overrides)


def tiny_transformer_inputs(
    task: str = "t2v", batch_size: int = 2, latent_shape=(3, 4, 6), text_tokens: int = 7, seed: int = 0
) -> dict:
    """Random inputs for a tiny model: non-square latents, fractional and integer timesteps."""
    config = CONFIGS[task]
    generator = torch.Generator().manual_seed(seed)
    inputs = {
        "hidden_states": torch.randn(batch_size, config["in_channels"], *latent_shape, generator=generator),
        "timestep": torch.tensor([999.0, 12.75, 500.0, 1.0][:batch_size]),
        "encoder_hidden_states": torch.randn(batch_size, text_tokens, config["text_dim"], generator=generator),
    }
    if task != "t2v":
        images = batch_size * (2 if task == "flf2v" else 1)
        inputs["encoder_hidden_states_image"] = torch.randn(
            images, IMAGE_TOKENS, config["image_dim"], generator=generator
        )
    return inputs


def parity_transformer(task: str):
    """The tiny original-format DiT of `tests/fixtures/wan21_parity/tiny-<task>`, converted and loaded strictly."""
    from wan_diffusers import WanTransformer3DModel

    original = original_dit_state_dict(task)
    original_config = json.loads((task_dir(task) / "config.json").read_text())
    config = transformer_config_from_original(original_config, {k: tuple(v.shape) for k, v in original.items()})
    model = WanTransformer3DModel(**config)
    model.load_state_dict(rename_state_dict(original, TRANSFORMER_RULES, what="DiT"), strict=True)
    return model.eval()


def pad_text(contexts: list[torch.Tensor], length: int = 512) -> torch.Tensor:
    """Zero-pad each [L_i, C] text embedding to `length` rows and stack them: [B, length, C]."""
    return torch.stack([torch.nn.functional.pad(c, (0, 0, 0, length - c.shape[0])) for c in contexts])
