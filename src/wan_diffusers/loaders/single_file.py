"""`from_single_file` for the Wan models: one checkpoint file as users download it, to one of our models.

The files Wan users have, and what happens to each:

- The original release's DiT (`diffusion_pytorch_model.safetensors`, original `WanModel` keys) and VAE
  (`Wan2.1_VAE.pth`, read with `weights_only=True`): renamed by the converter's key maps
  (`conversion/transformer.py`, `conversion/vae.py`), the same rules `wan-diffusers convert` uses.
- ComfyUI's repackaged files: the same keys under `model.diffusion_model.` (or `diffusion_model.`), which is removed.
- fp8 files: `float8_e4m3fn` weights. "fp8_scaled" files also store a scalar `<layer>.scale_weight` per Linear (the
  weight is `w8 * scale_weight`; `scale_input` and the `scaled_fp8` marker are only used by fp8 matmul kernels and are
  dropped). By default every weight is dequantized to `torch_dtype`; with `keep_fp8=True` the Linear and convolution
  weights stay in float8 and are upcast layer by layer (diffusers' layerwise casting; the scaled layers through
  `hooks/fp8_scaled.py`).
- GGUF files (`.gguf`, city96's layout: original keys, 5-D tensors stored flattened with their shape in the
  `comfy.gguf.orig_shape.<name>` metadata): with `quantization_config=GGUFQuantizationConfig(...)` the weights stay
  quantized and diffusers' GGUF quantizer dequantizes them on the fly; without it they are dequantized on load.
- Files already in the Hub layout (a `diffusion_pytorch_model.safetensors` taken out of a repo): loaded as they are.

The configuration comes from `config=` (a Hub repo id or a local folder in the Hub format; a pipeline repo's
`transformer/` or `vae/` subfolder is used when `subfolder` is not given), or else from the tensor shapes, with no
network access: the DiT's widths, layer count, input channels, image embedder and VACE blocks all show in the shapes,
and the head count follows from the width because every Wan release uses 128 channels per head
(`WAN_ATTENTION_HEAD_DIM`); the VAE's config follows from its shapes (`vae_config_from_original`). Every key and
shape is checked; an error names the file and the missing, unexpected or mis-shaped keys.
"""

import os
import re
from collections.abc import Callable, Mapping

import torch
from diffusers.utils import logging

from ..conversion.rules import ConversionError, check_state_dict, rename_state_dict

logger = logging.get_logger(__name__)

# Channels per attention head in every released Wan DiT (1.3B: 1536 = 12 x 128, 14B: 5120 = 40 x 128).
WAN_ATTENTION_HEAD_DIM = 128
# Key prefixes of ComfyUI's repackaged files (its model wrapper is `model.diffusion_model`)
COMFY_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
# Tensors of fp8_scaled files that carry no weight of the model
_FP8_SCALE_SUFFIX = ".scale_weight"
_FP8_DROPPED = re.compile(r"(?:.*\.)?(?:scale_input|scaled_fp8)")
_FLOAT8_DTYPES = tuple(getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, name))
_GGUF_SHAPE_KEY = "comfy.gguf.orig_shape."


