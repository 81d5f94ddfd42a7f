"""The `generate` command's checks of everything it can check before loading a model, and its error reporting.

Every check raises a `ValueError` (or `FileNotFoundError`) that names the flag as the user typed it, states the
rule and the value, and says what to do: numbers (0 is an error, never "unset"), sizes and frame counts, that the
input files exist and decode, that `--output` can be written, that `--device` exists. `main` prints such an error
as one line (`error: ...`, exit status 1) and shows the traceback only with `--debug`.
"""

import argparse
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

# The pipelines' argument names and the flags that set them, for a pipeline error that reaches the user.
FLAGS = {
    "num_frames": "--frames",
    "num_inference_steps": "--steps",
    "guidance_scale": "--guidance",
    "height": "--height",
    "width": "--width",
    "max_area": "--max-area",
    "strength": "--strength",
    "conditioning_scale": "--conditioning-scale",
    "negative_prompt": "--negative-prompt",
    "prompt": "--prompt",
    "image": "--image",
    "last_image": "--last-image",
    "video": "--video",
    "mask": "--mask",
    "reference_images": "--reference-image",
    "shift": "--shift",
    "output_dir": "--output-dir",
    "checkpoint_dir": "--checkpoint-dir",
    "clip_num_heads": "--clip-num-heads",
    "max_shard_size": "--max-shard-size",
    "push_to_hub": "--push-to-hub",
    "resolution": "--resolution",
    "overwrite": "--overwrite",
    "dtype": "--dtype",
}
# The spatial and temporal strides of every Wan model: VAE 8 x patch 2 in space, VAE 4 in time.
SIZE_MULTIPLE = 16
FRAME_STRIDE = 4


def as_flags(message: str) -> str:
    """`num_frames` -> `--frames` in a message written for Python callers, so it names what the user typed."""
    return re.sub(r"`(\w+)`", lambda match: f"`{FLAGS.get(match.group(1), match.group(1))}`", message)


def check_generate_arguments(args: argparse.Namespace) -> None:
    """Everything about `generate`'s arguments that can be checked before a model is loaded."""
    _check_numbers(args)
    _check_output(args.output)
    _check_device(args.device)
    _check_model(args.model)
    _check_media(args)


