"""Convert an original Wan 2.1 or Wan 2.2 release folder into a complete Hub-format pipeline repo.

`convert_release` is the whole job, in four steps:

1. Check the arguments and inspect the release (`detect_release`: files, `config.json`, weight headers).
2. Plan every component (`ComponentConversion`): key maps, configs from weight shapes, models on the meta device,
   strict key and shape checks. Any problem with the input is raised here, before anything is written.
3. Claim `output_dir` (create it empty, exclusively), write the repo into a staging folder beside it
   (`.<name>.partial-<id>`), component by component and tensor by tensor, then rename it onto `output_dir`. Any
   failure, including Ctrl-C and SIGTERM, removes both; an existing pipeline repo (with `overwrite=True`) is only
   replaced once the new one is complete. Leftovers of killed runs are found by name and marker (`utils.atomic`).
4. Optionally upload the folder to the Hub.

The repo's `model_index.json` records our classes for the transformer and the VAE under their module paths
(`["wan_diffusers.models.transformer_wan", "WanTransformer3DModel"]`), exactly as `save_pretrained` of a pipeline
holding them does; see README.md in this folder for why and what it means for loading.
"""

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import diffusers
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.utils import logging

from ..utils import atomic
from ..utils.dtypes import FLOAT_DTYPES, dtype_from_name
from .checkpoint_io import TensorReader, parse_size
from .component import ComponentConversion, meta_model
from .detect import WanRelease, detect_release
from .image_encoder import IMAGE_ENCODER_RULES, image_encoder_config_from_shapes, image_processor_for
from .model_card import ModelCardInfo, render_model_card
from .rules import ConversionError
from .text_encoder import TEXT_ENCODER_RULES, text_encoder_config_from_shapes
from .transformer import TRANSFORMER_RULES, transformer_config_from_original
from .vae import vae_config_from_original, vae_rules

logger = logging.get_logger(__name__)

# Tokenizer folders of the releases hold only tokenizer files; anything that looks like weights is not copied.
_NOT_TOKENIZER_FILES = (".bin", ".safetensors", ".pth", ".pt", ".h5", ".msgpack", ".onnx")


