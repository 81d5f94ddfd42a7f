"""The `wan-diffusers` command: `generate` a video file, `convert` an original release, `bench` your hardware.

    wan-diffusers generate --output shapes.mp4 [--prompt "a blue triangle moves up"]
        the tiny shapes model shipped in the package (`wan_diffusers.tiny_model_path()`): offline, seconds on a
        CPU, a 64 x 64 moving shape of the colour and direction the prompt `a {colour} {shape} moves {direction}`
        asks for; without --model the other tasks build a tiny random-weight pipeline (frames are noise)
    wan-diffusers generate --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --prompt "..." --output cat.mp4
        the real model (a Hub id or a local folder in the Hub format)
    wan-diffusers convert --checkpoint-dir Wan2.1-T2V-1.3B --output-dir Wan2.1-T2V-1.3B-Diffusers
    wan-diffusers bench --model Wan2.1-T2V-1.3B-Diffusers
        seconds per denoising step at 832 x 480 x 81, and the fraction of the hardware's floor (bench.py)

`generate` samples like the original `generate.py` by default (`--sampler unipc` with the task's `--shift`); the
other tasks take `--image` (i2v), `--image` and `--last-image` (flf2v), `--video` (v2v), or any of `--video`,
`--mask` and `--reference-image` (vace: control video, masked editing, reference-to-video).
"""

import argparse
import sys
import time
from pathlib import Path

from diffusers.utils import logging as diffusers_logging

from .cli_checks import as_flags, check_generate_arguments, run_reporting_errors
from .tasks import INPUTS, TASK_NAMES, WanTask, shift_for, variant_for_model
from .utils.dtypes import AUTO, FLOAT_DTYPES, dtype_from_name

logger = diffusers_logging.get_logger(__name__)

