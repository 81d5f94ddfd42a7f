"""Video-to-video (SDEdit) with `WanVideoToVideoPipeline` and a text-to-video model.

    python examples/v2v.py                                                             # offline, tiny weights
    python examples/v2v.py --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --video input.mp4 --strength 0.7

The input video is encoded, noised to the point set by `--strength` (1 = pure noise, small = close to the input)
and denoised under the prompt; its first 4n + 1 frames are used. Without `--video` a synthetic clip (a square moving
across a gradient) is used. Without `--model` the frames are noise.
"""

import argparse

import numpy as np
import torch

from wan_diffusers import WanVideoToVideoPipeline
from wan_diffusers.pipelines.demo import build_demo_pipeline
from wan_diffusers.tasks import variant_for_model
from wan_diffusers.utils import export_to_mp4, load_video


def moving_square(num_frames: int, height: int, width: int) -> np.ndarray:
    """Frames [F, H, W, 3] in [0, 1]: a white square moving left to right over a blue gradient."""
    video = np.zeros((num_frames, height, width, 3), dtype=np.float32)
    video[..., 2] = np.linspace(0.3, 0.9, height)[None, :, None]
    side = height // 4
    for index in range(num_frames):
        left = int((width - side) * index / (num_frames - 1))
        video[index, height // 2 - side // 2 : height // 2 + side // 2, left : left + side] = 1.0
    return video


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="Hub id or local folder of a T2V model (default: the tiny offline demo)")
    parser.add_argument("--video", help="input video file (default: a synthetic moving square)")
    parser.add_argument("--prompt", default="A white cat runs from left to right across a blue room.")
    parser.add_argument("--strength", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="v2v.mp4")
    args = parser.parse_args(argv)

    variant = variant_for_model("v2v", args.model)  # the original T2V's defaults
    synthetic = (variant.num_frames, variant.height, variant.width) if args.model else (9, 48, 64)
    video = load_video(args.video, max_frames=81) if args.video else moving_square(*synthetic)
    video = video[: (len(video) - 1) // 4 * 4 + 1]  # 4n + 1 frames
    if args.model:
        dtypes = {"vae": torch.float32, "default": torch.bfloat16}
        pipe = WanVideoToVideoPipeline.from_pretrained(args.model, torch_dtype=dtypes)
        pipe.enable_model_cpu_offload()
        settings = dict(height=variant.height, width=variant.width, num_inference_steps=variant.num_inference_steps)
    else:
        pipe = build_demo_pipeline("v2v")
        settings = dict(height=48, width=64, num_inference_steps=4)

    generator = torch.Generator("cpu").manual_seed(args.seed)
    frames = pipe(
        video=video,
        prompt=args.prompt,
        strength=args.strength,
        guidance_scale=variant.guidance_scale,
        generator=generator,
        **settings,
    ).frames
    print(f"wrote {export_to_mp4(frames[0], args.output, fps=variant.fps)}")


if __name__ == "__main__":
    main()
