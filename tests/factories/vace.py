"""Tiny WanVACETransformer3DModel configs and inputs, the VACE parity DiT converted to our layout, and its cases."""

import json

import torch

from wan_diffusers.conversion.rules import rename_state_dict
from wan_diffusers.conversion.transformer import TRANSFORMER_RULES, transformer_config_from_original
from wan_diffusers.pipelines.demo import VACE_CONFIG  # the tiny sizes are the demo's

from factories.parity import component_references, dit_references, manifest, original_dit_state_dict, task_dir
from factories.transformer import pad_text


def tiny_vace_config(**overrides) -> dict:
    return dict(VACE_CONFIG, **overrides)


def tiny_vace_transformer(seed: int = 0, **overrides):
    from wan_diffusers import WanVACETransformer3DModel

    torch.manual_seed(seed)
    return WanVACETransformer3DModel(**tiny_vace_config(**overrides)).eval()


def tiny_vace_inputs(batch_size: int = 2, latent_shape=(3, 4, 6), text_tokens: int = 7, seed: int = 0) -> dict:
    """Random inputs: non-square latents, fractional and integer timesteps, a control input of the latent's size."""
    config = VACE_CONFIG
    generator = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(batch_size, config["in_channels"], *latent_shape, generator=generator),
        "timestep": torch.tensor([999.0, 12.75, 500.0, 1.0][:batch_size]),
        "encoder_hidden_states": torch.randn(batch_size, text_tokens, config["text_dim"], generator=generator),
        "control_hidden_states": torch.randn(
            batch_size, config["vace_in_channels"], *latent_shape, generator=generator
        ),
    }


def parity_vace_transformer():
    """The tiny original `VaceWanModel` of `tests/fixtures/wan21_parity/tiny-vace`, converted and loaded strictly."""
    from wan_diffusers import WanVACETransformer3DModel

    original = original_dit_state_dict("vace")
    original_config = json.loads((task_dir("vace") / "config.json").read_text())
    config = transformer_config_from_original(original_config, {k: tuple(v.shape) for k, v in original.items()})
    model = WanVACETransformer3DModel(**config)
    model.load_state_dict(rename_state_dict(original, TRANSFORMER_RULES, what="DiT"), strict=True)
    return model.eval()


def original_vace_cases():
    """Yield (case, sample indices, model kwargs) for the VACE DiT references; mixed shapes (case C) run one by one.

    The original's `vace_context_scale` (one number for all hint layers: 1.0, 0.6, 1.0) is passed as is.
    """
    references = dit_references("vace")
    scales = {entry["case"]: entry["vace_context_scale"] for entry in manifest("vace")["dit_cases"]}
    for case in sorted({key.split(".")[1] for key in references}):
        count = sum(key.startswith(f"dit.{case}.x.") for key in references)
        shapes = {tuple(references[f"dit.{case}.x.{i}"].shape) for i in range(count)}
        groups = [list(range(count))] if len(shapes) == 1 else [[i] for i in range(count)]
        for indices in groups:
            yield (
                case,
                indices,
                {
                    "hidden_states": torch.stack([references[f"dit.{case}.x.{i}"] for i in indices]),
                    "timestep": references[f"dit.{case}.t"][indices],
                    "encoder_hidden_states": pad_text([references[f"dit.{case}.context.{i}"] for i in indices]),
                    "control_hidden_states": torch.stack(
                        [references[f"dit.{case}.vace_context.{i}"] for i in indices]
                    ),
                    "control_hidden_states_scale": scales[case],
                },
            )


# ---------------------------------------------------------------------------------------------------------------------
# Pipelines


def tiny_vace_pipeline(seed: int = 0):
    """`WanVACEPipeline` from the tiny VACE transformer, the tiny VAE and text encoder, random weights."""
    from wan_diffusers import WanVACEPipeline
    from wan_diffusers.pipelines.sampling import default_scheduler

    from factories.encoders import tiny_text_encoder, tiny_tokenizer
    from factories.vae import tiny_vae

    pipe = WanVACEPipeline(
        tokenizer=tiny_tokenizer(),
        text_encoder=tiny_text_encoder(VACE_CONFIG["text_dim"]),
        vae=tiny_vae(),
        scheduler=default_scheduler("vace"),
        transformer=tiny_vace_transformer(seed),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def parity_vace_pipeline():
    """The fixtures' converted VACE DiT, VAE, umT5 and tokenizer in a pipeline: the original `WanVace`'s models."""
    from wan_diffusers import WanVACEPipeline
    from wan_diffusers.pipelines.sampling import default_scheduler

    from factories.encoders import parity_text_encoder, tiny_tokenizer
    from factories.vae import parity_vae

    pipe = WanVACEPipeline(
        tokenizer=tiny_tokenizer(),
        text_encoder=parity_text_encoder(),
        vae=parity_vae(),
        scheduler=default_scheduler("vace"),
        transformer=parity_vace_transformer(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def parity_vace_sources() -> dict:
    """The fixture's VACE sampling inputs in the pipeline's input forms (frames and images in [0, 1])."""
    references = component_references("vace")
    return {
        "video": (references["sampling.vace.input_frames"][0].transpose(0, 1) + 1) / 2,  # [F, 3, H, W]
        "mask": references["sampling.vace.input_mask"][0, 0],  # [F, H, W]
        "reference_images": [(references[f"sampling.vace.ref_image.{i}"][0, :, 0] + 1) / 2 for i in range(2)],
    }
