"""Text-to-video with `WanPipeline`.

    python examples/t2v.py                                                # offline: tiny random weights, noise frames
    python examples/t2v.py --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers       # the real model, on a GPU

With `--model`, this samples exactly like the original `generate.py` (UniPC, the original negative prompt) with the
defaults of the model's variant in `wan_diffusers.tasks` (T2V-1.3B: shift 5, 50 steps, guidance 5, 480 x 832, 81
frames). The original README suggests shift 8-12 and guidance 6 for the 1.3B model: pass `--shift 8 --guidance 6`. Without `--model` a tiny random-weight pipeline runs on
the CPU in seconds: its frames are noise; it shows the whole path works.
"""

import argparse

import torch

from wan_diffusers import WanPipeline
from wan_diffusers.pipelines.demo import build_demo_pipeline
from wan_diffusers.tasks import variant_for_model
from wan_diffusers.utils import export_to_mp4


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="Hub id or local folder (default: the tiny offline demo pipeline)")
    parser.add_argument("--prompt", default="A cat walks on the grass, realistic style, warm evening light.")
    parser.add_argument("--shift", type=float, help="default: the variant's")
    parser.add_argument("--guidance", type=float, help="default: the variant's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="t2v.mp4")
    args = parser.parse_args(argv)

    variant = variant_for_model("t2v", args.model)  # the original's defaults for this model
    if args.model:
        pipe = WanPipeline.from_pretrained(args.model, torch_dtype={"vae": torch.float32, "default": torch.bfloat16})
        pipe.enable_model_cpu_offload()  # or pipe.to("cuda") with 24 GB and more
        settings = dict(
            height=variant.height,
            width=variant.width,
            num_frames=variant.num_frames,
            num_inference_steps=variant.num_inference_steps,
        )
    else:
        pipe = build_demo_pipeline("t2v")
        settings = dict(height=48, width=64, num_frames=9, num_inference_steps=3)
    pipe.use_original_sampling("unipc", shift=args.shift or variant.shift)

    video = pipe(
        prompt=args.prompt,
        guidance_scale=args.guidance or variant.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(args.seed),
        **settings,
    ).frames[0]
    print(f"wrote {export_to_mp4(video, args.output, fps=variant.fps)}")


if __name__ == "__main__":
    main()