def convert_release(
    checkpoint_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    dtype: str | torch.dtype | None = None,
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
    push_to_hub: str | None = None,
    private: bool = False,
    clip_num_heads: int | None = None,
    resolution: str | None = None,
    shift: float | None = None,
) -> Path:
    """Convert an original Wan 2.1 or Wan 2.2 release folder into a Hub-format pipeline repo at `output_dir`.

    A Wan 2.2 A14B release's `high_noise_model/` becomes `transformer/` and `low_noise_model/` `transformer_2/`, with
    the release's `boundary_ratio` in `model_index.json`; TI2V-5B gets `expand_timesteps` (per-token timesteps) and
    its Wan 2.2 VAE. Both load into `WanPipeline` / `WanImageToVideoPipeline` as diffusers' official Wan 2.2 repos do.

    Args:
        checkpoint_dir: the release folder (e.g. `Wan2.1-T2V-14B/` as downloaded): `config.json`, the DiT
            safetensors (one file, or shards with their index), `Wan2.1_VAE.pth`, `models_t5_umt5-xxl-enc-bf16.pth`,
            `google/umt5-xxl/` and, for I2V/FLF2V, `models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`.
        output_dir: where the repo goes. Must not exist unless `overwrite`.
        dtype: "float32", "bfloat16" or "float16" to store the transformer, text encoder and image encoder in;
            None (default) keeps each checkpoint's own dtype (DiT float32, T5 bfloat16, CLIP float16 in the
            releases), which is lossless. The VAE always stays float32, and the transformer modules the model keeps
            in float32 (time embedding, modulation tables, norms) stay float32.
        max_shard_size: the largest weight file to write, e.g. "5GB" (10^9 bytes) or "2GiB".
        overwrite: replace an existing `output_dir` (only once the new repo is complete).
        push_to_hub: a Hub repo id ("user/name") to upload the result to.
        private: create the Hub repo as private.
        clip_num_heads: attention heads of the CLIP vision tower, which the weights do not show (default: 16, the
            released value, for width 1280).
        resolution: "480p" or "720p", the release's target resolution. The I2V-480P and I2V-720P releases have
            identical layouts, so this picks the scheduler shift (3.0 / 5.0) and the card's base model.
            Default: 480p for the 1.3B models, 720p otherwise.
        shift: the scheduler's shift, instead of the release's default (`WanRelease.default_shift`).

    Returns:
        The path of the written repo.
    """
    # 1. check inputs
    output_dir = Path(output_dir)
    torch_dtype = _parse_dtype(dtype)
    max_shard_bytes = parse_size(max_shard_size)
    if shift is not None and not shift > 0:
        raise ValueError(f"`shift` must be a positive number, got {shift!r}")
    if push_to_hub is not None:
        _check_repo_id(push_to_hub)
    release = detect_release(checkpoint_dir, resolution=resolution)
    clean_leftovers(output_dir)
    _check_output_dir(output_dir, release.checkpoint_dir, overwrite)

    # 2. plan every component: headers only; every key, shape and config problem is raised here
    components = plan_components(release, dtype=torch_dtype, clip_num_heads=clip_num_heads)
    _check_tokenizer(release, components["text_encoder"])
    shift = release.default_shift if shift is None else float(shift)

    # 3. write into a staging folder, then rename
    logger.info(f"Converting {release.name} ({release.task.upper()}) from {release.checkpoint_dir} to {output_dir}")
    with _staging_folder(output_dir, overwrite) as staging:
        for component in components.values():
            logger.info(f"Writing {component.folder}/ ({component.num_parameters:,} parameters)")
            component.write(staging / component.folder, max_shard_size=max_shard_bytes)
        _copy_tokenizer(release.tokenizer_dir, staging / "tokenizer")
        FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift).save_pretrained(staging / "scheduler")
        if "image_encoder" in components:
            image_processor_for(components["image_encoder"].model.config).save_pretrained(staging / "image_processor")
        _write_json(staging / "model_index.json", model_index(release, components))
        card = ModelCardInfo.from_conversion(release, components, shift=shift, repo_id=push_to_hub or output_dir.name)
        (staging / "README.md").write_text(render_model_card(card))

    # 4. upload
    if push_to_hub is not None:
        _push_to_hub(output_dir, push_to_hub, private=private)
    return output_dir


def plan_components(
    release: WanRelease, *, dtype: torch.dtype | None = None, clip_num_heads: int | None = None
) -> dict[str, ComponentConversion]:
    """Every weight-bearing component of the repo, planned and validated (no tensor data read yet)."""
    components = {"transformer": _transformer(release, dtype)}
    if release.expert_2 is not None:
        components["transformer_2"] = _transformer(release, dtype, expert_2=True)
    components |= {
        "vae": _vae(release),
        "text_encoder": _text_encoder(release, dtype),
    }
    if release.clip_checkpoint is not None:
        components["image_encoder"] = _image_encoder(release, dtype, clip_num_heads)
    _check_widths(components)
    return components


def _check_widths(components: dict[str, ComponentConversion]) -> None:
    """The encoders' output widths must be what the DiT reads: files of different releases do not mix."""
    transformer = components["transformer"].model.config
    widths = [("T5 encoder", components["text_encoder"].model.config.d_model, "text_dim", transformer.text_dim)]
    if "image_encoder" in components:
        clip_width = components["image_encoder"].model.config.hidden_size
        widths.append(("CLIP vision tower", clip_width, "image_dim", transformer.image_dim))
    for what, width, field, expected in widths:
        if width != expected:
            raise ConversionError(
                f"The {what} outputs {width} channels but the DiT's {field} is {expected}; the checkpoints come from "
                "different models"
            )


def model_index(release: WanRelease, components: dict[str, ComponentConversion]) -> dict:
    """`model_index.json`: the pipeline class and, per component, the library and class that load it."""
    index = {
        "_class_name": release.pipeline_class_name,
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        # the class the official Wan repos name: it exists in transformers 4 and 5 and reads `tokenizer.json`
        "tokenizer": ["transformers", "T5TokenizerFast"],
    }
    for name, component in components.items():
        index[name] = [component.library, component.class_name]
    if "image_encoder" in components:
        index["image_processor"] = ["transformers", "CLIPImageProcessor"]
    if release.generation == "2.2":  # pipeline config fields, named and placed as in the official Wan 2.2 repos
        index["boundary_ratio"] = release.variant.boundary_ratio
        index["expand_timesteps"] = release.variant.expand_timesteps
    return dict(sorted(index.items()))


