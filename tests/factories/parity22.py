"""The original Wan2.2 reference data: tiny models in the release layout with inputs and outputs of the original code.

The files come from running the original Wan2.2 code; their shared components are those of
`tests/fixtures/wan21_parity/components/` (byte-identical, so not copied twice; see
`tests/fixtures/wan22_parity/README.md` for what each tensor is).
"""

import json
import shutil
from functools import cache
from pathlib import Path

import torch
from safetensors.torch import load_file

from wan_diffusers.conversion.detect import EXPERT_FOLDERS
from wan_diffusers.conversion.rules import rename_state_dict
from wan_diffusers.conversion.transformer import TRANSFORMER_RULES, transformer_config_from_original

from factories.parity import COMPONENTS_DIR
from factories.transformer import pad_text

PARITY22_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "wan22_parity"
MODELS = ("t2v-a14b", "i2v-a14b", "ti2v-5b")
# The expert folders of an A14B release and the diffusers component each becomes.
EXPERTS = EXPERT_FOLDERS


def model_dir(model: str) -> Path:
    """Folder of one tiny model, laid out like its release (without the shared components)."""
    if model not in MODELS:
        raise ValueError(f"`model` must be one of {MODELS}, got {model!r}")
    return PARITY22_DIR / f"tiny-{model}"


def dit_folders(model: str) -> dict[str, Path]:
    """Original folder name -> folder holding `config.json` and the sharded DiT: the two experts, or the root."""
    root = model_dir(model)
    if model == "ti2v-5b":
        return {"model": root}
    return {name: root / name for name in EXPERTS}


@cache
def manifest(model: str) -> dict:
    return json.loads((model_dir(model) / "manifest.json").read_text())


@cache
def _load(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path)


def dit_references(model: str) -> dict[str, torch.Tensor]:
    """DiT forward cases A and B: inputs and outputs, keys like `dit.A.x.0`, `dit.B.high_noise_model.out.1`."""
    return _load(model_dir(model) / "reference_dit.safetensors")


def component_references(model: str) -> dict[str, torch.Tensor]:
    """Sampling references (and, for TI2V-5B, the Wan2.2 VAE's), keys like `sampling.t2v.noise`."""
    return _load(model_dir(model) / "reference_components.safetensors")


def dit_case(model: str, case: str, per_token: bool = True) -> dict:
    """The inputs of DiT reference case A or B in the diffusers style (see the fixtures' README); `per_token=False`
    gives case B one timestep per sample."""
    references = dit_references(model)
    count = next(c["batch"] for c in manifest(model)["dit_cases"] if c["case"] == case)
    latents = [references[f"dit.{case}.x.{i}"] for i in range(count)]
    if model == "i2v-a14b":  # noisy latent 16 | mask 4 | condition latent 16
        latents = [torch.cat([x, references[f"dit.{case}.y.{i}"]]) for i, x in enumerate(latents)]
    timestep = references[f"dit.{case}.t"]
    if timestep.ndim == 2 and not per_token:
        timestep = timestep[:, 0]
    return {
        "hidden_states": torch.stack(latents),
        "timestep": timestep,
        "encoder_hidden_states": pad_text([references[f"dit.{case}.context.{i}"] for i in range(count)]),
    }


def expected_outputs(model: str, case: str, folder: str) -> torch.Tensor:
    references = dit_references(model)
    prefix = f"dit.{case}." if folder == "model" else f"dit.{case}.{folder}."
    count = sum(key.startswith(f"dit.{case}.x.") for key in references)
    return torch.stack([references[f"{prefix}out.{i}"] for i in range(count)])


def original_dit_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """The DiT of one release folder, gathered from the shards its index names, under the original keys."""
    index = json.loads((folder / "diffusion_pytorch_model.safetensors.index.json").read_text())
    state_dict = {}
    for shard in sorted(set(index["weight_map"].values())):
        state_dict.update(_load(folder / shard))
    return state_dict


def parity_transformer(folder: Path):
    """The tiny DiT of one release folder, converted with our key map and loaded strictly."""
    from wan_diffusers import WanTransformer3DModel

    original = original_dit_state_dict(folder)
    original_config = json.loads((folder / "config.json").read_text())
    config = transformer_config_from_original(original_config, {k: tuple(v.shape) for k, v in original.items()})
    model = WanTransformer3DModel(**config)
    model.load_state_dict(rename_state_dict(original, TRANSFORMER_RULES, what="DiT"), strict=True)
    return model.eval()


def original_component_state_dict(file_name: str) -> dict[str, torch.Tensor]:
    """A shared component of the A14B releases (`Wan2.1_VAE.pth`, the T5), from the Wan2.1 fixtures' copy, or
    the TI2V-5B release's own `Wan2.2_VAE.pth`."""
    folder = model_dir("ti2v-5b") if file_name == "Wan2.2_VAE.pth" else COMPONENTS_DIR
    return torch.load(folder / file_name, map_location="cpu", weights_only=True)


def parity_pipeline(model: str, solver: str = "unipc", shift: float = 5.0):
    """The fixtures' DiT(s) in a pipeline with the original's sampler: the A14B models as two experts with their
    release boundary (and the Wan2.1 VAE), TI2V-5B with per-token timesteps (and its Wan2.2 VAE). Text comes in as the
    fixtures' embeddings, so the text encoder is a tiny random one."""
    from wan_diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanPipeline
    from wan_diffusers.pipelines.sampling import original_scheduler

    from factories.encoders import tiny_text_encoder, tiny_tokenizer

    folders = dit_folders(model)
    components = dict(
        tokenizer=tiny_tokenizer(),
        text_encoder=tiny_text_encoder(48),
        scheduler=original_scheduler(solver, shift),
    )
    if model == "ti2v-5b":
        components.update(
            vae=AutoencoderKLWan.from_single_file(original_component_state_dict("Wan2.2_VAE.pth")),
            transformer=parity_transformer(folders["model"]),
            expand_timesteps=True,
        )
    else:
        components.update(
            vae=AutoencoderKLWan.from_single_file(original_component_state_dict("Wan2.1_VAE.pth")),
            **{component: parity_transformer(folders[folder]) for folder, component in EXPERTS.items()},
            boundary_ratio=manifest(model)["sampling"][model[:3]]["boundary"] / 1000,
        )
    pipeline_class = WanImageToVideoPipeline if model == "i2v-a14b" else WanPipeline
    pipe = pipeline_class(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_wan22_release(folder: Path, model: str) -> Path:
    """A folder laid out exactly like the Wan 2.2 release of `model` (the tiny fixture's DiT files and VAE, the shared
    T5, its tokenizer and, for the A14B models, the Wan2.1 VAE); writable copies. Returns it."""
    root = model_dir(model)
    shutil.copytree(root, folder, ignore=shutil.ignore_patterns("reference_*", "manifest.json"))
    shutil.copyfile(COMPONENTS_DIR / "models_t5_umt5-xxl-enc-bf16.pth", folder / "models_t5_umt5-xxl-enc-bf16.pth")
    shutil.copytree(COMPONENTS_DIR / "google", folder / "google")
    if model != "ti2v-5b":
        shutil.copyfile(COMPONENTS_DIR / "Wan2.1_VAE.pth", folder / "Wan2.1_VAE.pth")
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder
