"""The multi-process flags of `wan-diffusers generate` and `--save-latents`: arguments, checks, and what they do.

    torchrun --nproc_per_node 8 -m wan_diffusers generate --model Wan-AI/Wan2.1-T2V-14B-Diffusers \\
        --prompt "..." --ulysses 4 --cfg-parallel --fsdp --output cat.mp4

`cli.py` registers the flags with `add_distributed_arguments`, checks them with `check_distributed_arguments` before
any weight is read, joins the job with `start_distributed`, spreads the loaded pipeline with
`parallelize_from_arguments`, and writes files on rank 0 only (`is_main_process`).
"""

import argparse
import logging
import os
from pathlib import Path

from .layout import ParallelLayout
from .parallelize import init_distributed, is_main_process, parallelize_pipeline

# How the flags spell the layout's fields, for error messages.
FLAG_NAMES = {"ulysses_degree": "--ulysses", "ring_degree": "--ring", "cfg_parallel": "--cfg-parallel"}


def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "multi-GPU",
        "run as `torchrun --nproc_per_node N -m wan_diffusers generate ...`; --cfg-parallel (2) x --ring x --ulysses "
        "must equal N (or all 1 with --fsdp); every rank computes, rank 0 writes the files",
    )
    group.add_argument(
        "--ulysses",
        type=int,
        default=1,
        metavar="N",
        help="Ulysses context parallelism over N ranks: each holds 1/N of the video tokens, all-to-all inside "
        "self-attention; N must divide the attention heads (12 for 1.3B, 40 for 14B) (default 1)",
    )
    group.add_argument(
        "--ring",
        type=int,
        default=1,
        metavar="N",
        help="Ring context parallelism over N ranks: each holds 1/N of the video tokens and attends to the others' "
        "keys and values in turn; combines with --ulysses (default 1)",
    )
    group.add_argument(
        "--cfg-parallel",
        action="store_true",
        help="the conditional and unconditional guidance branches on two halves of the ranks (needs --guidance > 1)",
    )
    group.add_argument(
        "--fsdp",
        action="store_true",
        help="shard the DiT and the text encoder over all ranks (FSDP2), for models that do not fit one GPU",
    )
    parser.add_argument(
        "--save-latents",
        type=Path,
        metavar="PATH",
        help="also write the final latents (before decoding) to PATH, a .safetensors file with one tensor 'latents'",
    )


def layout_from_arguments(args: argparse.Namespace) -> ParallelLayout:
    for flag, value in (("--ulysses", args.ulysses), ("--ring", args.ring)):
        if value < 1:
            raise ValueError(f"{flag} must be a positive number of ranks, got {value}")
    return ParallelLayout(
        ulysses_degree=args.ulysses, ring_degree=args.ring, cfg_parallel=args.cfg_parallel, fsdp=args.fsdp
    )


def world_size() -> int:
    """Processes in the job torchrun started (its `WORLD_SIZE`), 1 without torchrun."""
    return int(os.environ.get("WORLD_SIZE", 1))


def check_distributed_arguments(args: argparse.Namespace) -> None:
    """Refuse impossible layouts before any weight is read: degrees against the world size, Ulysses against the
    model's heads (read from its config), and the video's token count against ring x ulysses where the size is known
    from the arguments (a `--video` without `--height`/`--width` is checked when the DiT first runs)."""
    layout = layout_from_arguments(args)
    if args.save_latents is not None and args.save_latents.suffix != ".safetensors":
        raise ValueError(f"--save-latents must be a .safetensors file, got {args.save_latents}")
    if world_size() == 1 and layout.degree == 1 and not layout.fsdp:
        return
    layout.check_world_size(world_size(), FLAG_NAMES)
    if layout.cfg_parallel and args.guidance is not None and args.guidance <= 1:
        raise ValueError(
            f"--cfg-parallel splits the two guidance branches, but --guidance {args.guidance} turns guidance off: "
            "drop --cfg-parallel or use --guidance above 1"
        )
    if args.offload != "none":
        raise ValueError(
            f"--offload {args.offload} moves weights between the CPU and one GPU, which a multi-process job does not "
            "do: drop it and use --fsdp to shard the weights over the GPUs"
        )
    if layout.fsdp and args.text_encoder_on_cpu:
        raise ValueError("--fsdp shards the text encoder over the GPUs: drop --text-encoder-on-cpu")
    config, vae_config = _model_configs(args)
    if config:
        layout.check_model(config["num_attention_heads"], FLAG_NAMES)
    tokens = _video_tokens(args, config, vae_config)
    if tokens is not None:
        layout.check_tokens(
            tokens, "the video (--height, --width, --frames: latent frames x height / 16 x width / 16)"
        )


