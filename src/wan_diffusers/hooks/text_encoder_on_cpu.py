"""Keep a text encoder on the CPU, with its inputs sent there, whatever offloading did to it (the original's `--t5_cpu`).

The UMT5-XXL encoder is 5.7 B parameters (11 GB in bf16) and runs once per prompt, so keeping it in system RAM costs
a few seconds per video and saves that much accelerator memory. The hook lives on the module, so it is also what marks
the module as kept on the CPU: `is_kept_on_cpu(module)`.

A hook only sees the module's forward, and the placement methods of a pipeline (`.to()`, `enable_model_cpu_offload`,
`enable_sequential_cpu_offload`) move modules outside any forward; `WanTextEncodingMixin` in
`wan_diffusers.pipelines.text` leaves a module marked here out of them.
"""

import accelerate.hooks
import torch
from accelerate.utils import send_to_device
from diffusers.hooks import HookRegistry, ModelHook

NAME = "text_encoder_on_cpu"


class TextEncoderOnCPUHook(ModelHook):
    """On registration: remove accelerate's offload hooks (which puts offloaded weights back where they were) and move
    the module to the CPU. On every call: send the tensor arguments to the CPU."""

    def initialize_hook(self, module: torch.nn.Module) -> torch.nn.Module:
        accelerate.hooks.remove_hook_from_module(module, recurse=True)
        return module.to("cpu")

    def pre_forward(self, module: torch.nn.Module, *args, **kwargs):
        return send_to_device(args, "cpu"), send_to_device(kwargs, "cpu")


def apply_text_encoder_on_cpu(module: torch.nn.Module) -> None:
    """Keep `module` on the CPU; called again (after offloading was enabled), it takes the module back to the CPU."""
    registry = HookRegistry.check_if_exists_or_initialize(module)
    hook = registry.get_hook(NAME)
    if hook is None:
        registry.register_hook(TextEncoderOnCPUHook(), NAME)
    else:
        hook.initialize_hook(module)


def remove_text_encoder_on_cpu(module: torch.nn.Module) -> None:
    """Undo `apply_text_encoder_on_cpu` (the module stays where it is until it is moved)."""
    if is_kept_on_cpu(module):
        module._diffusers_hook.remove_hook(NAME, recurse=False)


def is_kept_on_cpu(module: torch.nn.Module | None) -> bool:
    """Whether `apply_text_encoder_on_cpu` holds `module` on the CPU."""
    registry = getattr(module, "_diffusers_hook", None)
    return registry is not None and registry.get_hook(NAME) is not None
