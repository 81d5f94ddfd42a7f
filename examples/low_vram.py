"""Wan on the GPU you have: give a memory budget, get the fastest placement that fits (`pipe.enable_vram_budget`).

    python examples/low_vram.py --vram-budget 8GB --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers
    python examples/low_vram.py --vram-budget 24GB --model Wan-AI/Wan2.1-T2V-14B-Diffusers --height 720 --width 1280
    python examples/low_vram.py --vram-budget 8GB        # the plan on the tiny offline pipeline (CPU)

The planner estimates the peak of each placement from the pipeline's own weights and the call's size (DiT
activations, VAE decoding; `wan_diffusers.memory`) and applies the fastest that fits: everything resident, the text
encoder on the CPU, model offload, group offload of N DiT blocks at a time (prefetched on a side stream on CUDA),
leaf offload, each with VAE tiling if needed. On CUDA the script prints the measured peak beside the estimate.
"""

import argparse

import torch

from wan_diffusers import WanPipeline
from wan_diffusers.pipelines.demo import build_demo_pipeline
from wan_diffusers.tasks import variant_for_model
from wan_diffusers.utils import export_to_mp4


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vram-budget", default="8GB", help="device memory to stay within, e.g. 8GB or 24GiB")
    parser.add_argument("--model", help="Hub id or local folder (default: the tiny offline demo pipeline)")
    parser.add_argument("--height", type=int, help="default: 480 with --model")
    parser.add_argument("--width", type=int, help="default: 832 with --model")
    parser.add_argument("--frames", type=int, help="default: 81 with --model")
    parser.add_argument("--steps", type=int, help="default: 50 with --model")
    parser.add_argument("--prompt", default="A corgi runs along a beach at sunset, slow motion.")
    parser.add_argument("--output", default="low_vram.mp4")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    variant = variant_for_model("t2v", args.model)  # the original's defaults for this model
    if args.model:
        pipe = WanPipeline.from_pretrained(args.model, torch_dtype={"vae": torch.float32, "default": torch.bfloat16})
        settings = dict(
            height=variant.height,
            width=variant.width,
            num_frames=variant.num_frames,
            num_inference_steps=variant.num_inference_steps,
        )
    else:
        pipe = build_demo_pipeline("t2v")
        settings = dict(height=48, width=64, num_frames=9, num_inference_steps=3)
    given = dict(height=args.height, width=args.width, num_frames=args.frames, num_inference_steps=args.steps)
    settings.update({name: value for name, value in given.items() if value is not None})
    pipe.use_original_sampling("unipc", shift=variant.shift)
    size = {name: settings[name] for name in ("height", "width", "num_frames")}
    plan = pipe.enable_vram_budget(args.vram_budget, device=device, **size)
    print(f"plan: {plan.describe()}")

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    video = pipe(prompt=args.prompt, generator=torch.Generator("cpu").manual_seed(0), **settings).frames[0]
    if device.type == "cuda":
        measured = torch.cuda.max_memory_reserved()
        print(
            f"peak GPU memory: {measured / 1e9:.2f} GB reserved by PyTorch, estimated {plan.peak_bytes / 1e9:.2f} GB"
        )
    print(f"wrote {export_to_mp4(video, args.output, fps=variant.fps)}")


if __name__ == "__main__":
    main()