class FromWanSingleFileMixin:
    """Adds `from_single_file` to a Wan model class; the subclass sets `_single_file_subfolder` and implements
    `_single_file_layout` (the key map and the config inferred from the shapes)."""

    _single_file_subfolder: str = "transformer"

    @classmethod
    def from_single_file(
        cls,
        pretrained_model_link_or_path_or_dict: str | os.PathLike | Mapping[str, torch.Tensor],
        *,
        config: str | os.PathLike | None = None,
        subfolder: str | None = None,
        torch_dtype: torch.dtype | None = None,
        quantization_config=None,
        keep_fp8: bool = False,
        device: str | torch.device | None = None,
        force_download: bool = False,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool | None = None,
        revision: str | None = None,
        disable_mmap: bool = False,
    ):
        r"""Load the model from one checkpoint file: an original release file, a ComfyUI file, an fp8 or a GGUF file.

        Args:
            pretrained_model_link_or_path_or_dict: a local file, a Hub URL
                (`https://huggingface.co/<repo>/blob/main/<file>`) or a state dict.
            config: a Hub repo id or local folder in the Hub format whose config to use; default: inferred from
                the tensor shapes (no network).
            subfolder: the config's subfolder in `config`; default: `transformer` / `vae` when `config` is a
                pipeline repo.
            torch_dtype: the dtype to load floating-point weights in (default float32); the modules in
                `_keep_in_fp32_modules` stay float32 when it is a half type. fp8 weights are dequantized to it.
            quantization_config: `diffusers.GGUFQuantizationConfig(compute_dtype=...)` for a `.gguf` file to keep
                its weights quantized.
            keep_fp8: keep the weights of an fp8 file in float8 and compute in `torch_dtype` (layerwise casting,
                1 byte per weight instead of 2). With a file of another dtype, the weights are cast to float8.
            device: where to put the model (default: the CPU).
            force_download, token, cache_dir, local_files_only, revision: as `from_pretrained`, for URLs and `config`.
            disable_mmap: read a safetensors file whole instead of memory-mapping it (network drives).

        Example:
            ```py
            >>> from wan_diffusers import WanTransformer3DModel
            >>> transformer = WanTransformer3DModel.from_single_file(
            ...     "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/blob/main/split_files/"
            ...     "diffusion_models/wan2.1_t2v_1.3B_bf16.safetensors", torch_dtype=torch.bfloat16
            ... )
            ```
        """
        download = dict(
            force_download=force_download,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            revision=revision,
        )
        if keep_fp8 and quantization_config is not None:
            raise ValueError("`keep_fp8=True` and `quantization_config` exclude each other: choose one way to store")
        checkpoint, source = _load_checkpoint(pretrained_model_link_or_path_or_dict, disable_mmap, download)
        return load_single_file_model(
            cls,
            checkpoint,
            source=source,
            config=config,
            subfolder=subfolder,
            torch_dtype=torch_dtype,
            quantization_config=quantization_config,
            keep_fp8=keep_fp8,
            device=device,
            download=download,
        )

    @classmethod
    def _single_file_layout(cls, state_dict: dict, shapes: dict, what: str) -> tuple[dict, Callable[[], dict] | None]:
        """(state dict in the Hub layout, a function inferring the config from the shapes, or None)."""
        raise NotImplementedError


def load_single_file_model(
    cls,
    checkpoint: Mapping[str, torch.Tensor],
    *,
    source: str,
    config=None,
    subfolder: str | None = None,
    torch_dtype: torch.dtype | None = None,
    quantization_config=None,
    keep_fp8: bool = False,
    device=None,
    download: dict | None = None,
):
    """The body of `from_single_file`, for a checkpoint already read (`source` names it in errors)."""
    download = download or {}
    target_dtype = torch_dtype or torch.float32
    if not target_dtype.is_floating_point or target_dtype in _FLOAT8_DTYPES:
        raise ValueError(f"`torch_dtype` must be float32, bfloat16 or float16, got {torch_dtype}")

    # 1. the file's own keys: ComfyUI prefix, fp8 scales, GGUF shapes
    state_dict = _strip_prefix(checkpoint)
    scale_keys = [key for key in state_dict if key.endswith(_FP8_SCALE_SUFFIX)]
    scales = {key.removesuffix(_FP8_SCALE_SUFFIX): state_dict.pop(key) for key in scale_keys}
    for key in [key for key in state_dict if _FP8_DROPPED.fullmatch(key)]:
        del state_dict[key]
    is_gguf = any(hasattr(value, "quant_type") for value in state_dict.values())
    if quantization_config is not None and not is_gguf:
        raise ValueError(
            f"`quantization_config` is for pre-quantized GGUF files; {source} holds no GGUF-quantized tensors. "
            "To quantize a model after loading, see `wan_diffusers.quantization`"
        )
    shapes = {key: logical_shape(value) for key, value in state_dict.items()}

    # 2. the Hub layout (the converter's key map) and the config
    what = f"{cls.__name__} checkpoint {source}"
    converted, infer_config = cls._single_file_layout(state_dict, shapes, what)
    scales = _rename_scales(cls, scales, state_dict, shapes, what)
    if config is not None:
        model_config = _load_config(cls, config, subfolder, download)
    elif infer_config is not None:
        model_config = infer_config()
    else:
        raise ValueError(
            f"The config of {source} cannot be read from its shapes; pass `config=` (a Hub repo id or a folder in the "
            "Hub format, e.g. config='Wan-AI/Wan2.1-T2V-1.3B-Diffusers')"
        )

    # 3. the model on the meta device, every key and shape checked
    with torch.device("meta"):
        model = cls.from_config(model_config)
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    check_state_dict({key: _ShapeOnly(logical_shape(value)) for key, value in converted.items()}, expected, what=what)
    unknown_scales = sorted(set(scales) - {key.rsplit(".", 1)[0] for key in expected})
    if unknown_scales:
        raise ConversionError(f"The {what} has `scale_weight` for layers the model lacks: {', '.join(unknown_scales)}")

    # 4. the weights
    half = target_dtype in (torch.float16, torch.bfloat16)
    keep_in_fp32 = list(model._keep_in_fp32_modules or []) if half else []
    if quantization_config is not None:
        model = _load_gguf_quantized(model, converted, quantization_config, target_dtype, keep_in_fp32)
    else:
        # With `keep_fp8`, the Linear and convolution layers whose weights the file stores in float8 keep them.
        kept = _float8_layers(model, converted) if keep_fp8 else {}
        weights = {}
        for key in list(converted):
            tensor = converted.pop(key)  # release the file's tensor once converted
            module = key.rsplit(".", 1)[0]
            if module in kept and key.endswith(".weight"):
                weights[key] = tensor  # upcast at each call by the layer's hook
                continue
            dtype = torch.float32 if any(name in key.split(".") for name in keep_in_fp32) else target_dtype
            weights[key] = _dequantized(tensor, scales.get(module) if key.endswith(".weight") else None, dtype)
        model.load_state_dict(weights, strict=True, assign=True)
        if keep_fp8 and not kept:  # a file of another dtype: diffusers' layerwise casting over the whole model
            model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=target_dtype)
        _apply_fp8_hooks(model, kept, scales, target_dtype)
    if device is not None:
        model.to(device)
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------
# The key maps and configs of each model (called through `_single_file_layout`)


