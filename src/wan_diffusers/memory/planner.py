"""Choose and apply the fastest placement of a Wan pipeline that fits a memory budget.

The plans, fastest first (each later one moves more weights per step between the CPU and the device):

1. `resident`: every component on the device.
2. `text encoder on CPU`: umT5-XXL (11 GB in bf16) runs on the CPU once per prompt (the original's `--t5_cpu`);
   everything else resident. From here on the text encoder stays on the CPU.
3. `model offload`: one model at a time on the device (accelerate's hooks: the DiT while denoising, the VAE while
   decoding).
4. `group offload, N blocks`: the DiT's blocks move to the device N at a time (diffusers' `enable_group_offload`,
   block level); on CUDA the next group is copied on a side stream while the current one runs (`use_stream=True`),
   so two groups are resident. The largest N that fits is chosen: fewer, larger copies.
5. `leaf offload`: the same, one layer at a time.

Each placement is tried without VAE tiling first, then with it (tiling recomputes the tile overlaps: a slower decode,
but cheaper than the next placement). The estimates come from `MemoryModel` (see `model.py` for the formulas).
"""

import re
from dataclasses import dataclass, field, replace

import torch
from diffusers.utils import logging

from ..conversion.checkpoint_io import parse_size
from .model import GB, RESERVED_BYTES, MemoryModel, memory_model_from_components

logger = logging.get_logger(__name__)

# The VAE's tile when tiling (AutoencoderKLWan.enable_tiling's default, pixels)
VAE_TILE = (256, 256)
OFFLOADS = ("none", "model", "group", "leaf")
_DITS = ("transformer", "transformer_2")  # Wan 2.2 A14B pipelines hold two experts


class MemoryBudgetError(ValueError, MemoryError):
    """A call or a plan does not fit the memory available: the message gives the estimate and the fixes."""


@dataclass(frozen=True)
class VRAMPlan:
    """A placement of the pipeline's components and its estimated peak device memory (bytes).

    `phases` gives the estimate of each phase (text encoding, denoising, VAE) that makes up the peak.
    """

    text_encoder_on_cpu: bool
    offload: str  # one of OFFLOADS
    blocks_per_group: int | None = None
    vae_tiling: bool = False
    peak_bytes: int = 0
    phases: dict[str, int] = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        if self.offload == "none":
            name = "text encoder on CPU" if self.text_encoder_on_cpu else "resident"
        elif self.offload == "group":
            name = f"group offload, {self.blocks_per_group} block{'s' if self.blocks_per_group > 1 else ''}"
        else:
            name = f"{self.offload} offload"
        return name + (" + VAE tiling" if self.vae_tiling else "")

    def describe(self) -> str:
        phases = ", ".join(f"{phase} {value / GB:.1f}" for phase, value in self.phases.items())
        return f"{self.name}: estimated peak {self.peak_bytes / GB:.1f} GB ({phases} GB)"


def candidate_plans(model: MemoryModel) -> list[VRAMPlan]:
    """Every plan, fastest first (see the module docstring)."""
    placements = [VRAMPlan(False, "none"), VRAMPlan(True, "none"), VRAMPlan(True, "model")]
    num_blocks = len(model.dit_blocks)
    placements += [VRAMPlan(True, "group", n) for n in range(num_blocks, 0, -1)]
    placements.append(VRAMPlan(True, "leaf"))
    plans = []
    for plan in placements:
        plans.append(plan)
        if plan.text_encoder_on_cpu:  # the resident plan's next step is the text encoder, not tiling
            plans.append(replace(plan, vae_tiling=True))
    return plans


def estimate(
    model: MemoryModel,
    plan: VRAMPlan,
    height: int,
    width: int,
    num_frames: int,
    *,
    batch: int = 1,
    use_stream: bool = True,
) -> VRAMPlan:
    """`plan` with its estimated peak: the largest phase plus the latents and `RESERVED_BYTES`."""
    text = 0 if plan.text_encoder_on_cpu else model.text_encoder_weights
    latents = model.latent_bytes(height, width, num_frames, batch)
    activations = model.dit_activation_bytes(height, width, num_frames, batch)
    tile = VAE_TILE if plan.vae_tiling else None
    vae_work = max(
        model.vae_decode_bytes(height, width, num_frames, batch, tile),
        model.vae_encode_bytes(height, width, num_frames, batch),
    )
    if plan.offload == "none":
        resident = text + model.image_encoder_weights + model.num_experts * model.dit_weights + model.vae_weights
        phases = {"denoise": resident + activations, "vae": resident + vae_work}
    elif plan.offload == "model":
        phases = {"denoise": model.dit_weights + activations, "vae": model.vae_weights + vae_work}
    else:
        groups = 2 if use_stream else 1  # the running group and the one being prefetched
        if plan.offload == "group":
            largest = sorted(model.dit_blocks, reverse=True)[: plan.blocks_per_group]
            on_device = model.dit_other_weights + groups * sum(largest)
        else:
            on_device = groups * model.dit_largest_leaf
        phases = {"denoise": model.vae_weights + on_device + activations, "vae": model.vae_weights + vae_work}
    if text:
        phases = {"text": text + model.image_encoder_weights, **phases}
    peak = max(phases.values()) + latents + RESERVED_BYTES
    return replace(plan, peak_bytes=peak, phases=phases)


