"""Which Wan 2.1 or Wan 2.2 release a folder holds, read from its files and weights (never from the folder's name).

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

Wan 2.2 releases (Wan-Video/Wan2.2): T2V-A14B and I2V-A14B hold two DiTs, `high_noise_model/` and `low_noise_model/`
(each a `config.json` and sharded safetensors with their index; the diffusers components `transformer` and
`transformer_2`), next to `Wan2.1_VAE.pth` and the T5; I2V-A14B has no CLIP (its DiT takes 36 channels and has no
image embedder; `model_type` "i2v"). TI2V-5B holds one DiT at the top (`model_type` "ti2v", 48 channels) and
`Wan2.2_VAE.pth`; it does text-to-video and image-to-video with per-token timesteps.
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
WAN22_VAE_CHECKPOINT = "Wan2.2_VAE.pth"
# Wan 2.2 A14B: the expert folders and the pipeline components they become
EXPERT_FOLDERS = {"high_noise_model": "transformer", "low_noise_model": "transformer_2"}
T5_CHECKPOINT = "models_t5_umt5-xxl-enc-bf16.pth"
T5_TOKENIZER = "google/umt5-xxl"
CLIP_CHECKPOINT = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"

# the tasks an original release can hold (video-to-video runs T2V weights)
TASKS = tuple(dict.fromkeys(variant.task for variant in tasks.TASKS if variant.release is not None))
RESOLUTIONS = tasks.RESOLUTIONS
# config.json fields every release writes (the original `WanModel` saves its constructor arguments)
_REQUIRED_CONFIG = ("dim", "eps", "ffn_dim", "freq_dim", "in_dim", "num_heads", "num_layers", "out_dim")
# (dim, num_layers) of the released DiTs, per generation (a Wan 2.2 A14B expert has the 14B shape)
_RELEASED_SIZES = {
    "2.1": {(1536, 30): "1.3B", (5120, 40): "14B"},
    "2.2": {(5120, 40): "A14B", (3072, 30): "5B"},
}


@dataclass(frozen=True)
class DiTFiles:
    """One DiT of a release: its `config.json`, weight files and tensor headers."""

    folder: Path
    config: dict
    files: tuple[Path, ...]
    tensors: dict[str, TensorInfo] = field(repr=False)


@dataclass(frozen=True)
class WanRelease:
    """An original Wan 2.1 or Wan 2.2 release folder, inspected (headers only, no tensor data read).

    For a Wan 2.2 A14B release `dit_*` describe the high-noise expert and `expert_2` the low-noise one.
    """

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
    clip_checkpoint: Path | None  # Wan 2.1 I2V and FLF2V only
    generation: str = "2.1"  # "2.1" or "2.2"
    expert_2: "DiTFiles | None" = None  # Wan 2.2 A14B: the low-noise expert (`low_noise_model/`)

    @property
    def variant(self) -> tasks.WanTask:
        """The release's record in `wan_diffusers.tasks` (for another size: the task's record at this resolution).

        A Wan 2.2 release is its model's record whatever its size: two experts are A14B, per-token timesteps TI2V-5B.
        """
        if self.generation == "2.2":
            return tasks.find_variant(self.task, size="A14B" if self.expert_2 is not None else "5B")
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
        if self.is_released_size:
            return self.variant.release
        model = self.variant.release.split("-", 1)[1] if self.generation == "2.2" else self.task.upper()
        return f"Wan{self.generation}-{model} (custom size)"

    @property
    def base_model(self) -> str | None:
        """The Hub id of the original release, for the model card (None for other sizes)."""
        return self.variant.base_model if self.is_released_size else None

    @property
    def default_shift(self) -> float:
        """The scheduler shift the original's `generate.py` uses for this release (`tasks.WanTask.shift`)."""
        return self.variant.shift


