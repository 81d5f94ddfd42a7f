"""The original Wan2.1 reference data: tiny release-format models with inputs and outputs of the original code.

The files were made by running the original Wan2.1 code (see `tests/fixtures/wan21_parity/README.md` for what each tensor is).
"""

import json
from functools import cache
from pathlib import Path

import torch
from safetensors.torch import load_file

PARITY_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "wan21_parity"
COMPONENTS_DIR = PARITY_DIR / "components"
TASKS = ("t2v", "i2v", "flf2v", "vace")


def task_dir(task: str) -> Path:
    """Folder of one tiny model: `config.json`, the DiT weights (original keys) and its references."""
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}, got {task!r}")
    return PARITY_DIR / f"tiny-{task}"


@cache
def manifest(task: str) -> dict:
    return json.loads((task_dir(task) / "manifest.json").read_text())


@cache
def _load(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path)


def original_dit_state_dict(task: str) -> dict[str, torch.Tensor]:
    """The DiT weights exactly as the original `WanModel.state_dict()` names them."""
    return dict(_load(task_dir(task) / "diffusion_pytorch_model.safetensors"))


def dit_references(task: str) -> dict[str, torch.Tensor]:
    """DiT forward cases A, B (and C): inputs and outputs, keys like `dit.A.x.0`."""
    return _load(task_dir(task) / "reference_dit.safetensors")


def component_references(task: str) -> dict[str, torch.Tensor]:
    """VAE, T5, CLIP, input-preparation and sampling references of one tiny model."""
    return _load(task_dir(task) / "reference_components.safetensors")


def original_component_state_dict(file_name: str) -> dict[str, torch.Tensor]:
    """A shared component checkpoint (`Wan2.1_VAE.pth`, the T5 or the CLIP .pth), as the release stores it."""
    return torch.load(COMPONENTS_DIR / file_name, map_location="cpu", weights_only=True)
