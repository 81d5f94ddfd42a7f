"""Which Wan 2.1 release a folder holds, read from its files and weights (never from the folder's name).

A release folder (as the Wan2.1 download instructions leave it) holds the DiT (`config.json` plus one
`diffusion_pytorch_model.safetensors`, or shards listed by `diffusion_pytorch_model.safetensors.index.json`), the VAE,
the T5 encoder with its tokenizer folder and, for I2V/FLF2V, the CLIP checkpoint. The task follows from the DiT
weights: VACE hint blocks -> VACE; an image embedder (`img_emb.*`) with a position table for two images
(`img_emb.emb_pos`) -> FLF2V, without one -> I2V; neither -> T2V. The size (1.3B, 14B) follows from `dim` and
`num_layers`. `config.json`'s `model_type` must agree with the weights: a mismatch means files from different
releases were mixed.

What neither the files nor the weights tell: whether an I2V-14B folder is the 480P or the 720P release (their
weights have the same layout), which only sets the scheduler's default shift and the model card's base model; it
is an option (`resolution`). Task, size and resolution pick the release's record in `wan_diffusers.tasks`, which
holds its name, pipeline and the original's sampling defaults.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from .. import tasks
from .checkpoint_io import TensorInfo, TensorReader
from .rules import ConversionError

DIT_CONFIG = "config.json"
DIT_WEIGHTS = "diffusion_pytorch_model.safetensors"
DIT_INDEX = "diffusion_pytorch_model.safetensors.index.json"
VAE_CHECKPOINT = "Wan2.1_VAE.pth"
T5_CHECKPOINT = "models_t5_umt5-xxl-enc-bf16.pth"
T5_TOKENIZER = "google/umt5-xxl"
CLIP_CHECKPOINT = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"

# the tasks an original release can hold (video-to-video runs T2V weights)
TASKS = tuple(dict.fromkeys(variant.task for variant in tasks.TASKS if variant.release is not None))
RESOLUTIONS = tasks.RESOLUTIONS
# config.json fields every release writes (the original `WanModel` saves its constructor arguments)
_REQUIRED_CONFIG = ("dim", "eps", "ffn_dim", "freq_dim", "in_dim", "num_heads", "num_layers", "out_dim")
# (dim, num_layers) of the released DiTs
_RELEASED_SIZES = {(1536, 30): "1.3B", (5120, 40): "14B"}


@dataclass(frozen=True)
class WanRelease:
    """An original Wan 2.1 release folder, inspected (headers only, no tensor data read)."""

    checkpoint_dir: Path
    task: str  # one of TASKS
    size: str | None  # "1.3B" / "14B", None for a DiT of another size (tests, fine-tunes with other dims)
    resolution: str  # "480p" / "720p": the release's target resolution (see the module docstring)
    dit_config: dict  # config.json as the release wrote it
    dit_files: tuple[Path, ...]
    dit_tensors: dict[str, TensorInfo] = field(repr=False)
    vae_checkpoint: Path
    t5_checkpoint: Path
    tokenizer_dir: Path
    clip_checkpoint: Path | None  # I2V and FLF2V only

    @property
    def variant(self) -> tasks.WanTask:
        """The release's record in `wan_diffusers.tasks` (for another size: the task's record at this resolution)."""
        return tasks.find_variant(self.task, size=self.size, resolution=self.resolution)

    @property
    def is_released_size(self) -> bool:
        return self.size is not None and self.variant.size == self.size

    @property
    def pipeline_class_name(self) -> str:
        return self.variant.pipeline_class

    @property
    def transformer_class_name(self) -> str:
        return "WanVACETransformer3DModel" if self.task == "vace" else "WanTransformer3DModel"

    @property
    def name(self) -> str:
        """The release's name, e.g. "Wan2.1-I2V-14B-480P"; other sizes read "Wan2.1-T2V (custom size)"."""
        return self.variant.release if self.is_released_size else f"Wan2.1-{self.task.upper()} (custom size)"

    @property
    def base_model(self) -> str | None:
        """The Hub id of the original release, for the model card (None for other sizes)."""
        return self.variant.base_model if self.is_released_size else None

    @property
    def default_shift(self) -> float:
        """The scheduler shift the original's `generate.py` uses for this release (`tasks.WanTask.shift`)."""
        return self.variant.shift