SAMPLERS = ("unipc", "dpm++", "scheduler")
OFFLOAD_MODES = ("none", "model", "sequential")
# Sizes of the offline demo: small enough for a few seconds on a CPU.
DEMO_DEFAULTS = {"height": 64, "width": 96, "frames": 17, "steps": 4, "max_area": 64 * 96}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="wan-diffusers", description="Wan 2.1 video generation with diffusers.")
    parser.add_argument("--version", action="version", version=f"wan-diffusers {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{generate,convert,bench,train}")
    _add_generate_arguments(
        commands.add_parser(
            "generate",
            help="generate a video file",
            description=__doc__.split("\n\n", 1)[1],  # the examples, line by line
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    from .conversion.command import CONVERT_DESCRIPTION, add_convert_arguments

    add_convert_arguments(
        commands.add_parser(
            "convert",
            help="convert an original Wan 2.1 release folder to the Hub format",
            description=CONVERT_DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    from .bench import __doc__ as bench_doc
    from .bench import add_bench_arguments

    add_bench_arguments(
        commands.add_parser(
            "bench",
            help="seconds per denoising step of a model on this machine, against the floor",
            description=bench_doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    from .training.command import __doc__ as train_doc
    from .training.command import add_train_arguments

    add_train_arguments(
        commands.add_parser(
            "train",
            help="fine-tune a Wan DiT (LoRA or full) on captioned videos or images",
            description=train_doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    for command in commands.choices.values():  # also after the command: `wan-diffusers generate ... --debug`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=TASK_NAMES, default="t2v", help="what to generate (default: t2v)")
    parser.add_argument(
        "--model",
        default=None,
        help="a Hub repo id or a local folder in the Hub format (e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers); the defaults "
        "below are those of the released variant it names (by its last path component), else of the task's first "
        "one in `wan_diffusers.tasks`; without --model, t2v runs the tiny shapes model shipped in the package "
        "(64 x 64 moving shapes, offline, seconds on a CPU) and the other tasks a tiny random-weight pipeline built in "
        "code, whose frames are noise",
    )
    parser.add_argument(
        "--prompt",
        help="what the video shows (required, except for t2v without --model: the tiny shapes model then draws "
        f"{tiny_default_prompt()!r})",
    )
    parser.add_argument(
        "--negative-prompt", default=None, help="what to avoid (default: the original's negative prompt of the task)"
    )
    parser.add_argument("--image", type=Path, help="first frame (i2v, flf2v)")
    parser.add_argument("--last-image", type=Path, help="last frame (flf2v)")
    parser.add_argument(
        "--video",
        type=Path,
        help="input video (v2v), or source / control video (vace); its first 4n + 1 frames are used",
    )
    parser.add_argument("--mask", type=Path, help="vace: mask video, white = generate, black = keep (needs --video)")
    parser.add_argument(
        "--reference-image",
        type=Path,
        action="append",
        help="vace: a subject or background to show (repeat the option for several, kept in that order)",
    )
    parser.add_argument(
        "--conditioning-scale", type=float, default=1.0, help="vace: strength of the control hints (default 1.0)"
    )
    parser.add_argument(
        "--height", type=int, help="height in pixels, a multiple of 16 (t2v/vace default: the variant's, 480 or 720)"
    )
    parser.add_argument(
        "--width", type=int, help="width in pixels, a multiple of 16 (t2v/vace default: the variant's, 832 or 1280)"
    )
    parser.add_argument(
        "--max-area",
        type=int,
        help="i2v/flf2v without --height/--width: pixel budget, the size follows the image's aspect ratio "
        "(default: the variant's, 480*832 for I2V-480P, 720*1280 for I2V-720P and FLF2V)",
    )
    parser.add_argument("--frames", type=int, help="number of frames, 4n + 1 (default 81; 121 for TI2V-5B)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the original's, 50; 40 for i2v and A14B)")
    parser.add_argument(
        "--guidance",
        type=float,
        help="classifier-free guidance scale, for both experts of a Wan 2.2 A14B model (default: the original's, 5.0; "
        "T2V-A14B 4.0 high-noise and 3.0 low-noise, I2V-A14B 3.5)",
    )
    parser.add_argument(
        "--strength", type=float, default=0.8, help="v2v: how much of the video to redo, in (0, 1] (default 0.8)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default="unipc",
        help="unipc / dpm++: the original's solvers and schedules (exact); scheduler: the model's own scheduler "
        "(default unipc)",
    )
    parser.add_argument(
        "--shift",
        type=float,
        help="flow shift (default: the original's per task and size: 5; 3 for i2v at 480P; 16 for flf2v and vace; 12 "
        "for T2V-A14B)",
    )
    parser.add_argument(
        "--offload",
        choices=OFFLOAD_MODES,
        default="none",
        help="model: one model at a time on the GPU (24 GB class); sequential: layer by layer (8 GB class, slow) "
        "(default none)",
    )
    parser.add_argument("--text-encoder-on-cpu", action="store_true", help="run the umT5 text encoder on the CPU")
    parser.add_argument("--vae-tiling", action="store_true", help="decode the video in spatial tiles (less memory)")
    from .memory.cli import add_vram_budget_argument

    add_vram_budget_argument(parser)
    parser.add_argument(
        "--dtype",
        choices=(AUTO, *FLOAT_DTYPES),
        default=AUTO,
        help="model dtype (auto: bfloat16 on a GPU, float32 on a CPU)",
    )
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: cuda if available)")
    parser.add_argument("--fps", type=int, help="frames per second of the file (default: the model's, 16)")
    parser.add_argument(
        "--output", type=Path, default=Path("output.mp4"), help="the mp4 to write (default: output.mp4 here)"
    )
    from .distributed.cli import add_distributed_arguments

    add_distributed_arguments(parser)


def run_generate(args: argparse.Namespace) -> int:
    """Generate one video from parsed arguments and write it; returns the exit status (1 for bad input)."""
    from .distributed.cli import check_distributed_arguments, is_main_process

    variant = variant_for_model(args.task, args.model)
    try:
        _check_generate_arguments(args, variant)
        check_distributed_arguments(args)
        video = _generate(args, variant)
    except (ValueError, OSError) as error:  # bad input, a missing file, a model that cannot be found or loaded
        if getattr(args, "debug", False):
            raise
        logger.error(f"error: {as_flags(str(error))}")
        return 1
    if not is_main_process():
        return 0
    from .utils.video_io import export_to_mp4

    fps = args.fps or variant.fps
    path = export_to_mp4(video, args.output, fps=fps)
    logger.info(f"Wrote {path} ({len(video)} frames, {video.shape[2]}x{video.shape[1]}, {fps} fps)")
    if uses_tiny_shapes(args):
        logger.info(
            "This was the tiny shapes model (64 x 64, trained on a CPU): it follows the colour and the direction of "
            f"a prompt `a {{colour}} {{shape}} moves {{direction}}` ({tiny_grammar()}), but draws every shape as a "
            "roundish blob (README: 'The tiny shapes model and prompt following'). For a real video add --model "
            f"{variant.hub_id}."
        )
    elif args.model is None:
        logger.info(
            "This was the offline demo: a tiny random-weight model, so the frames are noise. For a real video add "
            f"--model {variant.hub_id} (or another Wan 2.1 repo, or a converted folder)."
        )
    return 0


def _check_generate_arguments(args: argparse.Namespace, variant: WanTask) -> None:
    if args.prompt is None:
        if not uses_tiny_shapes(args):
            raise ValueError("--prompt is required (it may be left out only with --task t2v and no --model)")
        args.prompt = tiny_default_prompt()
    for name in variant.required_inputs:
        if getattr(args, name) is None:
            raise ValueError(f"--task {args.task} needs --{name.replace('_', '-')} PATH")
    for name in INPUTS:
        value = getattr(args, name)
        paths = value if isinstance(value, list) else [value]
        if value is not None and name not in variant.inputs:
            raise ValueError(f"--{name.replace('_', '-')} is not used by --task {args.task}")
        for path in paths:
            if path is not None and not path.exists():
                raise FileNotFoundError(f"--{name.replace('_', '-')}: no such file: {path}")
    if args.mask is not None and args.video is None:
        raise ValueError("--mask needs --video: the mask says which parts of that video to regenerate")
    from .memory.cli import check_vram_budget_argument

    check_vram_budget_argument(args)
    if args.output.suffix.lower() != ".mp4":
        raise ValueError(f"--output must be an .mp4 file, got {args.output}")
    model = Path(args.model) if args.model else None
    if model is not None and model.is_dir() and not (model / "model_index.json").is_file():
        hint = ""
        if (model / "config.json").is_file() and (model / "Wan2.1_VAE.pth").is_file():
            hint = (
                "; it looks like an original release folder: convert it first with `wan-diffusers convert "
                f"--checkpoint-dir {model} --output-dir {model.name}-Diffusers`"
            )
        raise ValueError(f"--model {model} is not a pipeline folder in the Hub format (no model_index.json){hint}")
    check_generate_arguments(args)  # numbers, files that decode, --output, --device (cli_checks.py)


def uses_tiny_shapes(args: argparse.Namespace) -> bool:
    """Text-to-video without --model runs the tiny shapes model shipped in the package (trained: its video shows the
    prompt); the other tasks without --model build a random-weight demo pipeline."""
    return args.model is None and args.task == "t2v"


def tiny_default_prompt() -> str:
    from .training.tiny import DEFAULT_PROMPT

    return DEFAULT_PROMPT


def tiny_grammar() -> str:
    from .training.shapes import COLOURS, DIRECTIONS, SHAPES

    return "; ".join(", ".join(words) for words in (COLOURS, SHAPES, DIRECTIONS))


def in_tiny_grammar(prompt: str) -> bool:
    from .training.shapes import COLOURS, DIRECTIONS, SHAPES, parse_caption

    try:
        colour, shape, direction = parse_caption(prompt)
    except ValueError:
        return False
    return colour in COLOURS and shape in SHAPES and direction in DIRECTIONS


def size_defaults(args: argparse.Namespace, variant: WanTask) -> dict:
    """Size, frames and steps when not given: the tiny shapes model's, the demo's, or the original's for the model's
    variant."""
    if uses_tiny_shapes(args):
        from .training.tiny import SAMPLING_DEFAULTS

        return SAMPLING_DEFAULTS
    if args.model is None:
        return DEMO_DEFAULTS
    return {
        "height": variant.height,
        "width": variant.width,
        "frames": variant.num_frames,
        "steps": variant.num_inference_steps,
        "max_area": variant.max_area or variant.height * variant.width,
    }


def _default_shift(args: argparse.Namespace, variant: WanTask) -> float:
    """The original `generate.py`'s `--sample_shift` default for the requested size (`tasks.shift_for`)."""
    defaults = size_defaults(args, variant)
    if args.height and args.width:
        area = args.height * args.width
    elif args.task in ("i2v", "flf2v"):
        area = args.max_area or defaults["max_area"]
    else:
        area = defaults["height"] * defaults["width"]
    return shift_for(args.task, area) if variant.shift_follows_size else variant.shift


def _generate(args: argparse.Namespace, variant: WanTask):
    import torch

    from .distributed import cli as distributed

    device = distributed.start_distributed(args) or torch.device(
        args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    )
    dtype = dtype_from_name(args.dtype, device)
    pipe = _load_pipeline(args, variant, dtype)
    task_defaults = size_defaults(args, variant)
    _place(pipe, args, device, task_defaults)
    distributed.parallelize_from_arguments(pipe, args)

    kwargs = dict(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        guidance_scale=variant.guidance_scale if args.guidance is None else args.guidance,
        generator=torch.Generator("cpu").manual_seed(args.seed),
        output_type="np",
    )
    if variant.boundary_ratio is not None:  # Wan 2.2 A14B: the low-noise expert's guidance; --guidance sets both
        kwargs["guidance_scale_2"] = variant.guidance_scale_2 if args.guidance is None else args.guidance
    kwargs["num_inference_steps"] = args.steps or task_defaults["steps"]
    if args.task in ("t2v", "i2v", "flf2v") or (args.task == "vace" and args.video is None):
        kwargs["num_frames"] = args.frames or task_defaults["frames"]
    if args.task == "t2v" or (args.task == "vace" and args.video is None):
        kwargs["height"] = args.height or task_defaults["height"]
        kwargs["width"] = args.width or task_defaults["width"]
    else:
        kwargs["height"], kwargs["width"] = args.height, args.width
    if args.task in ("i2v", "flf2v"):
        from .utils.video_io import load_image

        kwargs["image"] = load_image(args.image)
        kwargs["max_area"] = args.max_area or task_defaults["max_area"]
        if args.task == "flf2v":
            kwargs["last_image"] = load_image(args.last_image)
    if args.task in ("v2v", "vace") and args.video is not None:
        kwargs["video"] = _video_frames(args, args.video)
        if args.height is None and args.model is None:
            kwargs["height"], kwargs["width"] = DEMO_DEFAULTS["height"], DEMO_DEFAULTS["width"]
    if args.task == "v2v":
        kwargs["strength"] = args.strength
    if args.task == "vace":
        from .utils.video_io import load_image

        if args.mask is not None:
            kwargs["mask"] = _video_frames(args, args.mask)[: len(kwargs["video"])]
        kwargs["reference_images"] = [load_image(path) for path in args.reference_image or []] or None
        kwargs["conditioning_scale"] = args.conditioning_scale

    recorder = kwargs["callback_on_step_end"] = distributed.LatentsRecorder() if args.save_latents else None
    start = time.perf_counter()
    frames = pipe(**kwargs).frames[0]
    logger.info(f"Generated in {time.perf_counter() - start:.1f} s on {device}")
    if recorder is not None and distributed.is_main_process():
        distributed.save_latents(recorder.latents, args.save_latents)
    return frames


def _load_pipeline(args: argparse.Namespace, variant: WanTask, dtype):
    import torch

    if uses_tiny_shapes(args):
        from .assets import tiny_model_path
        from .pipelines.pipeline_wan import WanPipeline

        logger.info(
            f"No --model: the tiny shapes model shipped in the package ({tiny_model_path()}), trained on prompts "
            f"`a {{colour}} {{shape}} moves {{direction}}`; prompt: {args.prompt!r}"
        )
        if not in_tiny_grammar(args.prompt):
            logger.warning(
                f"--prompt {args.prompt!r} is not a prompt the tiny shapes model knows; it draws some moving shape. "
                f"It knows `a {{colour}} {{shape}} moves {{direction}}` with {tiny_grammar()}."
            )
        pipe = WanPipeline.from_pretrained(tiny_model_path())  # float32: it is tiny
    elif args.model is None:
        from .pipelines.demo import build_demo_pipeline

        logger.info(f"No --model: building the tiny random-weight {args.task} demo pipeline (its frames are noise)")
        pipe = build_demo_pipeline(args.task)  # float32: it is tiny
    else:
        cls = getattr(sys.modules[__package__], variant.pipeline_class)  # the package's lazy export
        logger.info(f"Loading {args.model} as {cls.__name__} ({str(dtype).removeprefix('torch.')}, VAE float32)")
        pipe = cls.from_pretrained(args.model, dtype={"vae": torch.float32, "default": dtype})
    if args.sampler != "scheduler":
        pipe.use_original_sampling(args.sampler, args.shift or _default_shift(args, variant))
    return pipe


def _place(pipe, args: argparse.Namespace, device, defaults: dict) -> None:
    if args.vram_budget is not None:
        from .memory.cli import apply_vram_budget

        return apply_vram_budget(pipe, args, device, defaults)
    if args.text_encoder_on_cpu:
        pipe.keep_text_encoder_on_cpu()
    if args.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif args.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    if args.vae_tiling:
        pipe.vae.enable_tiling()


def _video_frames(args: argparse.Namespace, path: Path):
    from .utils.video_io import load_video

    frames = load_video(path, max_frames=args.frames)
    usable = (len(frames) - 1) // 4 * 4 + 1  # the VAE needs 4n + 1 frames
    if usable != len(frames):
        logger.info(f"Using the first {usable} of {len(frames)} frames of {path} (4n + 1 frames)")
    return frames[:usable]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `wan-diffusers` command; returns the exit status.

    An error is one line on stderr (exit status 1; `--debug` shows the traceback); Ctrl-C exits with 130 and
    SIGTERM with 143, after removing any partial output.
    """
    args = build_parser().parse_args(argv)
    return run_reporting_errors(_run, args)


def _run(args: argparse.Namespace) -> int:
    from .conversion.command import run_convert
    from .utils.console import progress_on_stderr

    if args.command == "convert":
        return run_convert(args)  # shows its own progress
    if args.command == "bench":
        from .bench import run_bench

        with progress_on_stderr():
            return run_bench(args)
    if args.command == "train":
        from .training.command import run_train

        with progress_on_stderr():
            return run_train(args)
    with progress_on_stderr():  # this package's INFO messages on stderr while the command runs
        return run_generate(args)


if __name__ == "__main__":
    sys.exit(main())
