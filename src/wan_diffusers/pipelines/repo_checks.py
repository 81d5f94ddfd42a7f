"""What `from_pretrained` checks before loading a pipeline repo: that the folder exists, that the repo is one this
pipeline class runs, and that each Wan model's `config.json` agrees with its weights. Without them, a typo in a
path becomes "Repo id must be in the form...", an I2V repo loads into `WanPipeline` and fails at the first call, and
a config that disagrees with its weights loads with blocks dropped or left random."""

import importlib
import inspect
import json
import os
import re
from pathlib import Path

import torch

# The repos (by `_class_name` in model_index.json) each pipeline class runs: V2V runs T2V models; Wan 2.2's TI2V
# repos (`expand_timesteps`) are `WanPipeline` repos that also do image-to-video.
_RUNS_REPOS_OF = {
    "WanPipeline": ("WanPipeline", "WanVideoToVideoPipeline"),
    "WanVideoToVideoPipeline": ("WanPipeline", "WanVideoToVideoPipeline"),
    "WanImageToVideoPipeline": ("WanImageToVideoPipeline",),
    "WanVACEPipeline": ("WanVACEPipeline",),
}
_WEIGHT_NAMES = ("diffusion_pytorch_model", "model")


def check_local_folder(path: str | os.PathLike) -> None:
    """A path that is not an existing folder and cannot be a Hub repo id (`org/name`) does not exist."""
    text = str(path)
    if os.path.isdir(text):
        return
    if os.path.exists(text):
        raise ValueError(f"{text} is a file; give a pipeline folder (with model_index.json) or a Hub repo id")
    is_path = isinstance(path, Path) or text.startswith((".", "/", "~")) or text.count("/") != 1 or "\\" in text
    if is_path:
        raise FileNotFoundError(
            f"{text}: no such folder (and not a Hub repo id, which has the form org/name, e.g. "
            "Wan-AI/Wan2.1-T2V-1.3B-Diffusers)"
        )


def check_repo(
    pipeline_class: type, folder: str, model_index: dict, own_classes: dict[str, str], kwargs: dict
) -> None:
    """The checks of a repo before `from_pretrained` loads anything: its pipeline class, then each Wan model
    (`own_classes`: class name -> module) that is loaded from the repo, its config against its weights."""
    check_pipeline_class(pipeline_class, model_index, folder)
    if kwargs.get("quantization_config") is not None:
        return  # quantized weights are stored in other shapes
    expected_modules, _ = pipeline_class._get_signature_keys(pipeline_class)
    for name in expected_modules:
        entry = model_index.get(name)
        if name in kwargs or not isinstance(entry, (list, tuple)) or len(entry) != 2 or entry[1] not in own_classes:
            continue
        model_class = getattr(importlib.import_module(own_classes[entry[1]]), entry[1])
        check_config_matches_weights(model_class, folder, name, kwargs.get("variant"))


def check_pipeline_class(pipeline_class: type, model_index: dict, folder: str) -> None:
    """Refuse a repo of another task (an I2V repo loaded with `WanPipeline`), naming the class that runs it."""
    repo_class = model_index.get("_class_name")
    own = next((base.__name__ for base in pipeline_class.__mro__ if base.__name__ in _RUNS_REPOS_OF), None)
    if own is None or repo_class not in _RUNS_REPOS_OF:
        return
    if repo_class in _RUNS_REPOS_OF[own]:
        return
    if own == "WanImageToVideoPipeline" and repo_class == "WanPipeline" and model_index.get("expand_timesteps"):
        return
    raise ValueError(
        f"{folder} is a {repo_class} repo, which {pipeline_class.__name__} cannot run; load it with "
        f"`{repo_class}.from_pretrained(...)` (`from wan_diffusers import {repo_class}`)"
    )


