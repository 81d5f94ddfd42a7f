"""First-last-frame-to-video with `WanImageToVideoPipeline` and the FLF2V model.

    python examples/flf2v.py                                                            # offline, tiny weights
    python examples/flf2v.py --model Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers --first a.jpg --last b.jpg

The video starts on `--first` and ends on `--last`. Any 4n + 1 frame count works (the original only allows 81).
With `--model` this samples like the original `generate.py --task flf2v-14B` (UniPC, shift 16, 50 steps, guidance
5: the FLF2V record of `wan_diffusers.tasks`) within 720 * 1280 pixels. Without `--first` / `--last`, two synthetic frames are drawn (a ball on the left,
then on the right). Without `--model` the frames are noise.
"""

import argparse

import numpy as np
import PIL.Image
import torch

from wan_diffusers import WanImageToVideoPipeline
from wan_diffusers.pipelines.demo import build_demo_pipeline
from wan_diffusers.tasks import variant_for_model
from wan_diffusers.utils import export_to_mp4, load_image


def ball(position: float, height: int = 720, width: int = 1280) -> PIL.Image.Image:
    """A red ball at `position` (0 = left, 1 = right) on a grey floor."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.full((height, width, 3), 200, dtype=np.uint8)
    image[y > 0.7 * height] = (120, 110, 100)
    centre = (0.65 * height, (0.15 + 0.7 * position) * width)
    image[(y - centre[0]) ** 2 + (x - centre[1]) ** 2 < (0.08 * height) ** 2] = (220, 30, 30)
    return PIL.Image.fromarray(image)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="Hub id or local folder (default: the tiny offline demo pipeline)")
    parser.add_argument("--first", help="the first frame (default: a synthetic ball on the left)")
    parser.add_argument("--last", help="the last frame (default: the ball on the right)")
    parser.add_argument("--prompt", default="A red ball rolls from the left to the right across the floor.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="flf2v.mp4")
    args = parser.parse_args(argv)

    variant = variant_for_model("flf2v", args.model)  # the original's defaults for this model
    size = (variant.height, variant.width) if args.model else (48, 64)
    first = load_image(args.first) if args.first else ball(0.0, *size)
    last = load_image(args.last) if args.last else ball(1.0, *size)
    if args.model:
        dtypes = {"vae": torch.float32, "default": torch.bfloat16}
        pipe = WanImageToVideoPipeline.from_pretrained(args.model, torch_dtype=dtypes)
        pipe.enable_model_cpu_offload()
        settings = dict(
            max_area=variant.max_area, num_frames=variant.num_frames, num_inference_steps=variant.num_inference_steps
        )
    else:
        pipe = build_demo_pipeline("flf2v")
        settings = dict(max_area=48 * 64, num_frames=9, num_inference_steps=3)
    pipe.use_original_sampling("unipc", shift=variant.shift)

    generator = torch.Generator("cpu").manual_seed(args.seed)
    guidance = variant.guidance_scale
    video = pipe(first, args.prompt, last_image=last, guidance_scale=guidance, generator=generator, **settings).frames[
        0
    ]
    print(f"wrote {export_to_mp4(video, args.output, fps=variant.fps)}")


if __name__ == "__main__":
    main()
