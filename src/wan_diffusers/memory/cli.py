"""`--vram-budget SIZE` of `wan-diffusers generate`: the flag, its check, and the plan applied to the pipeline."""

import argparse
import math

from ..conversion.checkpoint_io import parse_size

_PLACEMENT_FLAGS = ("offload", "text_encoder_on_cpu", "vae_tiling")


def add_vram_budget_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--vram-budget",
        metavar="SIZE",
        help="device memory to stay within, e.g. 8GB (10^9 bytes) or 24GiB: picks the fastest placement that fits "
        "(text encoder on CPU, model / group / leaf offload, VAE tiling) and prints it with its estimated peak; "
        "replaces --offload, --text-encoder-on-cpu and --vae-tiling",
    )


def check_vram_budget_argument(args: argparse.Namespace) -> None:
    if getattr(args, "vram_budget", None) is None:
        return
    parse_size(args.vram_budget, argument="--vram-budget")
    given = [name for name in _PLACEMENT_FLAGS if getattr(args, name, None) not in (None, False, "none")]
    if given:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in given)
        raise ValueError(f"--vram-budget chooses the placement itself; drop {flags} or drop --vram-budget")


def apply_vram_budget(pipe, args: argparse.Namespace, device, defaults: dict) -> None:
    """Plan for the call the arguments describe (the task's default size where not given) and apply the plan."""
    height, width = args.height or defaults["height"], args.width or defaults["width"]
    if args.task in ("i2v", "flf2v") and (args.height is None or args.width is None):
        # the size follows from --max-area and the image's aspect ratio: plan for a square of that area
        height = width = math.isqrt(args.max_area or defaults["max_area"]) // 16 * 16
    pipe.enable_vram_budget(  # logs the plan and its estimated peak
        args.vram_budget, height=height, width=width, num_frames=args.frames or defaults["frames"], device=device
    )
