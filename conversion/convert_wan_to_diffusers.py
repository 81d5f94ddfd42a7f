#!/usr/bin/env python
"""Convert an original Wan 2.1 release folder into a complete Hub-format diffusers pipeline repo.

    python conversion/convert_wan_to_diffusers.py --checkpoint-dir Wan2.1-T2V-14B --output-dir Wan2.1-T2V-14B-Diffusers

Every release is supported (T2V-1.3B/14B, I2V-14B-480P/720P, FLF2V-14B-720P, VACE-1.3B/14B); the variant is read from
the files. Same as `wan-diffusers convert`; the work is done by `wan_diffusers.conversion.convert_release`.
"""

import argparse
import sys

from wan_diffusers.conversion import add_convert_arguments, run_convert


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_convert_arguments(parser)
    return run_convert(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
