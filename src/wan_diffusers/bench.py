"""The `wan-diffusers bench` command: seconds per denoising step of a Wan DiT on your hardware, and how far that is
from the floor.

    wan-diffusers bench --model Wan2.1-T2V-1.3B-Diffusers                     # 832 x 480, 81 frames, on the GPU
    wan-diffusers bench --model Wan2.1-T2V-14B-Diffusers --height 720 --width 1280 --compile
    wan-diffusers bench --model Wan2.1-T2V-14B-Diffusers --random-weights      # reads only transformer/config.json

It loads the transformer of a pipeline folder (or a transformer folder, or a Hub repo), and runs the pipelines' own
sampling loop (`denoise`: the DiT calls, guidance, a flow-matching Euler step) on random latents and text embeddings
of the real shapes, timing every step after the warm-up ones. It prints the median seconds per step; the FLOPs of a
step (`utils/flops.py`) over that time, as TFLOP/s; the fraction of the floor, which is the time the step's FLOPs
take at the accelerator's dense bf16 rate (`--peak-tflops`, or the rate listed for known GPUs); and the peak memory.
The weights' values do not change the speed, so `--random-weights` measures a model without its weight files.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from .utils.dtypes import AUTO, FLOAT_DTYPES, dtype_from_name

_GUIDANCE = ("two-pass", "batched", "off")


def add_bench_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the benchmark options to `parser` (returned for chaining)."""
    parser.add_argument(
        "--model",
        required=True,
        help="a pipeline folder or Hub repo in the Diffusers format (its transformer/ is used), or a transformer folder",
    )
    parser.add_argument("--height", type=int, default=480, help="video height in pixels, a multiple of 16 (480)")
    parser.add_argument("--width", type=int, default=832, help="video width in pixels, a multiple of 16 (832)")
    parser.add_argument("--num-frames", type=int, default=81, help="video frames, 4k + 1 (81)")
    parser.add_argument("--steps", type=int, default=5, help="timed denoising steps (5)")
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed steps before them (2; compilation happens here)"
    )
    parser.add_argument(
        "--guidance",
        choices=_GUIDANCE,
        default="two-pass",
        help="classifier-free guidance as two DiT calls per step (the default, as in the pipelines), as one batched "
        "call (`enable_batched_guidance()`), or off (one call per step)",
    )
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: cuda if available)")
    parser.add_argument(
        "--dtype", choices=(AUTO, *FLOAT_DTYPES), default=AUTO, help="bfloat16 on a GPU, float32 on a CPU (auto)"
    )
    parser.add_argument("--attention-backend", default=None, help="diffusers attention backend, e.g. flash, sage")
    parser.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks (regional)")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the accelerator's dense matrix rate for the floor (default: listed for H100/H200/A100/4090-class GPUs)",
    )
    parser.add_argument("--random-weights", action="store_true", help="build the model from its config alone")
    parser.add_argument("--output", type=Path, default=None, help="append the result as one JSON line to this file")
    return parser


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed arguments, print the result; returns the exit status (1 for bad input)."""
    from diffusers.utils import logging

    logger = logging.get_logger(__name__)
    try:
        _check_arguments(args)
        result = measure(args)
    except (ValueError, OSError) as error:  # bad input, a model that cannot be found or loaded
        logger.error(f"error: {error}")
        return 1
    print(summary(result))
    if args.output is not None:
        with open(args.output, "a") as handle:
            handle.write(json.dumps(result) + "\n")
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    for name in ("height", "width"):
        value = getattr(args, name)
        if value <= 0 or value % 16:
            raise ValueError(f"--{name} must be a positive multiple of 16 (VAE 8 x patch 2), got {value}")
    if args.num_frames < 1 or (args.num_frames - 1) % 4:
        raise ValueError(f"--num-frames must be 4k + 1 (1, 5, ..., 81), got {args.num_frames}")
    if args.steps < 1 or args.warmup < 0:
        raise ValueError(f"--steps must be at least 1 and --warmup at least 0, got {args.steps} and {args.warmup}")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        raise ValueError(f"--peak-tflops must be positive, got {args.peak_tflops}")


# ---------------------------------------------------------------------------------------------------------------------
# Loading


def load_transformer(model: str, device, dtype, random_weights: bool = False):
    """The Wan DiT of `model` (pipeline folder, transformer folder or Hub repo) on `device` in `dtype`."""
    import torch

    from . import WanTransformer3DModel, WanVACETransformer3DModel

    path = Path(model)
    subfolder = None if path.is_dir() and (path / "config.json").is_file() else "transformer"
    config = WanTransformer3DModel.load_config(model, subfolder=subfolder)
    classes = {cls.__name__: cls for cls in (WanTransformer3DModel, WanVACETransformer3DModel)}
    cls = classes.get(config.get("_class_name"))
    if cls is None:
        raise ValueError(f"--model {model}: expected a Wan DiT config, found class {config.get('_class_name')!r}")
    if random_weights:
        return random_weights_model(cls, config, device, dtype)
    return cls.from_pretrained(model, subfolder=subfolder, dtype=dtype).to(torch.device(device))


def random_weights_model(cls, config: dict, device, dtype):
    """`cls.from_config(config)` with random weights made directly on `device` in `dtype` (a 14B model never exists
    in float32 on the CPU first), in eval mode; its `_keep_in_fp32_modules` in float32, as `from_pretrained` does."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = cls.from_config(config).eval()
    finally:
        torch.set_default_dtype(previous)
    keep = set(model._keep_in_fp32_modules or [])
    for name, parameter in model.named_parameters():
        if keep.intersection(name.split(".")):
            parameter.data = parameter.data.float()
    return model


