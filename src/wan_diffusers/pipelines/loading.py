"""Loading a pipeline with this package's model classes where a repo names diffusers' Wan classes."""

import importlib
import os

import torch

from .repo_checks import check_local_folder, check_repo

# diffusers' Wan classes that official Hub repos name in `model_index.json`, and the module of ours that replaces
# each. `from_pretrained` builds ours for those components (see `WanPipelineBase.from_pretrained`).
_OWN_CLASS_MODULES = {
    "WanTransformer3DModel": "wan_diffusers.models.transformer_wan",
    "WanVACETransformer3DModel": "wan_diffusers.models.transformer_wan_vace",
    "AutoencoderKLWan": "wan_diffusers.models.autoencoder_kl_wan",
}
# `from_pretrained` arguments that only matter for fetching a Hub repo.
_DOWNLOAD_KWARGS = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision", "variant")
# `from_pretrained` arguments forwarded to every model we load ourselves.
_MODEL_LOADING_KWARGS = ("variant", "use_safetensors", "low_cpu_mem_usage")


class WanModelClassesMixin:
    """`from_pretrained` for the Wan pipelines: the Wan models of a repo are built with `wan_diffusers`' classes."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load a pipeline folder or Hub repo, building this package's classes for the Wan models.

        Official Diffusers-format repos (`Wan-AI/Wan2.1-*-Diffusers`) name `["diffusers", "WanTransformer3DModel"]`
        and `["diffusers", "AutoencoderKLWan"]` in `model_index.json`; a plain `DiffusionPipeline.from_pretrained`
        would build diffusers' classes from them. Here those components are loaded with `wan_diffusers`'
        classes (same config and weight format) and handed to diffusers' loader, which loads the rest as usual.
        `torch_dtype` (a dtype or a `{component: dtype, "default": dtype}` dict), `variant`, `use_safetensors`,
        `low_cpu_mem_usage` and a pipeline `quantization_config` apply to them as to any other component.
        """
        folder = str(pretrained_model_name_or_path)
        check_local_folder(pretrained_model_name_or_path)
        if not os.path.isdir(folder):
            download_kwargs = {key: kwargs[key] for key in _DOWNLOAD_KWARGS if key in kwargs}
            folder = cls.download(folder, **download_kwargs)
        model_index = cls.load_config(folder)
        check_repo(cls, folder, model_index, _OWN_CLASS_MODULES, kwargs)  # the right class, configs match weights
        expected_modules, _ = cls._get_signature_keys(cls)
        for name in expected_modules:
            entry = model_index.get(name)
            if name in kwargs or not isinstance(entry, (list, tuple)) or len(entry) != 2:
                continue
            library, class_name = entry
            if library == "diffusers" and class_name in _OWN_CLASS_MODULES:
                own_class = getattr(importlib.import_module(_OWN_CLASS_MODULES[class_name]), class_name)
                kwargs[name] = own_class.from_pretrained(folder, subfolder=name, **_model_loading_kwargs(name, kwargs))
        return super().from_pretrained(folder, **kwargs)


def _model_loading_kwargs(name: str, kwargs: dict) -> dict:
    """The `from_pretrained` arguments of a pipeline that apply to its component `name`."""
    loading = {key: kwargs[key] for key in _MODEL_LOADING_KWARGS if key in kwargs}
    dtype = kwargs.get("torch_dtype", kwargs.get("dtype"))
    if isinstance(dtype, dict):
        dtype = dtype.get(name, dtype.get("default", torch.float32))
    if dtype is not None:
        loading["dtype"] = dtype
    quantization_config = kwargs.get("quantization_config")
    if quantization_config is not None and hasattr(quantization_config, "_resolve_quant_config"):
        resolved = quantization_config._resolve_quant_config(is_diffusers=True, module_name=name)
        if resolved is not None:
            loading["quantization_config"] = resolved
    return loading
