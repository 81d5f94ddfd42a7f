"""Refuse a call whose working memory cannot fit on its device, before anything is allocated.

`check_call_memory` is called by the pipelines' input checks (`check_video_inputs`), before the text encoder runs.
It estimates what the call will allocate beyond the weights already in place (`MemoryModel`: the latents, the DiT's
activations, the VAE's decode and encode) for one video of the requested size, the least any call of that size
needs, and compares it with the memory free on the execution device: `torch.cuda.mem_get_info` plus what PyTorch's
allocator holds unused on CUDA, `MemAvailable` of `/proc/meminfo` on the CPU. A height of 65536 is refused at once
instead of trying to allocate terabytes.
"""

import torch

from .model import GB
from .planner import VAE_TILE, MemoryBudgetError


def call_working_bytes(pipe, height: int, width: int, num_frames: int, batch: int = 1) -> dict[str, int]:
    """The working memory of one call by phase (bytes): denoising (latents + DiT activations) and the VAE."""
    model = pipe.memory_model()
    tile = VAE_TILE if getattr(pipe.vae, "use_tiling", False) else None
    latents = model.latent_bytes(height, width, num_frames, batch)
    return {
        "DiT activations": latents + model.dit_activation_bytes(height, width, num_frames, batch),
        "VAE": max(
            model.vae_decode_bytes(height, width, num_frames, batch, tile),
            model.vae_encode_bytes(height, width, num_frames, batch),
        ),
    }


def available_bytes(device: torch.device) -> int | None:
    """Memory free for new tensors on `device`, or None where it cannot be read."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as meminfo:
                for line in meminfo:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def check_call_memory(pipe, height: int, width: int, num_frames: int) -> None:
    """Raise `MemoryBudgetError` when the call's working memory exceeds what the execution device has free."""
    if getattr(pipe, "_dit", None) is None or getattr(pipe, "vae", None) is None:
        return
    device = torch.device(pipe._execution_device)
    available = available_bytes(device)
    if available is None:
        return
    phases = call_working_bytes(pipe, height, width, num_frames)
    need = max(phases.values())
    if need <= available:
        return
    detail = ", ".join(f"{name} {value / GB:.1f} GB" for name, value in phases.items())
    fixes = ["a smaller `height` / `width` or fewer `num_frames`"]
    if not getattr(pipe.vae, "use_tiling", False) and phases["VAE"] >= phases["DiT activations"]:
        fixes.append("VAE tiling (`pipe.vae.enable_tiling()`, --vae-tiling)")
    fixes.append("a plan that offloads weights (`pipe.enable_vram_budget(...)`, --vram-budget)")
    raise MemoryBudgetError(
        f"A {width} x {height} x {num_frames} video needs about {need / GB:.1f} GB of working memory on {device} "
        f"({detail}), but {available / GB:.1f} GB is free. Use " + ", or ".join(fixes)
    )