def transformer_layout(model_cls, state_dict: dict, shapes: dict, what: str) -> tuple[dict, Callable[[], dict] | None]:
    """A DiT file in the original layout is renamed by the converter's `TRANSFORMER_RULES` and its config inferred from
    the shapes; a file already in the Hub layout is returned as it is (config: `config=` only)."""
    from ..conversion.transformer import TRANSFORMER_RULES, transformer_config_from_original

    if "patch_embedding.weight" not in shapes:
        raise ConversionError(f"The {what} is not a Wan DiT: it has no `patch_embedding.weight`")
    if not any(key.startswith("blocks.") and ".self_attn." in key for key in shapes):
        return dict(state_dict), None  # the Hub layout
    converted = rename_state_dict(state_dict, TRANSFORMER_RULES, what=what)
    return converted, lambda: transformer_config_from_original(original_config_from_shapes(shapes, what), shapes)


def original_config_from_shapes(shapes: Mapping[str, tuple[int, ...]], what: str = "DiT") -> dict:
    """The original `WanModel` constructor arguments (as a release's `config.json` holds them), read from the shapes
    of its weights (original keys). The head count is the width over 128, as in every release."""
    dim, in_dim = shapes["patch_embedding.weight"][:2]
    patch_area = shapes["patch_embedding.weight"][-1] * shapes["patch_embedding.weight"][-2]
    if dim % WAN_ATTENTION_HEAD_DIM:
        raise ConversionError(
            f"The {what} has width {dim}, not a multiple of {WAN_ATTENTION_HEAD_DIM} channels per head as in every "
            "Wan release, so its head count cannot be inferred; pass `config=` (a folder or repo with its config)"
        )
    num_layers = len({m[1] for key in shapes if (m := re.match(r"blocks\.(\d+)\.", key))})
    config = {
        "dim": dim,
        "in_dim": in_dim,
        "out_dim": shapes["head.head.weight"][0] // patch_area,
        "ffn_dim": shapes["blocks.0.ffn.0.weight"][0],
        "freq_dim": shapes["time_embedding.0.weight"][1],
        "num_heads": dim // WAN_ATTENTION_HEAD_DIM,
        "num_layers": num_layers,
        "eps": 1e-6,  # every release
    }
    num_hints = len({m[1] for key in shapes if (m := re.match(r"vace_blocks\.(\d+)\.", key))})
    if num_hints:
        # the released VACE models feed evenly spaced blocks: 1.3B every 2nd of 30, 14B every 5th of 40
        config["vace_layers"] = list(range(0, num_layers, max(num_layers // num_hints, 1)))[:num_hints]
    return config


def vae_layout(model_cls, state_dict: dict, shapes: dict, what: str) -> tuple[dict, Callable[[], dict] | None]:
    """A VAE file in the original layout (`Wan2.1_VAE.pth`) is renamed by the converter's rules and its config read
    from the shapes; one in the Hub layout gets the default config (the released VAE's) unless `config=` is given."""
    from ..conversion.vae import convert_vae_state_dict, vae_config_from_original

    if "encoder.conv1.weight" in shapes:
        config = vae_config_from_original(shapes)
        return convert_vae_state_dict(state_dict, config), lambda: config
    if "encoder.conv_in.weight" in shapes:
        return dict(state_dict), lambda: {}  # the defaults are the released VAE's
    raise ConversionError(f"The {what} is not a Wan VAE: it has neither `encoder.conv1.weight` nor `encoder.conv_in`")


# ----------------------------------------------------------------------------------------------------------------
# Reading


def _load_checkpoint(path_or_dict, disable_mmap: bool, download: dict) -> tuple[dict, str]:
    from diffusers.loaders.single_file_utils import is_valid_url, load_single_file_checkpoint

    if isinstance(path_or_dict, Mapping):
        return dict(path_or_dict), "state dict"
    path = os.fspath(path_or_dict)
    if not os.path.isfile(path) and not is_valid_url(path):
        raise FileNotFoundError(
            f"`pretrained_model_link_or_path_or_dict`: no such file: {path} (give a local file, a Hub URL such as "
            "https://huggingface.co/<repo>/blob/main/<file>, or a state dict)"
        )
    try:
        checkpoint = load_single_file_checkpoint(path, disable_mmap=disable_mmap, **download)
    except (OSError, ValueError, RuntimeError) as error:
        raise ConversionError(f"Cannot read {path}: {error}") from error
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ConversionError(f"{path} must hold a state dict (parameter name -> tensor)")
    checkpoint = dict(checkpoint)
    if path.endswith(".gguf"):
        for key, shape in _gguf_original_shapes(path).items():
            if key in checkpoint and not hasattr(checkpoint[key], "quant_type"):
                checkpoint[key] = checkpoint[key].reshape(shape)
    return checkpoint, path


def _gguf_original_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Shapes of tensors that the GGUF writer flattened (GGUF holds at most 4 dimensions), from the metadata that
    city96's converter writes (`comfy.gguf.orig_shape.<name>`); diffusers' GGUF reader does not apply them."""
    from gguf import GGUFReader

    shapes = {}
    for name, field in GGUFReader(path).fields.items():
        if name.startswith(_GGUF_SHAPE_KEY):
            shapes[name[len(_GGUF_SHAPE_KEY) :]] = tuple(int(field.parts[index][0]) for index in field.data)
    return shapes


def _strip_prefix(checkpoint: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in COMFY_PREFIXES:
        if any(key.startswith(prefix) for key in checkpoint):
            return {key.removeprefix(prefix): value for key, value in checkpoint.items() if key.startswith(prefix)}
    return dict(checkpoint)


def _load_config(cls, config, subfolder: str | None, download: dict) -> dict:
    config = os.fspath(config)
    if subfolder is None:
        local_pipeline = os.path.isdir(config) and not os.path.isfile(os.path.join(config, "config.json"))
        if local_pipeline or not os.path.isdir(config):
            subfolder = cls._single_file_subfolder
    try:
        return cls.load_config(config, subfolder=subfolder, **download)
    except OSError as error:
        raise OSError(
            f"`config`: cannot read the config of {cls.__name__} from {config!r} (subfolder {subfolder!r}): {error}"
        ) from error


def _rename_scales(cls, scales: dict, state_dict: dict, shapes: dict, what: str) -> dict[str, torch.Tensor]:
    """fp8 scales keyed by the module name in our layout (the key map renames `<layer>.weight`)."""
    if not scales:
        return {}
    renamed = {}
    for module, scale in scales.items():
        key = f"{module}.weight"
        if key not in state_dict:
            raise ConversionError(f"The {what} has `{module}.scale_weight` but no `{key}`")
        probe = {key: torch.empty(shapes[key], device="meta")}
        new_keys = list(cls._single_file_layout(probe, shapes, what)[0])
        if len(new_keys) != 1:
            raise ConversionError(f"The {what}: `{module}.scale_weight` belongs to a weight that is split or dropped")
        renamed[new_keys[0].rsplit(".", 1)[0]] = scale
    return renamed


# ----------------------------------------------------------------------------------------------------------------
# Tensors


class _ShapeOnly:
    """What `check_state_dict` reads of a tensor (its shape), for quantized tensors whose storage shape differs."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape


def logical_shape(tensor: torch.Tensor) -> tuple[int, ...]:
    """The shape a tensor has once dequantized: a GGUF tensor stores `[..., bytes per row]`."""
    quant_type = getattr(tensor, "quant_type", None)
    if quant_type is None:
        return tuple(tensor.shape)
    from gguf import GGML_QUANT_SIZES

    block_size, type_size = GGML_QUANT_SIZES[quant_type]
    return (*tensor.shape[:-1], tensor.shape[-1] // type_size * block_size)


def _dequantized(tensor: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    if hasattr(tensor, "quant_type"):
        from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor

        tensor = dequantize_gguf_tensor(tensor)
    if not tensor.is_floating_point():
        return tensor
    if scale is not None:
        return (tensor.to(torch.float32) * scale.to(torch.float32)).to(dtype)
    return tensor.to(dtype)


def _float8_layers(model: torch.nn.Module, converted: Mapping[str, torch.Tensor]) -> dict[str, torch.dtype]:
    """Linear and convolution layers (those diffusers' layerwise casting handles) whose weight the file stores in
    float8, outside `_keep_in_fp32_modules`: layer name -> its float8 dtype."""
    from diffusers.hooks._common import _GO_LC_SUPPORTED_PYTORCH_LAYERS

    keep_in_fp32 = model._keep_in_fp32_modules or []
    return {
        name: converted[f"{name}.weight"].dtype
        for name, module in model.named_modules()
        if isinstance(module, _GO_LC_SUPPORTED_PYTORCH_LAYERS)
        and f"{name}.weight" in converted
        and converted[f"{name}.weight"].dtype in _FLOAT8_DTYPES
        and not any(part in keep_in_fp32 for part in name.split("."))
    }


def _apply_fp8_hooks(model, kept: dict[str, torch.dtype], scales: dict, compute_dtype: torch.dtype) -> None:
    """Layerwise casting (diffusers' hook) on the kept float8 layers without a scale; the scaled ones get
    `hooks/fp8_scaled.py`, which applies the scale and leaves their bias in `compute_dtype`."""
    from diffusers.hooks.layerwise_casting import apply_layerwise_casting_hook

    from ..hooks.fp8_scaled import apply_fp8_weight_scales

    modules = dict(model.named_modules())
    for name, storage_dtype in kept.items():
        if name not in scales:
            apply_layerwise_casting_hook(modules[name], storage_dtype, compute_dtype, non_blocking=False)
    apply_fp8_weight_scales(model, {name: scales[name] for name in kept if name in scales}, compute_dtype)


def _load_gguf_quantized(model, converted: dict, quantization_config, dtype: torch.dtype, keep_in_fp32: list):
    """diffusers' GGUF path, as its own `from_single_file` runs it: Linear layers whose weights are quantized become
    `GGUFLinear`s holding the quantized blocks; everything else is loaded in `dtype`."""
    from diffusers.models.model_loading_utils import load_model_dict_into_meta
    from diffusers.quantizers import DiffusersAutoQuantizer

    quantizer = DiffusersAutoQuantizer.from_config(quantization_config)
    quantizer.validate_environment()
    dtype = quantizer.update_torch_dtype(dtype)
    keep_in_fp32 = list(model._keep_in_fp32_modules or [])  # the quantizer dequantizes these to float32
    quantizer.preprocess_model(model=model, device_map=None, state_dict=converted, keep_in_fp32_modules=keep_in_fp32)
    load_model_dict_into_meta(
        model,
        converted,
        dtype=dtype,
        device_map={"": torch.device("cpu")},
        hf_quantizer=quantizer,
        keep_in_fp32_modules=keep_in_fp32,
        unexpected_keys=[],
    )
    quantizer.postprocess_model(model)
    model.hf_quantizer = quantizer
    return model


class TransformerSingleFileMixin(FromWanSingleFileMixin):
    """`from_single_file` for the DiTs (`WanTransformer3DModel`, `WanVACETransformer3DModel`)."""

    _single_file_subfolder = "transformer"
    _single_file_layout = classmethod(transformer_layout)


class VAESingleFileMixin(FromWanSingleFileMixin):
    """`from_single_file` for `AutoencoderKLWan`."""

    _single_file_subfolder = "vae"
    _single_file_layout = classmethod(vae_layout)