def choose_plan(
    model: MemoryModel,
    budget: int | str,
    height: int,
    width: int,
    num_frames: int,
    *,
    batch: int = 1,
    use_stream: bool = True,
) -> VRAMPlan:
    """The fastest plan whose estimated peak fits `budget` (bytes, or a size like "8GB" = 8 x 10^9 bytes)."""
    budget = parse_size(budget, argument="budget")
    plans = [
        estimate(model, plan, height, width, num_frames, batch=batch, use_stream=use_stream)
        for plan in candidate_plans(model)
    ]
    for plan in plans:
        if plan.peak_bytes <= budget:
            return plan
    smallest = min(plans, key=lambda plan: plan.peak_bytes)
    raise MemoryBudgetError(
        f"No plan fits a budget of {budget / GB:.1f} GB at {width} x {height} x {num_frames} frames: the smallest, "
        f"{smallest.describe()}. Generate a smaller size or fewer frames, or raise the budget"
    )


def apply_plan(pipe, plan: VRAMPlan, device: torch.device | str) -> None:
    """Place the components of a freshly loaded pipeline as `plan` says (call it once, before the first call)."""
    device = torch.device(device)
    if plan.text_encoder_on_cpu:
        pipe.keep_text_encoder_on_cpu()
    if plan.offload == "none":
        pipe.to(device)
    elif plan.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    else:
        offload_type = "block_level" if plan.offload == "group" else "leaf_level"
        for name in _DITS:
            if getattr(pipe, name, None) is not None:
                getattr(pipe, name).enable_group_offload(
                    onload_device=device,
                    offload_device=torch.device("cpu"),
                    offload_type=offload_type,
                    num_blocks_per_group=plan.blocks_per_group,
                    use_stream=device.type == "cuda",  # a side stream prefetches the next group; CUDA only
                )
        for name, component in pipe.components.items():
            if name not in (*_DITS, "text_encoder") and isinstance(component, torch.nn.Module):
                component.to(device)
    if plan.vae_tiling:
        pipe.vae.enable_tiling()


class VRAMBudgetMixin:
    """`enable_vram_budget` for the Wan pipelines."""

    def memory_model(self) -> MemoryModel:
        """The `MemoryModel` of this pipeline's components (weights as they are stored now)."""
        return memory_model_from_components(
            getattr(self, "transformer", None),
            self.vae,
            getattr(self, "text_encoder", None),
            getattr(self, "image_encoder", None),
            transformer_2=getattr(self, "transformer_2", None),
            encodes_video=self.task != "t2v",
        )

    def enable_vram_budget(
        self,
        budget: int | str,
        *,
        height: int = 480,
        width: int = 832,
        num_frames: int = 81,
        num_videos: int = 1,
        device: torch.device | str | None = None,
    ) -> VRAMPlan:
        """Choose and apply the fastest placement whose estimated peak device memory fits `budget`.

        Args:
            budget: the memory to stay within, e.g. "8GB" (8 x 10^9 bytes), "24GiB" or a number of bytes.
            height, width, num_frames, num_videos: the calls the plan is made for (larger calls may not fit).
            device: the accelerator (default: CUDA when available, else the CPU).

        Returns:
            The `VRAMPlan` applied, with its estimated peak (`plan.describe()`); it is also logged.

        Example:
            ```py
            >>> pipe = WanPipeline.from_pretrained("Wan-AI/Wan2.1-T2V-14B-Diffusers", torch_dtype=torch.bfloat16)
            >>> plan = pipe.enable_vram_budget("8GB", height=720, width=1280)
            >>> print(plan.describe())
            ```
        """
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(device)
        batch = num_videos * (2 if self._batched_guidance else 1)  # set in WanPipelineBase.__init__
        plan = choose_plan(
            self.memory_model(), budget, height, width, num_frames, batch=batch, use_stream=device.type == "cuda"
        )
        logger.info(f"VRAM budget {_budget_text(budget)} at {width} x {height} x {num_frames}: {plan.describe()}")
        apply_plan(self, plan, device)
        self._vram_plan = plan
        return plan


def _budget_text(budget: int | str) -> str:
    return budget if isinstance(budget, str) else f"{budget / GB:.1f} GB"


def peak_table(
    models: dict[str, MemoryModel], sizes: dict[str, tuple[int, int]], budgets_gb: list[float], num_frames: int = 81
) -> str:
    """A markdown table: the plan chosen and its estimated peak for each model and size at each budget."""
    header = "| model | size | " + " | ".join(f"{budget:g} GB" for budget in budgets_gb) + " |"
    lines = [header, "|" + "---|" * (len(budgets_gb) + 2)]
    for model_name, model in models.items():
        for size_name, (height, width) in sizes.items():
            cells = []
            for budget in budgets_gb:
                try:
                    plan = choose_plan(model, int(budget * GB), height, width, num_frames)
                    cells.append(f"{_short(plan)} {plan.peak_bytes / GB:.1f}")
                except MemoryBudgetError:
                    cells.append("does not fit")
            lines.append(f"| {model_name} | {size_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _short(plan: VRAMPlan) -> str:
    name = re.sub(r"group offload, (\d+) blocks?", r"group \1", plan.name)
    return (
        name.replace("text encoder on CPU", "T5 on CPU").replace(" offload", "").replace(" + VAE tiling", " + tiling")
    )
