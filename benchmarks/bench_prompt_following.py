"""Prompt following of the tiny shapes model: how often a generated video shows the colour, shape and motion asked for.

    python benchmarks/bench_prompt_following.py                    # the shipped model, all 60 combinations
    python benchmarks/bench_prompt_following.py --model FOLDER --steps 20 --guidance 5 --seeds 2
    python benchmarks/bench_prompt_following.py --lora             # the shipped cyan LoRA, on cyan prompts

Unlike the other scripts here this measures quality, not speed, and has no diffusers counterpart: each prompt
`a {colour} {shape} moves {direction}` is generated (seeded), decoded, and read back by
`wan_diffusers.training.shapes.describe_video`; accuracies are printed for the combinations seen in training and the
held-out ones apart (`training.shapes.held_out_combinations`). Results are in RESULTS.md.
"""

import argparse
import time

import torch

from wan_diffusers import WanPipeline, tiny_lora_path, tiny_model_path
from wan_diffusers.training.evaluation import accuracy, accuracy_report, prompt_following
from wan_diffusers.training.shapes import COLOURS, all_combinations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a shapes pipeline folder (default: the shipped tiny model)")
    parser.add_argument("--lora", action="store_true", help="load the shipped cyan LoRA and test cyan prompts too")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps (default 20)")
    parser.add_argument("--guidance", type=float, default=5.0, help="guidance scale (default 5)")
    parser.add_argument("--seeds", type=int, default=1, help="videos per prompt, seeds 0, 1000, ... (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    pipe = WanPipeline.from_pretrained(args.model or tiny_model_path())
    pipe.set_progress_bar_config(disable=True)
    colours = tuple(COLOURS)
    if args.lora:
        pipe.load_lora_weights(tiny_lora_path())
        colours = (*colours, "cyan")
    combinations = all_combinations(colours)
    start = time.time()
    results = []
    for seed in range(args.seeds):
        results += prompt_following(pipe, combinations, seed=1000 * seed, num_inference_steps=args.steps,
                                    guidance_scale=args.guidance)  # fmt: skip
    print(f"model {args.model or tiny_model_path()}{' + cyan LoRA' if args.lora else ''}: {len(results)} videos, "
          f"{args.steps} steps, guidance {args.guidance}, {time.time() - start:.0f} s")  # fmt: skip
    base = [result for result in results if result.expected[0] != "cyan"]
    print(accuracy_report(base))
    if args.lora:  # the LoRA's own task, apart
        table = accuracy([result for result in results if result.expected[0] == "cyan"])
        print(
            "cyan (the LoRA's new colour): "
            + ", ".join(f"{name} {100 * value:.0f} %" for name, value in table.items())
        )
    for result in results:
        if not all(result.correct):
            print(f"  {result.prompt!r}{' (held out)' if result.held_out else ''}: found {result.found}")


if __name__ == "__main__":
    main()