def detect_release(checkpoint_dir: str | Path, *, resolution: str | None = None) -> WanRelease:
    """Inspect an original Wan 2.1 or Wan 2.2 release folder: which variant it is and where each file is.

    Raises `ConversionError` (a `ValueError`) naming every missing or inconsistent file. Reads headers only.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise ValueError(
            f"`checkpoint_dir` must be an original Wan 2.1 or Wan 2.2 release folder, got {str(checkpoint_dir)!r} "
            "which is not a folder"
        )
    if resolution is not None and resolution.lower() not in RESOLUTIONS:
        raise ValueError(f"`resolution` must be one of {RESOLUTIONS} or None, got {resolution!r}")

    experts = _read_experts(checkpoint_dir)
    dit = experts[0] if experts else _read_dit(checkpoint_dir)
    is_ti2v = not experts and dit.config.get("model_type") == "ti2v"
    generation = "2.2" if experts or is_ti2v else "2.1"
    if generation == "2.2":
        task = _wan22_task(dit, two_experts=bool(experts))
    else:
        task = _task_from_weights(dit.config, dit.tensors)
    size = _RELEASED_SIZES[generation].get((dit.config["dim"], dit.config["num_layers"]))
    if generation == "2.2" and size != ("A14B" if experts else "5B"):
        size = None  # the other Wan 2.2 model's shape: a custom size of this one

    vae_checkpoint = WAN22_VAE_CHECKPOINT if is_ti2v else VAE_CHECKPOINT
    missing = [name for name in (vae_checkpoint, T5_CHECKPOINT) if not (checkpoint_dir / name).is_file()]
    if not (checkpoint_dir / T5_TOKENIZER).is_dir():
        missing.append(f"{T5_TOKENIZER}/ (the T5 tokenizer folder)")
    needs_clip = generation == "2.1" and task in ("i2v", "flf2v")
    if needs_clip and not (checkpoint_dir / CLIP_CHECKPOINT).is_file():
        missing.append(f"{CLIP_CHECKPOINT} (the CLIP image encoder, needed by {task.upper()})")
    if missing:
        kind = f"Wan 2.2 {'TI2V' if is_ti2v else task.upper()}" if generation == "2.2" else task.upper()
        raise ConversionError(
            f"The release folder {checkpoint_dir} lacks files that a {kind} release has:\n    "
            + "\n    ".join(missing)
        )

    if resolution is None:
        # FLF2V was only released at 720P; T2V and VACE run at both and their default shift does not depend on it.
        # Wan 2.2's defaults do not depend on the resolution.
        resolution = "480p" if size == "1.3B" else "720p"
    return WanRelease(
        checkpoint_dir=checkpoint_dir,
        task=task,
        size=size,
        resolution=resolution.lower(),
        dit_config=dit.config,
        dit_files=dit.files,
        dit_tensors=dit.tensors,
        vae_checkpoint=checkpoint_dir / vae_checkpoint,
        t5_checkpoint=checkpoint_dir / T5_CHECKPOINT,
        tokenizer_dir=checkpoint_dir / T5_TOKENIZER,
        clip_checkpoint=checkpoint_dir / CLIP_CHECKPOINT if needs_clip else None,
        generation=generation,
        expert_2=experts[1] if experts else None,
    )


def _read_dit(folder: Path) -> DiTFiles:
    config = _read_dit_config(folder)
    files = _dit_files(folder)
    tensors = TensorReader(files, what="DiT").infos
    _check_index(folder, tensors)
    return DiTFiles(folder=folder, config=config, files=tuple(files), tensors=tensors)


def _read_experts(checkpoint_dir: Path) -> tuple[DiTFiles, ...]:
    """The two experts of a Wan 2.2 A14B release (high noise first), or () for a folder with one DiT."""
    folders = [checkpoint_dir / name for name in EXPERT_FOLDERS]
    present = [folder for folder in folders if folder.is_dir()]
    if not present:
        return ()
    if len(present) == 1:
        missing = next(folder.name for folder in folders if not folder.is_dir())
        raise ConversionError(
            f"{checkpoint_dir} has {present[0].name}/ but no {missing}/: a Wan 2.2 A14B release holds both experts"
        )
    if (checkpoint_dir / DIT_CONFIG).is_file():
        raise ConversionError(
            f"{checkpoint_dir} holds both a top-level {DIT_CONFIG} and the expert folders "
            f"{'/, '.join(EXPERT_FOLDERS)}/; a release has one or the other"
        )
    high, low = (_read_dit(folder) for folder in folders)
    differences = sorted(
        {key for key in high.config.keys() | low.config.keys() if high.config.get(key) != low.config.get(key)}
        | {key for key in high.tensors.keys() ^ low.tensors.keys()}
        | {
            key
            for key in high.tensors.keys() & low.tensors.keys()
            if high.tensors[key].shape != low.tensors[key].shape
        }
    )
    if differences:
        raise ConversionError(
            f"The two experts of {checkpoint_dir} differ in structure ({', '.join(differences[:10])}); both come from "
            "one Wan 2.2 A14B release and have the same config and tensor shapes"
        )
    return high, low


def _wan22_task(dit: DiTFiles, *, two_experts: bool) -> str:
    """The task of a Wan 2.2 DiT: "t2v" (T2V-A14B and TI2V-5B, which also does image-to-video) or "i2v" (I2V-A14B:
    the image's latent and mask concatenated to the input, `in_dim` = 2 * `out_dim` + 4, no CLIP)."""
    config, tensors = dit.config, dit.tensors
    where = dit.folder / DIT_CONFIG
    if any(key.startswith(("img_emb.", "vace_")) for key in tensors):
        raise ConversionError(
            f"The DiT of {dit.folder} has CLIP image or VACE weights, which no Wan 2.2 T2V, I2V or TI2V release has"
        )
    conditioned = config["in_dim"] == 2 * config["out_dim"] + 4
    model_type = config.get("model_type", "i2v" if conditioned else "t2v")
    allowed = ("t2v", "i2v") if two_experts else ("ti2v",)
    if model_type not in allowed:
        raise ConversionError(
            f"{where} says model_type {model_type!r}; a Wan 2.2 release with "
            f"{'two experts' if two_experts else 'one DiT'} has {' or '.join(map(repr, allowed))}"
        )
    if (model_type == "i2v") != conditioned:
        raise ConversionError(
            f"{where}: model_type {model_type!r} does not fit in_dim {config['in_dim']} and out_dim {config['out_dim']} "
            "(an I2V DiT takes the noisy latent, 4 mask channels and the image latent: in_dim = 2 * out_dim + 4)"
        )
    return "i2v" if model_type == "i2v" else "t2v"


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
        raise ConversionError(f"{path} lacks fields every Wan release writes: {', '.join(missing)}")
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