# ---------------------------------------------------------------------------------------------------------------------
# Measuring


def measure(args: argparse.Namespace) -> dict:
    """Time `args.warmup + args.steps` steps of the sampling loop; return the figures as a flat dict."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.utils import logging

    from . import WanPipeline
    from .utils.flops import peak_tflops, transformer_forward_flops, video_tokens

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype_from_name(args.dtype, device)
    what = "the config of" if args.random_weights else "the transformer of"
    logging.get_logger(__name__).info(f"Loading {what} {args.model} on {device} ({str(dtype).removeprefix('torch.')})")
    transformer = load_transformer(args.model, device, dtype, args.random_weights)
    if args.attention_backend:
        transformer.set_attention_backend(args.attention_backend)
    if args.compile:
        transformer.compile_repeated_blocks(fullgraph=True)
    config = dict(transformer.config)

    pipe = WanPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=None,
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
    )
    # a sign of life: loading and compiling a 14B model take minutes, and so may the steps
    pipe.set_progress_bar_config(desc=f"bench: {args.warmup} warm-up + {args.steps} timed steps")
    if args.guidance == "batched":
        pipe.enable_batched_guidance()
    latent = (1 + (args.num_frames - 1) // 4, args.height // 8, args.width // 8)
    inputs = _random_inputs(config, latent, device, dtype)

    stamps = []

    def stamp(*_):
        _synchronize(device)
        stamps.append(time.perf_counter())
        return {}

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    pipe._start_call(guidance_scale=5.0 if args.guidance != "off" else 1.0, attention_kwargs=None)
    timesteps = pipe.set_timesteps(args.warmup + args.steps, None, device)
    stamp()
    with torch.inference_mode():
        pipe.denoise(latents=inputs.pop("latents"), timesteps=timesteps, callback_on_step_end=stamp, **inputs)
    seconds = [after - before for before, after in zip(stamps[args.warmup :], stamps[args.warmup + 1 :])]

    flops = transformer_forward_flops(config, *latent)
    forwards = 1 if args.guidance == "off" else 2
    step_seconds = statistics.median(seconds)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or peak_tflops(device_name)
    result = {
        "model": str(args.model),
        "class": type(transformer).__name__,
        "parameters_b": sum(p.numel() for p in transformer.parameters()) / 1e9,
        "device": device_name,
        "dtype": str(dtype).removeprefix("torch."),
        "video": [args.num_frames, args.height, args.width],
        "tokens": video_tokens(config, *latent),
        "guidance": args.guidance,
        "attention_backend": args.attention_backend or "default",
        "compiled": args.compile,
        "steps_timed": len(seconds),
        "s_per_step": step_seconds,
        "s_per_step_min": min(seconds),
        "s_per_step_max": max(seconds),
        "tflop_per_step": forwards * flops.total / 1e12,
        "achieved_tflops": forwards * flops.total / 1e12 / step_seconds,
        "peak_tflops": peak,
        "floor_s_per_step": forwards * flops.total / 1e12 / peak if peak else None,
    }
    result["fraction_of_floor"] = result["floor_s_per_step"] / step_seconds if peak else None
    if device.type == "cuda":
        result["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        result["peak_rss_gb"] = _peak_rss_gb()
    return result


def _peak_rss_gb() -> float | None:
    """The whole process's peak resident memory, loading included; None on Windows, which has no `resource`."""
    try:
        import resource  # Unix only: imported here so that the CLI loads on Windows
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def _random_inputs(config: dict, latent: tuple, device, dtype) -> dict:
    """Inputs of `denoise` for one video: noise, text embeddings of 512 rows (what the DiT pads every prompt to),
    and for an I2V / FLF2V model the condition channels and CLIP tokens, for VACE the control latents."""
    import torch

    from .models.transformer_wan import TEXT_CONTEXT_LENGTH

    generator = torch.Generator(device).manual_seed(0)

    def noise(*shape, dtype=dtype):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    inputs = {
        "latents": noise(1, config["out_channels"], *latent, dtype=torch.float32),
        "prompt_embeds": noise(1, TEXT_CONTEXT_LENGTH, config["text_dim"]),
        "negative_prompt_embeds": noise(1, TEXT_CONTEXT_LENGTH, config["text_dim"]),
        "transformer_kwargs": {},
    }
    if config["in_channels"] > config["out_channels"]:  # I2V / FLF2V: mask and condition latents
        inputs["condition"] = noise(1, config["in_channels"] - config["out_channels"], *latent, dtype=torch.float32)
    if config.get("image_dim"):
        # I2V: 257 CLIP tokens of one image; FLF2V (`pos_embed_seq_len` set): the first and last frame's, one row each
        images = 2 if config.get("pos_embed_seq_len") else 1
        image_tokens = (config.get("pos_embed_seq_len") or 257) // images
        inputs["transformer_kwargs"]["encoder_hidden_states_image"] = noise(images, image_tokens, config["image_dim"])
    if config.get("vace_layers"):
        inputs["transformer_kwargs"]["control_hidden_states"] = noise(1, config["vace_in_channels"], *latent)
        inputs["transformer_kwargs"]["control_hidden_states_scale"] = torch.ones(len(config["vace_layers"]))
    return inputs


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summary(result: dict) -> str:
    """The human-readable report of `measure`'s result."""
    frames, height, width = result["video"]
    forwards = {"off": "1 DiT call", "two-pass": "2 DiT calls", "batched": "1 batched DiT call"}[result["guidance"]]
    lines = [
        f"{result['class']} ({result['parameters_b']:.3f} B parameters), {result['dtype']} on {result['device']}, "
        f"attention {result['attention_backend']}{', compiled' if result['compiled'] else ''}",
        f"{frames} frames of {width} x {height}: {result['tokens']:,} tokens; guidance {result['guidance']} "
        f"({forwards} per step), {result['tflop_per_step']:.4g} TFLOP per step",
        f"{result['s_per_step']:.4g} s/step (median of {result['steps_timed']}, "
        f"{result['s_per_step_min']:.4g}-{result['s_per_step_max']:.4g}), {result['achieved_tflops']:.4g} TFLOP/s",
    ]
    if result["fraction_of_floor"] is not None:
        lines.append(
            f"floor {result['floor_s_per_step']:.4g} s/step at {result['peak_tflops']:.0f} TFLOP/s: "
            f"{100 * result['fraction_of_floor']:.1f} % of the floor"
        )
    else:
        lines.append("floor: unknown for this device (give --peak-tflops to compute it)")
    if "peak_memory_gb" in result:
        lines.append(f"peak GPU memory {result['peak_memory_gb']:.2f} GiB")
    elif result["peak_rss_gb"] is not None:
        lines.append(f"peak RSS of the process {result['peak_rss_gb']:.2f} GiB (loading included)")
    return "\n".join(lines)
