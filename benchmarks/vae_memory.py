"""Peak CPU memory of VAE decode and encode for 17 and 81 frames: does it grow with the video beyond the output?

Our AutoencoderKLWan writes every decoded frame into a preallocated output, so decoding 81 frames should need the
output plus the same working memory as 17 frames. diffusers' built-in class concatenates the chunks as it goes
(`torch.cat([out, chunk])` per latent frame) and clamps into a new tensor, so its working memory grows by about one
output. Both run on identical random weights; each figure comes from a fresh process (see `bench_vae.py`).

    python benchmarks/vae_memory.py                                  # released widths (base_dim 96) at 64 x 64
    python benchmarks/vae_memory.py --base-dim 16 --height 128 --width 128 --frames 17 81

Prints, per operation, implementation and frame count: the peak beyond the memory in use before the call, the
output's size, the peak beyond the output, and the growth of that last figure from the shortest to the longest video.
"""

import argparse

from bench_vae import IMPLEMENTATIONS, OPERATIONS, cpu_peak
from common import append_json_lines


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-dim", type=int, default=96, help="VAE width (96 = the released Wan 2.1 VAE)")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--frames", type=int, nargs="+", default=[17, 81], help="frame counts (1 + 4k) to compare")
    parser.add_argument("--operations", nargs="+", choices=OPERATIONS, default=list(OPERATIONS))
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--output", help="append the results as JSON lines to this file")
    return parser.parse_args()


def main():
    args = parse_args()
    config = {"base_dim": args.base_dim}
    print(f"CPU, {args.dtype}, base_dim {args.base_dim}, {args.height} x {args.width}; MiB")
    print(f"{'operation':9s} {'model':9s} {'frames':>6s} {'peak':>9s} {'output':>9s} {'beyond output':>14s}")
    rows = []
    for operation in args.operations:
        for implementation in IMPLEMENTATIONS:
            beyond = {}
            for frames in args.frames:
                memory = cpu_peak(implementation, operation, config, (frames, args.height, args.width), args.dtype)
                peak, output = memory["peak_bytes"] / 2**20, memory["output_bytes"] / 2**20
                beyond[frames] = peak - output
                rows.append(
                    {"operation": operation, "implementation": implementation, "frames": frames, "peak_mb": peak}
                    | {"output_mb": output, "beyond_output_mb": peak - output, "height": args.height}
                    | {"width": args.width, "base_dim": args.base_dim, "dtype": args.dtype}
                )
                print(
                    f"{operation:9s} {implementation:9s} {frames:6d} {peak:9.1f} {output:9.1f} {peak - output:14.1f}"
                )
            shortest, longest = min(args.frames), max(args.frames)
            growth = beyond[longest] - beyond[shortest]
            print(
                f"{'':9s} {implementation:9s} growth beyond the output, {shortest} -> {longest} frames: {growth:+.1f}"
            )
    if args.output:
        append_json_lines(args.output, rows)


if __name__ == "__main__":
    main()
