"""Conversion of the original Wan 2.1 releases into Hub-format pipeline repos.

Public API (imported lazily, so `import wan_diffusers.conversion.rules` stays cheap):

- `convert_release(checkpoint_dir, output_dir, *, dtype, max_shard_size, overwrite, push_to_hub, ...)`: the whole
  job, atomic and streaming (see `convert.py`).
- `detect_release(checkpoint_dir)` -> `WanRelease`: which variant a release folder holds, from its files and weights.
- `plan_components(release)`: the validated per-component conversions, before anything is written.
- `add_convert_arguments(parser)`, `run_convert(args)`: the command line (`wan-diffusers convert`,
  `conversion/convert_wan_to_diffusers.py`).
- The key maps as data: `TRANSFORMER_RULES`, `TEXT_ENCODER_RULES`, `IMAGE_ENCODER_RULES`, `vae_rules()`, and the
  engine: `Rule`, `rename_state_dict`, `check_state_dict`, `ConversionError`.
"""

import importlib

_EXPORTS = {
    "convert_release": "convert",
    "plan_components": "convert",
    "model_index": "convert",
    "detect_release": "detect",
    "WanRelease": "detect",
    "add_convert_arguments": "command",
    "run_convert": "command",
    "TRANSFORMER_RULES": "transformer",
    "transformer_config_from_original": "transformer",
    "TEXT_ENCODER_RULES": "text_encoder",
    "text_encoder_config_from_shapes": "text_encoder",
    "IMAGE_ENCODER_RULES": "image_encoder",
    "image_encoder_config_from_shapes": "image_encoder",
    "vae_rules": "vae",
    "vae_config_from_original": "vae",
    "Rule": "rules",
    "rename_state_dict": "rules",
    "check_state_dict": "rules",
    "ConversionError": "rules",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
