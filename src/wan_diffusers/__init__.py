"""Wan 2.1 video generation for the Hugging Face diffusers ecosystem.

The public classes are imported lazily: `import wan_diffusers` is cheap and has no side effects, and a class's
module is imported the first time the class is looked up (which is also how diffusers finds them when it loads a
`model_index.json` that names the `wan_diffusers` library).
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module (relative to this package) that defines it
_EXPORTS = {
    "WanTransformer3DModel": "models.transformer_wan",
    "WanVACETransformer3DModel": "models.transformer_wan_vace",
    "AutoencoderKLWan": "models.autoencoder_kl_wan",
    "WanPipeline": "pipelines.pipeline_wan",
    "WanImageToVideoPipeline": "pipelines.pipeline_wan_i2v",
    "WanVideoToVideoPipeline": "pipelines.pipeline_wan_video2video",
    "WanVACEPipeline": "pipelines.pipeline_wan_vace",
    "WanPipelineOutput": "pipelines.pipeline_output",
    "tiny_model_path": "assets",
    "tiny_lora_path": "assets",
}

__all__ = [
    "AutoencoderKLWan",
    "WanImageToVideoPipeline",
    "WanPipeline",
    "WanPipelineOutput",
    "WanTransformer3DModel",
    "WanVACEPipeline",
    "WanVACETransformer3DModel",
    "WanVideoToVideoPipeline",
    "__version__",
    "tiny_lora_path",
    "tiny_model_path",
]


def __getattr__(name: str):
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from .assets import tiny_lora_path, tiny_model_path
    from .models.autoencoder_kl_wan import AutoencoderKLWan
    from .models.transformer_wan import WanTransformer3DModel
    from .models.transformer_wan_vace import WanVACETransformer3DModel
    from .pipelines.pipeline_output import WanPipelineOutput
    from .pipelines.pipeline_wan import WanPipeline
    from .pipelines.pipeline_wan_i2v import WanImageToVideoPipeline
    from .pipelines.pipeline_wan_vace import WanVACEPipeline
    from .pipelines.pipeline_wan_video2video import WanVideoToVideoPipeline
