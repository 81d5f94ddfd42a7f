"""`python -m wan_diffusers.memory [--frames 81] [--budgets 6 8 12 16 24 80]`: the plan each budget gets for the
released T2V models (1.3B and 14B, bf16, VAE float32) at 480P and 720P, with its estimated peak in GB."""

import argparse

from .model import released_memory_model
from .planner import peak_table

SIZES = {"480P (832 x 480)": (480, 832), "720P (1280 x 720)": (720, 1280)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wan_diffusers.memory", description=__doc__)
    parser.add_argument("--frames", type=int, default=81, help="frames per video (default 81)")
    parser.add_argument("--budgets", type=float, nargs="+", default=[6, 8, 12, 16, 24, 80], help="budgets in GB")
    args = parser.parse_args(argv)
    models = {f"T2V-{size}": released_memory_model(size) for size in ("1.3B", "14B")}
    print(peak_table(models, SIZES, args.budgets, num_frames=args.frames))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