def _transformer(release: WanRelease, dtype: torch.dtype | None, expert_2: bool = False) -> ComponentConversion:
    """`transformer/`, or for a Wan 2.2 A14B release with `expert_2` the low-noise expert as `transformer_2/`."""
    import wan_diffusers

    try:
        model_class = getattr(wan_diffusers, release.transformer_class_name)
    except ImportError as error:  # the VACE model is a separate module
        raise ConversionError(
            f"Converting a {release.task.upper()} release needs {release.transformer_class_name}, "
            f"which this installation lacks ({error})"
        ) from error
    dit_config, tensors, files = release.dit_config, release.dit_tensors, release.dit_files
    if expert_2:
        dit_config, tensors, files = release.expert_2.config, release.expert_2.tensors, release.expert_2.files
    what = "low-noise DiT" if expert_2 else "high-noise DiT" if release.expert_2 is not None else "DiT"
    config = transformer_config_from_original(dit_config, {key: info.shape for key, info in tensors.items()})
    model = meta_model(lambda: model_class(**config), what=what)
    return ComponentConversion(
        folder="transformer_2" if expert_2 else "transformer",
        library=model_class.__module__,
        class_name=release.transformer_class_name,
        what=what,
        reader=TensorReader(files, what=what),
        rules=TRANSFORMER_RULES,
        model=model,
        save_config=model.save_config,
        weights_name="diffusion_pytorch_model",
        dtype=dtype,
        keep_in_fp32=model_class._keep_in_fp32_modules or (),
    )


def _vae(release: WanRelease) -> ComponentConversion:
    from wan_diffusers import AutoencoderKLWan

    reader = TensorReader([release.vae_checkpoint], what="VAE")
    config = vae_config_from_original({key: info.shape for key, info in reader.infos.items()})
    model = meta_model(lambda: AutoencoderKLWan(**config), what="VAE")
    return ComponentConversion(
        folder="vae",
        library=AutoencoderKLWan.__module__,
        class_name="AutoencoderKLWan",
        what="VAE",
        reader=reader,
        rules=vae_rules(config["num_res_blocks"], len(config["dim_mult"]), is_residual=config["is_residual"]),
        model=model,
        save_config=model.save_config,
        weights_name="diffusion_pytorch_model",
        # The original runs the VAE in float32 whatever the DiT's precision, and it is small (~0.5 GB).
        dtype=torch.float32,
    )


def _text_encoder(release: WanRelease, dtype: torch.dtype | None) -> ComponentConversion:
    from transformers import UMT5EncoderModel

    reader = TensorReader([release.t5_checkpoint], what="T5 encoder")
    config = text_encoder_config_from_shapes({key: info.shape for key, info in reader.infos.items()})
    return _transformers_component("text_encoder", UMT5EncoderModel, config, reader, TEXT_ENCODER_RULES, dtype)


def _image_encoder(release: WanRelease, dtype: torch.dtype | None, num_heads: int | None) -> ComponentConversion:
    from transformers import CLIPVisionModelWithProjection

    reader = TensorReader([release.clip_checkpoint], what="CLIP")
    shapes = {key: info.shape for key, info in reader.infos.items()}
    config = image_encoder_config_from_shapes(shapes, num_attention_heads=num_heads)
    return _transformers_component(
        "image_encoder", CLIPVisionModelWithProjection, config, reader, IMAGE_ENCODER_RULES, dtype
    )