def check_config_matches_weights(model_class: type, folder: str | os.PathLike, subfolder: str, variant=None) -> None:
    """Refuse a component whose `config.json` disagrees with its safetensors weights, naming the field.

    Reads `config.json` and the weight files' headers only (no tensor data) and builds the model on the meta device:
    every key and shape of the weights must be one the config makes. Values of the wrong type (`"eps": null`) are
    refused too. Components stored otherwise (`.bin`, single files) are left to the loader.
    """
    component = Path(folder) / subfolder
    config_path = component / "config.json"
    shapes = _weight_shapes(component, variant)
    if not config_path.is_file() or shapes is None:
        return
    config = json.loads(config_path.read_text())
    where = f"{subfolder}/config.json"
    _check_value_types(model_class, config, where)
    init_keys = set(inspect.signature(model_class.__init__).parameters)
    with torch.device("meta"):
        model = model_class(**{key: value for key, value in config.items() if key in init_keys})
    expected = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    if missing or unexpected:
        explanation = _explain_keys(config, set(expected), set(shapes), missing, unexpected)
        raise ValueError(f"{where} disagrees with the weights in {subfolder}/: {explanation}")
    for key, shape in expected.items():
        if tuple(shapes[key]) != shape:
            fields = _fields_for(config, shape, tuple(shapes[key]))
            raise ValueError(
                f"{where} disagrees with the weights in {subfolder}/: {key} is {list(shapes[key])} in the weights but "
                f"{list(shape)} by the config" + (f"; check {fields}" if fields else "")
            )


def _check_value_types(model_class: type, config: dict, where: str) -> None:
    """Each config value must have the kind of its constructor default (a number where the default is a number)."""
    for name, parameter in inspect.signature(model_class.__init__).parameters.items():
        default = parameter.default
        if name not in config or default is inspect.Parameter.empty or default is None or isinstance(default, bool):
            continue
        value = config[name]
        if isinstance(default, (int, float)):
            kind = int if isinstance(default, int) else (int, float)
            if isinstance(value, bool) or not isinstance(value, kind):
                rule = "an integer" if kind is int else "a number"
                raise ValueError(f"{where}: `{name}` must be {rule}, got {json.dumps(value)}")


def _explain_keys(config: dict, expected: set, stored: set, missing: list[str], unexpected: list[str]) -> str:
    """Say which count in the config the weights disagree with (`blocks.N.` -> `num_layers`), else list the keys."""
    prefixes = {match.group(1) for key in missing + unexpected if (match := re.match(r"(.*?)\.(\d+)\.", key))}
    for prefix in sorted(prefixes):
        pattern = re.compile(rf"{re.escape(prefix)}\.(\d+)\.")
        by_config = len({m.group(1) for key in expected if (m := pattern.match(key))})
        in_weights = len({m.group(1) for key in stored if (m := pattern.match(key))})
        if by_config != in_weights:
            counts = [name for name, value in config.items() if isinstance(value, int) and value == by_config]
            lists = [name for name, value in config.items() if isinstance(value, list) and len(value) == by_config]
            fields = [f"`{name}` ({config[name]})" for name in (counts or lists) if not isinstance(config[name], bool)]
            return (
                f"{' or '.join(fields) or 'the config'} makes {by_config} `{prefix}` but the weights hold {in_weights}"
            )
    return f"keys only in the config's model: {_short(missing)}; keys only in the weights: {_short(unexpected)}"


def _fields_for(config: dict, expected: tuple, stored: tuple) -> str:
    """The config fields whose value is a size that differs between the two shapes."""
    sizes = {size for size, other in zip(expected, stored) if size != other} if len(expected) == len(stored) else set()
    names = [
        f"`{name}` ({value})"
        for name, value in config.items()
        if isinstance(value, int) and not isinstance(value, bool) and value in sizes
    ]
    return ", ".join(names)


def _short(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "") if keys else "none"


def _weight_shapes(component: Path, variant) -> dict[str, tuple[int, ...]] | None:
    """Key -> shape from the safetensors headers of a component folder, or None if it holds none we can read."""
    from safetensors import safe_open

    suffix = f".{variant}.safetensors" if variant else ".safetensors"
    for name in _WEIGHT_NAMES:
        index = component / f"{name}{suffix}.index.json"
        files = [component / f"{name}{suffix}"]
        if index.is_file():
            files = sorted({component / file for file in json.loads(index.read_text())["weight_map"].values()})
        if all(file.is_file() for file in files):
            shapes = {}
            for file in files:
                with safe_open(file, framework="pt") as handle:
                    for key in handle.keys():
                        shapes[key] = tuple(handle.get_slice(key).get_shape())
            return shapes
    return None
