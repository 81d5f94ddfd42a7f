"""The conversion command line: `wan-diffusers convert ...` and `python conversion/convert_wan_to_diffusers.py ...`.

Both build their parser with `add_convert_arguments` and run `run_convert`, which returns the exit status: 0 on
success, 1 when the input is wrong (the message says what and how to fix it; no traceback).
"""

import argparse
from pathlib import Path

from diffusers.utils import logging as diffusers_logging

from ..cli_checks import as_flags
from ..utils.atomic import Terminated, WriteError, os_error_reason
from ..utils.console import progress_on_stderr
from ..utils.dtypes import FLOAT_DTYPES
from .detect import RESOLUTIONS

logger = diffusers_logging.get_logger(__name__)
CONVERT_DESCRIPTION = """Convert an original Wan 2.1 or Wan 2.2 release folder (as downloaded) into a complete Hub-format
pipeline repo that `WanPipeline.from_pretrained(OUT)` and `wan-diffusers generate --model OUT` load.

    wan-diffusers convert --checkpoint-dir Wan2.1-T2V-1.3B --output-dir Wan2.1-T2V-1.3B-Diffusers
    wan-diffusers convert --checkpoint-dir Wan2.1-I2V-14B-480P --output-dir Wan2.1-I2V-14B-480P-Diffusers \\
        --resolution 480p --dtype bfloat16
    wan-diffusers convert --checkpoint-dir Wan2.2-T2V-A14B --output-dir Wan2.2-T2V-A14B-Diffusers

The variant is read from the weights. OUT is written under a temporary name and renamed when complete; it must not
exist, unless --overwrite (which replaces only a pipeline repo, once the new one is complete).
"""


def add_convert_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the conversion options to `parser` (returned for chaining)."""
    parser.add_argument(
        "--checkpoint-dir",
        required=True,
        type=Path,
        metavar="ORIGINAL_DIR",
        help="an original Wan 2.1 or Wan 2.2 release folder (e.g. Wan2.1-T2V-14B/ or Wan2.2-I2V-A14B/ as downloaded)",
    )
    parser.add_argument(
        "--output-dir", required=True, type=Path, metavar="OUT", help="where to write the Hub-format repo"
    )
    parser.add_argument(
        "--dtype",
        choices=FLOAT_DTYPES,
        default=None,
        help="store the transformer, text encoder and image encoder in this dtype (default: keep each checkpoint's "
        "own dtype, which is lossless; the VAE always stays float32)",
    )
    parser.add_argument(
        "--max-shard-size", default="5GB", metavar="SIZE", help="largest weight file, e.g. 5GB or 2GiB (default 5GB)"
    )
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload the result to this Hub repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUT if it exists (once the new repo is complete)"
    )
    parser.add_argument(
        "--resolution",
        choices=RESOLUTIONS,
        default=None,
        help="the release's target resolution; tells I2V-14B-480P from -720P (same weights layout): scheduler "
        "shift 3.0 vs 5.0 and the model card's base model (default: 480p for 1.3B models, else 720p)",
    )
    parser.add_argument("--shift", type=float, default=None, help="scheduler shift (default: the release's own)")
    parser.add_argument(
        "--clip-num-heads",
        type=int,
        default=None,
        help="attention heads of the CLIP vision tower, which the weights do not show (default: 16 for the released "
        "width-1280 tower)",
    )
    return parser


def run_convert(args: argparse.Namespace) -> int:
    """Run a conversion from parsed arguments; progress and errors go to stderr. Returns the exit status."""
    from .convert import convert_release

    with progress_on_stderr():
        try:
            output_dir = convert_release(
                args.checkpoint_dir,
                args.output_dir,
                dtype=args.dtype,
                max_shard_size=args.max_shard_size,
                overwrite=args.overwrite,
                push_to_hub=args.push_to_hub,
                private=args.private,
                clip_num_heads=args.clip_num_heads,
                resolution=args.resolution,
                shift=args.shift,
            )
        except ValueError as error:  # bad input (ConversionError included): the message is the whole story
            if getattr(args, "debug", False):
                raise
            logger.error(f"error: {as_flags(str(error))}")
            return 1
        except OSError as error:  # a full disk, a read-only folder...: `describe_os_error` names the file
            logger.error(f"error: {error if isinstance(error, WriteError) else os_error_reason(error)}")
            return 1
        except KeyboardInterrupt as error:  # Ctrl-C or SIGTERM: the staging folder is gone already
            logger.error(f"Interrupted ({error or 'Ctrl-C'}); nothing was written to {args.output_dir}")
            return 143 if isinstance(error, Terminated) else 130
        logger.info(f"Wrote {output_dir}")
    return 0