def _transformers_component(folder, model_class, config, reader, rules, dtype) -> ComponentConversion:
    what = reader.what
    model = meta_model(lambda: model_class(config), what=what)
    # transformers keeps `_keep_in_fp32_modules` in float32 for float16 only, `..._strict` for any half type
    keep = set(model_class._keep_in_fp32_modules_strict or ())
    if dtype == torch.float16:
        keep |= set(model_class._keep_in_fp32_modules or ())
    stored = (
        {dtype}
        if dtype is not None
        else {info.dtype for info in reader.infos.values() if info.dtype.is_floating_point}
    )
    # the dtype the weights mostly have, recorded in config.json as `save_pretrained` does
    config.dtype = dtype or (stored.pop() if len(stored) == 1 else torch.float32)

    def save_config(path: Path) -> None:
        config.save_pretrained(path)

    return ComponentConversion(
        folder=folder,
        library="transformers",
        class_name=model_class.__name__,
        what=what,
        reader=reader,
        rules=rules,
        model=model,
        save_config=save_config,
        weights_name="model",
        dtype=dtype,
        keep_in_fp32=sorted(keep),
    )


def _check_tokenizer(release: WanRelease, text_encoder: ComponentConversion) -> None:
    """The tokenizer must load, and its ids must fit the T5 embedding table."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(release.tokenizer_dir)
    except Exception as error:
        raise ConversionError(
            f"The T5 tokenizer folder {release.tokenizer_dir} does not load with transformers.AutoTokenizer "
            f"({type(error).__name__}: {error})"
        ) from error
    vocab_size = text_encoder.model.config.vocab_size
    if len(tokenizer) > vocab_size:
        raise ConversionError(
            f"The T5 tokenizer has {len(tokenizer)} tokens but the T5 embedding table only {vocab_size} rows; the "
            f"tokenizer in {release.tokenizer_dir} does not belong to this T5 checkpoint"
        )


def _copy_tokenizer(source: Path, destination: Path) -> None:
    destination.mkdir()
    for file in sorted(source.iterdir()):
        if file.is_file() and not file.name.endswith(_NOT_TOKENIZER_FILES):
            shutil.copyfile(file, destination / file.name)


def _parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    allowed = {name: dtype_from_name(name) for name in FLOAT_DTYPES}
    if dtype is None or isinstance(dtype, torch.dtype) and dtype in allowed.values():
        return dtype
    if isinstance(dtype, str) and dtype in allowed:
        return allowed[dtype]
    raise ValueError(
        f"`dtype` must be one of {', '.join(FLOAT_DTYPES)} or None (keep the checkpoints' dtypes), got {dtype!r}"
    )


def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(
            f"`push_to_hub` must be a Hub repo id like 'user/Wan2.1-T2V-1.3B', got {repo_id!r}"
        ) from error


def _check_output_dir(output_dir: Path, checkpoint_dir: Path, overwrite: bool) -> None:
    target, source = output_dir.resolve(), checkpoint_dir.resolve()
    if target == source or target in source.parents:
        raise ValueError(
            f"`output_dir` ({output_dir}) must not be the release folder or contain it: replacing it would delete "
            "the original files"
        )
    if not (output_dir.exists() or output_dir.is_symlink()):
        return
    claim = _claim_owner(output_dir)
    if claim is not None:
        raise ValueError(
            f"`output_dir` {output_dir} is being written by another conversion (process {claim}); wait for it to "
            "finish or choose another folder"
        )
    if not overwrite:
        raise ValueError(
            f"`output_dir` {output_dir} already exists; pass `overwrite=True` (--overwrite) to replace it, or choose "
            "another folder"
        )
    if not _is_pipeline_repo(output_dir):
        raise ValueError(
            f"`output_dir` {output_dir} is not a pipeline repo (a folder with model_index.json), and `overwrite` "
            "(--overwrite) only ever replaces one: remove it yourself if it can go, or choose another folder"
        )


def _is_pipeline_repo(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and (path / "model_index.json").is_file()


def _claim_owner(output_dir: Path) -> int | None:
    """The live process that holds `output_dir` as its claim (an empty folder with our marker), if any."""
    leftover = _claim(output_dir)
    return leftover.pid if leftover is not None and leftover.alive else None


def _claim(output_dir: Path) -> atomic.Leftover | None:
    """`output_dir` as the claim of a conversion (a folder holding only our marker), or None."""
    if not output_dir.is_dir() or output_dir.is_symlink() or sorted(os.listdir(output_dir)) != [atomic.MARKER]:
        return None
    found = atomic.find_leftovers(output_dir, own_folder=True)
    return found[0] if found else None


def clean_leftovers(output_dir: Path) -> None:
    """Remove what killed conversions to `output_dir` left behind (ours by name and marker), or report it.

    A staging folder (`.<name>.partial-*`) or a claim (an `output_dir` holding only our marker) of a process that no
    longer runs is removed. A `.<name>.replaced-*` folder holds the repo an interrupted `--overwrite` was replacing:
    it is removed once a complete repo is in place, else reported (with the command that puts it back).
    """
    claim = _claim(output_dir)
    for leftover in atomic.find_leftovers(output_dir) + ([claim] if claim is not None else []):
        if leftover.alive:
            logger.warning(f"Another conversion is writing to {output_dir}: {leftover.describe()}")
        elif leftover.kind == "replaced" and not _is_pipeline_repo(output_dir):
            logger.warning(
                f"Found the previous repo of an interrupted --overwrite: {leftover.describe()}; to restore it: "
                f"mv {leftover.path} {output_dir}"
            )
        else:
            atomic.remove_folder(leftover.path)
            logger.warning(f"Removed the leftovers of an interrupted conversion: {leftover.describe()}")


@contextmanager
def _staging_folder(output_dir: Path, overwrite: bool) -> Iterator[Path]:
    """A fresh folder beside `output_dir` that becomes `output_dir` if the block completes, and vanishes if not.

    Without `overwrite`, `output_dir` is first created empty (with our marker), which fails if it exists: of two
    conversions to one folder only one proceeds, and a folder that appears meanwhile is never replaced. With
    `overwrite`, the existing pipeline repo is replaced only once the new one is complete.
    """
    with atomic.describe_os_error(output_dir):
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        claimed = False
        if not overwrite:
            try:
                output_dir.mkdir()
            except FileExistsError:
                raise ValueError(
                    f"`output_dir` {output_dir} appeared while converting (another conversion?); it was left as it is"
                ) from None
            claimed = True
            atomic.write_marker(output_dir, output_dir)
        staging = atomic.temporary_name(output_dir)
        staging.mkdir()
    try:
        with atomic.interrupt_on_sigterm():
            atomic.write_marker(staging, output_dir)
            with atomic.describe_os_error(output_dir):
                yield staging
                (staging / atomic.MARKER).unlink()
                if claimed:
                    (output_dir / atomic.MARKER).unlink()
                    try:
                        os.rmdir(output_dir)  # empty unless something else was put there meanwhile: keep that
                    except OSError:
                        raise ValueError(
                            f"`output_dir` {output_dir}: files appeared in it while converting; they were left as "
                            "they are and the repo was not written, choose another folder"
                        ) from None
                    claimed = False
                    os.rename(staging, output_dir)
                elif _is_pipeline_repo(output_dir):  # overwrite=True, checked before
                    _replace_repo(staging, output_dir)
                else:
                    os.rename(staging, output_dir)  # an empty folder is replaced; anything else raises
    except BaseException:  # also Ctrl-C and SIGTERM: a partial repo must never be left behind
        atomic.remove_folder(staging)
        if claimed and sorted(os.listdir(output_dir)) == [atomic.MARKER]:
            atomic.remove_folder(output_dir)
        raise


def _replace_repo(staging: Path, output_dir: Path) -> None:
    """Swap the complete new repo in for the old one, then delete the old one (and say what it was)."""
    size = atomic.format_size(atomic.folder_size(output_dir))
    try:
        replaced = json.loads((output_dir / "model_index.json").read_text()).get("_class_name", "pipeline")
    except (OSError, ValueError, AttributeError):
        replaced = "pipeline"
    retired = atomic.temporary_name(output_dir, "replaced")
    os.rename(output_dir, retired)
    try:
        atomic.write_marker(retired, output_dir)
        os.rename(staging, output_dir)
    except BaseException:
        (retired / atomic.MARKER).unlink(missing_ok=True)
        os.rename(retired, output_dir)  # put the previous repo back
        raise
    atomic.remove_folder(retired)
    logger.info(f"Replaced the previous {replaced} repo at {output_dir} ({size})")


def _write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


def _push_to_hub(folder: Path, repo_id: str, *, private: bool) -> None:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="Convert the original Wan 2.1 release")
    logger.info(f"Uploaded {folder} to https://huggingface.co/{repo_id}")
