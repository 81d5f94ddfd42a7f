"""Image-to-video with `WanImageToVideoPipeline`.

    python examples/i2v.py                                                       # offline, tiny random weights
    python examples/i2v.py --model Wan-AI/Wan2.1-I2V-14B-480P-Diffusers --image photo.jpg

The video size follows the image's aspect ratio within `--max-area` pixels, by the original rule (default: the
model's variant in `wan_diffusers.tasks`, 480 * 832 for the 480P model, 720 * 1280 for the 720P one); the first frame
is the image. With `--model` this samples like the original `generate.py --task i2v-14B` (UniPC, 40 steps, guidance
5; shift 3 up to 480 * 832 pixels, else 5). Without `--image` a synthetic picture is drawn. Without `--model` the
frames are noise.
"""

import argparse

import numpy as np
import PIL.Image
import torch

from wan_diffusers import WanImageToVideoPipeline
from wan_diffusers.pipelines.demo import build_demo_pipeline
from wan_diffusers.tasks import shift_for, variant_for_model
from wan_diffusers.utils import export_to_mp4, load_image


def sunset(height: int = 480, width: int = 832) -> PIL.Image.Image:
    """A synthetic picture: a sky gradient, a sun and a sea."""
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    image = np.stack([0.9 - 0.3 * y, 0.5 - 0.3 * y, 0.3 + 0.5 * y], -1)
    image[(x - 0.5) ** 2 + ((y - 0.55) * height / width) ** 2 < 0.01] = (1.0, 0.8, 0.3)
    image[y > 0.6] = (0.1, 0.2, 0.4)
    return PIL.Image.fromarray((image * 255).astype(np.uint8))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="Hub id or local folder (default: the tiny offline demo pipeline)")
    parser.add_argument("--image", help="the first frame (default: a synthetic sunset)")
    parser.add_argument("--prompt", default="The sun slowly sets over the calm sea, gentle waves, cinematic.")
    parser.add_argument("--max-area", type=int, help="default: the variant's")
    parser.add_argument("--shift", type=float, help="default: the original's for the size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="i2v.mp4")
    args = parser.parse_args(argv)

    variant = variant_for_model("i2v", args.model)  # the original's defaults for this model
    image = (
        load_image(args.image)
        if args.image
        else sunset(*((variant.height, variant.width) if args.model else (48, 64)))
    )
    if args.model:
        dtypes = {"vae": torch.float32, "default": torch.bfloat16}
        pipe = WanImageToVideoPipeline.from_pretrained(args.model, torch_dtype=dtypes)
        pipe.enable_model_cpu_offload()
        settings = dict(
            max_area=args.max_area or variant.max_area,
            num_frames=variant.num_frames,
            num_inference_steps=variant.num_inference_steps,
        )
    else:
        pipe = build_demo_pipeline("i2v")
        settings = dict(max_area=48 * 64, num_frames=9, num_inference_steps=3)
    pipe.use_original_sampling("unipc", shift=args.shift or shift_for("i2v", settings["max_area"]))

    generator = torch.Generator("cpu").manual_seed(args.seed)
    video = pipe(image, args.prompt, guidance_scale=variant.guidance_scale, generator=generator, **settings).frames[0]
    print(f"wrote {export_to_mp4(video, args.output, fps=variant.fps)}")


if __name__ == "__main__":
    main()
