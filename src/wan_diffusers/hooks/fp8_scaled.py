"""Linear layers that keep the weights of an "fp8_scaled" checkpoint in float8 and apply its per-layer scale.

An fp8_scaled file (ComfyUI's format) stores each large Linear weight as `w8 = w / s` in `float8_e4m3fn` with a scalar
`scale_weight` `s` per layer, so that `w8` uses fp8's whole range. diffusers' layerwise casting upcasts a stored
weight but knows no scale, and folding `s` into the fp8 values would push most of Wan's small weights into fp8's
subnormal range. This hook computes `x @ (w8.to(compute_dtype) * s)^T + b` instead: storage stays 1 byte per weight,
and the result is exactly that of the dequantized weights in `compute_dtype`.
"""

import torch
import torch.nn.functional as F
from diffusers.hooks import HookRegistry, ModelHook

NAME = "fp8_weight_scale"


class Float8ScaledLinearHook(ModelHook):
    """Replaces a Linear's forward: upcast the float8 weight to `compute_dtype`, multiply by `scale`, apply."""

    def __init__(self, scale: torch.Tensor, compute_dtype: torch.dtype):
        super().__init__()
        self.scale = scale.detach().to(torch.float32).reshape(())
        self.compute_dtype = compute_dtype

    def new_forward(self, module: torch.nn.Linear, hidden_states: torch.Tensor) -> torch.Tensor:
        weight = module.weight.to(self.compute_dtype) * self.scale.to(module.weight.device, self.compute_dtype)
        bias = None if module.bias is None else module.bias.to(self.compute_dtype)
        return F.linear(hidden_states.to(self.compute_dtype), weight, bias)


def apply_fp8_weight_scales(
    model: torch.nn.Module, scales: dict[str, torch.Tensor], compute_dtype: torch.dtype
) -> list[str]:
    """Register `Float8ScaledLinearHook` on each Linear named in `scales` (module name -> scalar scale).

    The Linear's weight must already be stored in float8. Returns the names of the layers that got the hook.
    """
    modules = dict(model.named_modules())
    hooked = []
    for name, scale in scales.items():
        module = modules[name]
        if not isinstance(module, torch.nn.Linear):
            raise TypeError(f"`scale_weight` of {name!r} belongs to a {type(module).__name__}, not a Linear layer")
        registry = HookRegistry.check_if_exists_or_initialize(module)
        registry.register_hook(Float8ScaledLinearHook(scale, compute_dtype), NAME)
        hooked.append(name)
    return hooked
