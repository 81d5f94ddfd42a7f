"""Draw docs/tiny_shapes.png: frames of videos the shipped tiny shapes model generates, one row per prompt.

    python scripts/make_shapes_strip.py [--output docs/tiny_shapes.png]

Seeded (seed 0, 20 steps, guidance 5, as `wan-diffusers generate` without --model). The fourth row is a combination
held out of training; the last one a colour the model never saw, drawn with the cyan LoRA (`tiny_lora_path()`).
"""

import argparse
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch

from wan_diffusers import WanPipeline, tiny_lora_path, tiny_model_path
from wan_diffusers.training import tiny
from wan_diffusers.training.shapes import caption, held_out_combinations

HELD_OUT, WITH_LORA = " (held out)", " (cyan LoRA)"
PROMPTS = [
    "a red circle moves right",
    "a yellow square moves down",
    "a white triangle moves left",
    caption(*held_out_combinations()[0]) + HELD_OUT,
    "a cyan triangle moves up" + WITH_LORA,
]
FRAMES = (0, 4, 8, 12, 16)
SCALE = 2
LABEL_WIDTH = 260


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("docs/tiny_shapes.png"))
    args = parser.parse_args()
    pipe = WanPipeline.from_pretrained(tiny_model_path())
    size = tiny.HEIGHT * SCALE
    strip = PIL.Image.new("RGB", (LABEL_WIDTH + len(FRAMES) * (size + 4), len(PROMPTS) * (size + 4)), "white")
    draw = PIL.ImageDraw.Draw(strip)
    for row, label in enumerate(PROMPTS):
        prompt = label.removesuffix(HELD_OUT).removesuffix(WITH_LORA)
        if label.endswith(WITH_LORA):
            pipe.load_lora_weights(tiny_lora_path())
        video = pipe(
            prompt,
            height=tiny.HEIGHT,
            width=tiny.WIDTH,
            num_frames=tiny.NUM_FRAMES,
            num_inference_steps=tiny.SAMPLING_DEFAULTS["steps"],
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).frames[0]
        top = row * (size + 4)
        draw.text((8, top + size // 2 - 6), label, fill="black")
        for column, index in enumerate(FRAMES):
            frame = PIL.Image.fromarray((np.clip(video[index], 0, 1) * 255).round().astype(np.uint8))
            strip.paste(frame.resize((size, size), PIL.Image.NEAREST), (LABEL_WIDTH + column * (size + 4), top))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    partial = args.output.with_name(args.output.stem + ".partial.png")
    strip.save(partial)
    partial.rename(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