def _model_configs(args: argparse.Namespace) -> tuple[dict, dict]:
    """The DiT's and the VAE's config.json (small files, no weights); empty for the built-in demo, whose heads are
    checked when it is built."""
    if args.model is None:
        return {}, {}
    from ..models.autoencoder_kl_wan import AutoencoderKLWan
    from ..models.transformer_wan import WanTransformer3DModel

    transformer = dict(WanTransformer3DModel.load_config(args.model, subfolder="transformer"))
    try:
        vae = dict(AutoencoderKLWan.load_config(args.model, subfolder="vae"))
    except OSError:  # checked against the Wan 2.1 VAE's strides, and again when the DiT runs
        vae = {}
    return transformer, vae


def _video_tokens(args: argparse.Namespace, config: dict, vae_config: dict) -> int | None:
    from ..cli import size_defaults
    from ..tasks import variant_for_model

    defaults = size_defaults(args, variant_for_model(args.task, args.model))
    patch_t, patch_h, patch_w = config.get("patch_size", (1, 2, 2))
    spatial = vae_config.get("scale_factor_spatial") or 8  # 16 for the Wan 2.2 VAE
    temporal = vae_config.get("scale_factor_temporal") or 4
    height, width, frames = args.height, args.width, args.frames or defaults["frames"]
    if args.task in ("v2v", "vace") and args.video is not None:
        return None  # the size and frame count come from the video file
    if args.task in ("i2v", "flf2v") and height is None:
        from ..pipelines.image_processing import size_from_max_area
        from ..utils.video_io import load_image

        image = load_image(args.image)
        height, width = size_from_max_area(
            image.height, image.width, args.max_area or defaults["max_area"], spatial, patch_h
        )
    height, width = height or defaults["height"], width or defaults["width"]
    latent_frames = (frames - 1) // temporal + 1 + len(args.reference_image or [])
    return latent_frames // patch_t * (height // spatial // patch_h) * (width // spatial // patch_w)


def start_distributed(args: argparse.Namespace):
    """Under torchrun, join the job and return this rank's device (`--device cpu` runs the ranks on the CPU, over
    gloo); None in a single process."""
    if world_size() == 1:
        return None
    import torch

    cpu = args.device is not None and torch.device(args.device).type == "cpu"
    device = init_distributed(device_type="cpu" if cpu else None)
    if not is_main_process():  # one copy of the messages: rank 0's
        logging.getLogger("wan_diffusers").setLevel(logging.WARNING)
    return device


def parallelize_from_arguments(pipe, args: argparse.Namespace) -> None:
    """Spread the loaded, placed pipeline over the job's ranks as the flags say; only rank 0 shows progress."""
    if world_size() == 1:
        return
    pipe.set_progress_bar_config(disable=not is_main_process())
    parallelize_pipeline(pipe, layout_from_arguments(args))


class LatentsRecorder:
    """A `callback_on_step_end` that keeps the latents after each step: after the call, the final latents."""

    def __init__(self):
        self.latents = None

    def __call__(self, pipe, step, timestep, callback_kwargs):
        self.latents = callback_kwargs["latents"]
        return {}


def save_latents(latents, path: Path) -> None:
    """Write `latents` to `path` as safetensors (tensor "latents", float32), atomically (`utils/atomic.py`)."""
    from safetensors.torch import save_file

    from ..utils.atomic import atomic_file

    with atomic_file(path) as temporary:
        save_file({"latents": latents.detach().float().cpu().contiguous()}, str(temporary))
