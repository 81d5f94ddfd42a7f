"""CFG-parallel: the two branches of classifier-free guidance on different ranks, as a diffusers `ModelHook`.

The pipeline runs guidance as one DiT call on a batch that holds every video twice, unconditional rows first
(`WanPipelineBase.enable_batched_guidance`). This hook, on the DiT, gives each of the `degree` groups of ranks its
slice of that batch (rank group 0 the unconditional rows, group 1 the conditional ones) and all-gathers the
predictions back into the full batch, so every rank applies `uncond + g * (cond - uncond)` to the same tensors. Each
sample is computed exactly as in a single process; only where it is computed changes. A batch that does not split
(guidance off and one video) runs whole on every rank.
"""

import inspect

import torch
import torch.distributed as dist
from diffusers.hooks import HookRegistry, ModelHook

HOOK_NAME = "wan_cfg_parallel"
# The DiT arguments with one row per sample; the others (scales, flags) are shared by the whole batch.
_BATCHED_ARGUMENTS = (
    "hidden_states",
    "timestep",
    "encoder_hidden_states",
    "encoder_hidden_states_image",
    "control_hidden_states",
)


class CFGParallelHook(ModelHook):
    """Split the batch over the ranks of `group` before the DiT runs, and all-gather its output after."""

    _is_stateful = False

    def __init__(self, group: dist.ProcessGroup):
        super().__init__()
        self.group = group
        self.degree = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self._split = False

    def initialize_hook(self, module):
        self._parameters = list(inspect.signature(type(module).forward).parameters)[1:]  # without `self`
        return module

    def pre_forward(self, module, *args, **kwargs):
        arguments = dict(zip(self._parameters, args), **kwargs)
        batch_size = arguments["hidden_states"].shape[0]
        self._split = batch_size % self.degree == 0 and batch_size > 1
        if not self._split:
            return args, kwargs
        for name in _BATCHED_ARGUMENTS:
            value = arguments.get(name)
            if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch_size:
                arguments[name] = value.chunk(self.degree)[self.rank]
        return (), arguments

    def post_forward(self, module, output):
        if not self._split:
            return output
        sample = output[0] if isinstance(output, tuple) else output.sample
        parts = [torch.empty_like(sample) for _ in range(self.degree)]
        dist.all_gather(parts, sample.contiguous(), group=self.group)
        gathered = torch.cat(parts)
        if isinstance(output, tuple):
            return (gathered, *output[1:])
        output.sample = gathered
        return output


def apply_cfg_parallel(model: torch.nn.Module, group: dist.ProcessGroup) -> None:
    """Run `model`'s batch split over the ranks of `group` (see the module docstring)."""
    HookRegistry.check_if_exists_or_initialize(model).register_hook(CFGParallelHook(group), HOOK_NAME)