def _check_numbers(args: argparse.Namespace) -> None:
    for flag in ("height", "width"):
        value = getattr(args, flag)
        if value is not None and (value < SIZE_MULTIPLE or value % SIZE_MULTIPLE):
            lower = max(value // SIZE_MULTIPLE * SIZE_MULTIPLE, SIZE_MULTIPLE)
            raise ValueError(
                f"--{flag} must be a positive multiple of {SIZE_MULTIPLE} (the VAE stride times the patch size), got "
                f"{value}; try {lower}" + (f" or {lower + SIZE_MULTIPLE}" if value > SIZE_MULTIPLE else "")
            )
    if args.frames is not None and (args.frames < 1 or (args.frames - 1) % FRAME_STRIDE):
        lower = max((args.frames - 1) // FRAME_STRIDE * FRAME_STRIDE + 1, 1)
        raise ValueError(
            f"--frames must be of the form 4n + 1 (1, 5, ..., 81), got {args.frames}; try {lower}"
            + (f" or {lower + FRAME_STRIDE}" if args.frames > 1 else "")
        )
    for flag in ("steps", "max_area", "fps"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be a positive integer, got {value}")
    for flag in ("guidance", "conditioning_scale"):
        value = getattr(args, flag, None)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"--{flag.replace('_', '-')} must be a finite number, got {value}")
    if args.shift is not None and not (math.isfinite(args.shift) and args.shift > 0):
        raise ValueError(f"--shift must be a positive number, got {args.shift}")
    if args.strength is not None and not 0 < args.strength <= 1:
        raise ValueError(f"--strength must be in (0, 1] (the fraction of the video to redo), got {args.strength}")
    if not 0 <= args.seed < 2**64:
        raise ValueError(f"--seed must be an integer from 0 to 2**64 - 1, got {args.seed}")


def _check_output(output: Path) -> None:
    """`--output` must name an .mp4 file that can be created (or replaced) in a writable folder."""
    if output.suffix.lower() != ".mp4":
        raise ValueError(f"--output must be an .mp4 file, got {output}")
    if output.is_dir():
        raise ValueError(f"--output {output} is a folder; give a file name, e.g. {output / 'video.mp4'}")
    folder = output.parent
    while not folder.exists():  # the command creates missing folders: the nearest existing one must take them
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"--output {output}: {folder} is a file, not a folder")
    unwritable = not os.access(folder, os.W_OK | os.X_OK)
    if not unwritable and folder == output.parent:  # try it: modes say nothing to root or on a read-only mount
        try:
            tempfile.TemporaryFile(dir=folder).close()
        except OSError:
            unwritable = True
    if unwritable:
        raise ValueError(f"--output {output}: the folder {folder} is not writable; choose another place")


def _check_device(device: str | None) -> None:
    """`--device` must parse as a torch device and exist on this machine."""
    if device is None:
        return
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device must be a torch device such as cpu, cuda, cuda:1 or mps, got {device!r}") from None
    if parsed.type == "cpu":
        return
    backend = getattr(torch, parsed.type, None)
    if parsed.type == "mps":
        available, count = torch.backends.mps.is_available(), 1
    elif backend is not None and hasattr(backend, "is_available"):
        available = backend.is_available()
        count = backend.device_count() if available and hasattr(backend, "device_count") else 0
    else:
        available, count = False, 0
    if not available:
        build = f"torch {torch.__version__}"
        raise ValueError(
            f"--device {device}: this machine has no {parsed.type} device that {build} can use; leave --device out "
            "to use what there is (the CPU here), or install the torch build for your accelerator"
        )
    if parsed.index is not None and parsed.index >= count:
        raise ValueError(
            f"--device {device}: there are only {count} {parsed.type} device(s), numbered from 0 to {count - 1}"
        )


def _check_model(model: str | None) -> None:
    """A `--model` that is not an existing folder must at least be a Hub repo id (`org/name`)."""
    if model is None or Path(model).is_dir():
        return
    if Path(model).exists():
        raise ValueError(f"--model {model} is a file; give a pipeline folder (with model_index.json) or a Hub repo id")
    looks_like_path = model.startswith((".", "/", "~")) or model.count("/") != 1 or os.sep != "/" and os.sep in model
    if looks_like_path:
        raise FileNotFoundError(
            f"--model {model}: no such folder (and not a Hub repo id, which has the form org/name, e.g. "
            "Wan-AI/Wan2.1-T2V-1.3B-Diffusers)"
        )


def _check_media(args: argparse.Namespace) -> None:
    """Every given image and video file exists and decodes (the first frame of a video)."""
    for flag in ("image", "last_image", "reference_image"):
        value = getattr(args, flag, None)
        for path in value if isinstance(value, list) else [value]:
            if path is not None:
                _check_image(path, f"--{flag.replace('_', '-')}")
    for flag in ("video", "mask"):
        path = getattr(args, flag, None)
        if path is not None:
            _check_video(path, f"--{flag}")


def _check_image(path: Path, flag: str) -> None:
    import PIL.Image

    _check_file(path, flag)
    try:
        with PIL.Image.open(path) as image:
            image.load()
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise ValueError(f"{flag} {path} is not an image that can be read ({error})") from None
    if image.width < 1 or image.height < 1:
        raise ValueError(f"{flag} {path} is an empty image ({image.width} x {image.height})")


def _check_video(path: Path, flag: str) -> None:
    from .utils.video_io import probe_video

    _check_file(path, flag)
    probe_video(path, flag)


def _check_file(path: Path, flag: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{flag}: no such file: {path}")
    if not path.is_file():
        raise ValueError(f"{flag} {path} is a folder, not a file")


def run_reporting_errors(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """`run(args)`, with any error turned into one line on stderr and an exit status (1; 130 Ctrl-C; 143 SIGTERM).

    With `args.debug` an error propagates with its traceback. Whatever was being written has been removed by then
    (`utils.atomic`), so the line says only what went wrong.
    """
    from .utils.atomic import Terminated, WriteError, os_error_reason

    try:
        return run(args)
    except KeyboardInterrupt as error:
        if getattr(args, "debug", False):
            raise
        _print_error(f"interrupted ({error})" if isinstance(error, Terminated) else "interrupted (Ctrl-C)")
        return 143 if isinstance(error, Terminated) else 130
    except Exception as error:
        if getattr(args, "debug", False):
            raise
        if isinstance(error, ValueError):
            message = as_flags(str(error))
        elif isinstance(error, OSError) and not isinstance(error, WriteError):
            message = os_error_reason(error) if error.filename is not None else str(error)
        else:
            message = str(error) if isinstance(error, WriteError) else f"{type(error).__name__}: {error}"
            message += " (run with --debug for the traceback)"
        _print_error(message)
        return 1


def _print_error(message: str) -> None:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    sys.stderr.write(f"error: {' '.join(lines)}\n")