def detect_release(checkpoint_dir: str | Path, *, resolution: str | None = None) -> WanRelease:
    """Inspect an original Wan 2.1 release folder: which variant it is and where each file is.

    Raises `ConversionError` (a `ValueError`) naming every missing or inconsistent file. Reads headers only.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise ValueError(
            f"`checkpoint_dir` must be an original Wan 2.1 release folder, got {str(checkpoint_dir)!r} "
            "which is not a folder"
        )
    if resolution is not None and resolution.lower() not in RESOLUTIONS:
        raise ValueError(f"`resolution` must be one of {RESOLUTIONS} or None, got {resolution!r}")

    dit_config = _read_dit_config(checkpoint_dir)
    dit_files = _dit_files(checkpoint_dir)
    dit_tensors = TensorReader(dit_files, what="DiT").infos
    _check_index(checkpoint_dir, dit_tensors)
    task = _task_from_weights(dit_config, dit_tensors)
    size = _RELEASED_SIZES.get((dit_config["dim"], dit_config["num_layers"]))

    missing = [name for name in (VAE_CHECKPOINT, T5_CHECKPOINT) if not (checkpoint_dir / name).is_file()]
    if not (checkpoint_dir / T5_TOKENIZER).is_dir():
        missing.append(f"{T5_TOKENIZER}/ (the T5 tokenizer folder)")
    if task in ("i2v", "flf2v") and not (checkpoint_dir / CLIP_CHECKPOINT).is_file():
        missing.append(f"{CLIP_CHECKPOINT} (the CLIP image encoder, needed by {task.upper()})")
    if missing:
        raise ConversionError(
            f"The release folder {checkpoint_dir} lacks files that a {task.upper()} release has:\n    "
            + "\n    ".join(missing)
        )

    if resolution is None:
        # FLF2V was only released at 720P; T2V and VACE run at both and their default shift does not depend on it.
        resolution = "480p" if size == "1.3B" else "720p"
    return WanRelease(
        checkpoint_dir=checkpoint_dir,
        task=task,
        size=size,
        resolution=resolution.lower(),
        dit_config=dit_config,
        dit_files=tuple(dit_files),
        dit_tensors=dit_tensors,
        vae_checkpoint=checkpoint_dir / VAE_CHECKPOINT,
        t5_checkpoint=checkpoint_dir / T5_CHECKPOINT,
        tokenizer_dir=checkpoint_dir / T5_TOKENIZER,
        clip_checkpoint=checkpoint_dir / CLIP_CHECKPOINT if task in ("i2v", "flf2v") else None,
    )


def _read_dit_config(checkpoint_dir: Path) -> dict:
    path = checkpoint_dir / DIT_CONFIG
    if not path.is_file():
        raise ConversionError(f"The release folder {checkpoint_dir} has no {DIT_CONFIG} (the DiT's configuration)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConversionError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(config, dict):
        raise ConversionError(f"{path} must hold a JSON object, got {type(config).__name__}")
    missing = [name for name in _REQUIRED_CONFIG if name not in config]
    if missing:
        raise ConversionError(f"{path} lacks fields every Wan 2.1 release writes: {', '.join(missing)}")
    for name in _REQUIRED_CONFIG:
        value = config[name]
        if name == "eps":
            valid, rule = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0, "number"
        else:
            valid, rule = isinstance(value, int) and not isinstance(value, bool) and value > 0, "integer"
        if not valid:
            raise ConversionError(f"{path}: `{name}` must be a positive {rule}, got {json.dumps(value)}")
    return config


def _dit_files(checkpoint_dir: Path) -> list[Path]:
    single, index = checkpoint_dir / DIT_WEIGHTS, checkpoint_dir / DIT_INDEX
    if single.is_file() and index.is_file():
        raise ConversionError(
            f"{checkpoint_dir} holds both {DIT_WEIGHTS} and {DIT_INDEX}; a release has one or the other, remove the "
            "one that does not belong"
        )
    if single.is_file():
        return [single]
    if not index.is_file():
        raise ConversionError(
            f"{checkpoint_dir} has no DiT weights: expected {DIT_WEIGHTS} (1.3B releases) or {DIT_INDEX} with its "
            "shards (14B releases)"
        )
    weight_map = _index_weight_map(index)
    files = [checkpoint_dir / name for name in sorted(set(weight_map.values()))]
    missing = [file.name for file in files if not file.is_file()]
    if missing:
        raise ConversionError(f"Shards listed in {index.name} are missing from {checkpoint_dir}: {', '.join(missing)}")
    return files


def _index_weight_map(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise ConversionError(
            f"{index} is not a valid safetensors index (a JSON object with a `weight_map`)"
        ) from error
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) and "/" not in v for v in weight_map.values()):
        raise ConversionError(f"{index}: `weight_map` must map tensor names to shard file names in the same folder")
    return weight_map


def _check_index(checkpoint_dir: Path, tensors: dict[str, TensorInfo]) -> None:
    """The index must list exactly the tensors the shards hold, each in the shard that holds it."""
    index = checkpoint_dir / DIT_INDEX
    if not index.is_file():
        return
    weight_map = _index_weight_map(index)
    wrong = sorted(
        {
            f"{key}: index says {weight_map[key] if key in weight_map else 'nothing'}, found in {info.file.name}"
            for key, info in tensors.items()
            if weight_map.get(key) != info.file.name
        }
        | {f"{key}: listed in the index, in no shard" for key in weight_map if key not in tensors}
    )
    if wrong:
        raise ConversionError(f"{index.name} does not match its shards:\n    " + "\n    ".join(wrong[:20]))


def _task_from_weights(config: dict, tensors: dict[str, TensorInfo]) -> str:
    has_vace = any(key.startswith(("vace_blocks.", "vace_patch_embedding.")) for key in tensors)
    has_image = any(key.startswith("img_emb.") for key in tensors)
    if has_vace and has_image:
        raise ConversionError(
            "The DiT weights have both VACE blocks and a CLIP image embedder; no Wan 2.1 release does"
        )
    if has_vace:
        task = "vace"
    elif has_image:
        task = "flf2v" if "img_emb.emb_pos" in tensors else "i2v"
    else:
        task = "t2v"
    # VACE releases are written by `VaceWanModel`; whether their model_type reads "vace" or keeps the base "t2v" is
    # not documented, so both are accepted.
    allowed = {"vace": ("vace", "t2v")}.get(task, (task,))
    model_type = config.get("model_type")
    if model_type is not None and model_type not in allowed:
        raise ConversionError(
            f"config.json says model_type {model_type!r}, but the DiT weights are those of a {task.upper()} model "
            f"({_evidence(task)}); config.json and the weights come from different releases"
        )
    return task


def _evidence(task: str) -> str:
    return {
        "t2v": "no image embedder `img_emb.*`, no VACE blocks",
        "i2v": "an image embedder `img_emb.*` without the two-image position table `img_emb.emb_pos`",
        "flf2v": "an image embedder with the two-image position table `img_emb.emb_pos`",
        "vace": "VACE blocks `vace_blocks.*`",
    }[task]
