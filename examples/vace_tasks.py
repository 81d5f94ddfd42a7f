"""Every VACE task with `WanVACEPipeline`: one subcommand per task.

    python examples/vace_tasks.py t2v           # plain text-to-video through VACE
    python examples/vace_tasks.py r2v           # reference-to-video (--reference, once or twice)
    python examples/vace_tasks.py control       # a control video (depth, pose, flow, grey, line art...) as frames
    python examples/vace_tasks.py inpaint       # regenerate a masked region (--mask video, or --box)
    python examples/vace_tasks.py outpaint      # regenerate the border around a shrunken source (--expand)
    python examples/vace_tasks.py extend-first  # keep the first --keep frames, generate the rest
    python examples/vace_tasks.py extend-last   # keep the last --keep frames, generate the frames before them

With `--model` (a local folder or a Hub id such as `Wan-AI/Wan2.1-VACE-1.3B-diffusers`) this runs the real model
(the size, frames, steps and guidance of its variant in `wan_diffusers.tasks`; add `--offload` on a GPU with less
than ~24 GB, `--original-sampling` to sample exactly like the original `generate.py`, UniPC with the variant's shift). Without it, a tiny random-weight pipeline runs on the
CPU in seconds: its frames are noise, it only shows that the whole path works. Inputs that are not given are
synthesised (a moving square as the source video, a moving disc as the control video, drawn reference images), so
every subcommand runs offline as is.

The mask convention is VACE's: 1 (white) = generate, 0 (black) = keep.
"""

import argparse

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch
from diffusers.utils import export_to_video, load_image, load_video

from wan_diffusers import WanVACEPipeline
from wan_diffusers.pipelines.demo import build_demo_pipeline
from wan_diffusers.tasks import variant_for_model

TASKS = ("t2v", "r2v", "control", "inpaint", "outpaint", "extend-first", "extend-last")
PROMPTS = {
    "t2v": "A red fox trots through fresh snow in a pine forest, morning light.",
    "r2v": "The character walks along a beach at sunset, waves rolling in.",
    "control": "A dancer in a flowing white dress spins on a stage, dramatic lighting.",
    "inpaint": "A small wooden boat floats in the middle of the lake.",
    "outpaint": "A wide mountain landscape with a lake, the camera slowly pans.",
    "extend-first": "The scene continues: the camera moves forward through the street.",
    "extend-last": "The scene before: people arrive and gather in the square.",
}


# ---------------------------------------------------------------------------------------------------------------------
# Synthetic inputs (used when no file is given)


def moving_square(num_frames: int, height: int, width: int) -> list[np.ndarray]:
    """uint8 frames [H, W, 3]: a gradient background with a yellow square moving left to right."""
    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    columns = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    background = np.stack([rows.repeat(width, 1), columns.repeat(height, 0), np.full((height, width), 96.0)], -1)
    side = max(height // 4, 2)
    frames = []
    for index in range(num_frames):
        frame = background.copy()
        left = int((width - side) * index / max(num_frames - 1, 1))
        top = (height - side) // 2
        frame[top : top + side, left : left + side] = (255, 220, 0)
        frames.append(frame.astype(np.uint8))
    return frames


def moving_disc(num_frames: int, height: int, width: int) -> list[np.ndarray]:
    """A depth-like control signal: a bright disc moving on a dark background, grey frames [H, W, 3]."""
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    for index in range(num_frames):
        centre_x = width * (0.25 + 0.5 * index / max(num_frames - 1, 1))
        distance = np.sqrt((x - centre_x) ** 2 + (y - height / 2) ** 2) / (min(height, width) / 3)
        grey = np.clip(255 * (1 - distance), 30, 255).astype(np.uint8)
        frames.append(np.repeat(grey[..., None], 3, axis=-1))
    return frames


def drawn_reference(index: int) -> PIL.Image.Image:
    """A red circle (index 0) or a blue square (index 1) on white, not at the video size."""
    image = PIL.Image.new("RGB", (96, 128) if index == 0 else (160, 90), "white")
    draw = PIL.ImageDraw.Draw(image)
    if index == 0:
        draw.ellipse((16, 32, 80, 96), fill=(220, 30, 30))
    else:
        draw.rectangle((50, 15, 110, 75), fill=(30, 60, 220))
    return image


# ---------------------------------------------------------------------------------------------------------------------
# Task inputs


def source_frames(args, num_frames: int, height: int, width: int) -> list:
    if args.video:
        frames = load_video(args.video)
        if len(frames) < num_frames:
            raise SystemExit(f"--video has {len(frames)} frames, {num_frames} are needed")
        return [np.asarray(frame.convert("RGB").resize((width, height), PIL.Image.BICUBIC)) for frame in frames]
    return moving_square(num_frames, height, width)


def task_inputs(args, height: int, width: int, num_frames: int) -> dict:
    """`video`, `mask` and `reference_images` of the task (mask: 1 = generate, 0 = keep)."""
    task = args.task
    if task == "t2v":
        return {}
    if task == "r2v":
        images = [load_image(path) for path in args.reference] or [drawn_reference(i) for i in range(args.references)]
        return {"reference_images": images}  # kept in this order, as the original does
    if task == "control":
        control = (
            [np.asarray(f.convert("RGB").resize((width, height))) for f in load_video(args.video)][:num_frames]
            if args.video
            else moving_disc(num_frames, height, width)
        )
        return {"video": control}  # no mask: the whole video is the control signal

    frames = source_frames(args, num_frames, height, width)
    mask = np.zeros((num_frames, height, width), dtype=np.float32)
    if task == "inpaint":
        if args.mask:
            mask_frames = load_video(args.mask)[:num_frames]
            mask = np.stack([np.asarray(f.convert("L").resize((width, height))) / 255 for f in mask_frames])
        else:
            top, left, bottom, right = args.box
            mask[:, int(top * height) : int(bottom * height), int(left * width) : int(right * width)] = 1
    elif task == "outpaint":  # the source shrunk into the centre, the border generated
        border_y, border_x = int(args.expand * height), int(args.expand * width)
        inner = (width - 2 * border_x, height - 2 * border_y)
        canvas = np.full((num_frames, height, width, 3), 127, dtype=np.uint8)
        for index, frame in enumerate(frames):
            shrunk = np.asarray(PIL.Image.fromarray(frame).resize(inner, PIL.Image.BICUBIC))
            canvas[index, border_y : height - border_y, border_x : width - border_x] = shrunk
        frames = list(canvas)
        mask[:] = 1
        mask[:, border_y : height - border_y, border_x : width - border_x] = 0
    elif task == "extend-first":  # frames 0 .. keep-1 are given
        frames = frames[: args.keep] + [np.full_like(frames[0], 127)] * (num_frames - args.keep)
        mask[args.keep :] = 1
    elif task == "extend-last":  # the last `keep` frames are given, at the end
        frames = [np.full_like(frames[0], 127)] * (num_frames - args.keep) + frames[-args.keep :]
        mask[: num_frames - args.keep] = 1
    return {"video": frames, "mask": list(mask)}


# ---------------------------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=TASKS)
    parser.add_argument("--model", help="pipeline folder or Hub id; without it a tiny random-weight pipeline runs")
    parser.add_argument("--prompt", help="defaults to an example prompt of the task")
    parser.add_argument("--negative-prompt", help="defaults to the original's negative prompt")
    parser.add_argument("--video", help="source video (or control video for `control`)")
    parser.add_argument("--mask", help="mask video for `inpaint` (white = generate)")
    parser.add_argument("--box", type=float, nargs=4, default=(0.25, 0.25, 0.75, 0.75), metavar=("TOP", "LEFT", "BOTTOM", "RIGHT"), help="inpainting box as fractions of the frame, when no --mask is given")  # fmt: skip
    parser.add_argument("--expand", type=float, default=0.15, help="outpainting border, fraction of each side")
    parser.add_argument("--keep", type=int, default=5, help="frames kept by extend-first / extend-last")
    parser.add_argument("--reference", action="append", default=[], help="reference image (repeat for two)")
    parser.add_argument("--references", type=int, choices=(1, 2), default=2, help="synthetic references for r2v")
    parser.add_argument("--scale", type=float, default=1.0, help="conditioning scale (the original's context_scale)")
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--frames", type=int, help="4n + 1 frames")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--guidance", type=float, help="default: the variant's (wan_diffusers.tasks)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--original-sampling", action="store_true", help="UniPC with the original schedule")
    parser.add_argument("--shift", type=float, help="flow shift for --original-sampling (default: the variant's)")
    parser.add_argument("--offload", action="store_true", help="enable_model_cpu_offload() (CUDA)")
    parser.add_argument("--output", default=None, help="mp4 path, default vace_<task>.mp4")
    return parser.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    variant = variant_for_model("vace", args.model)  # the original's defaults for this model
    if args.model:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        pipe = WanVACEPipeline.from_pretrained(args.model, torch_dtype=dtype)
        pipe.vae.to(torch.float32)  # the VAE is small; float32 keeps the decode exact
        if args.offload:
            pipe.enable_model_cpu_offload()
        else:
            pipe.to(device)
        height, width = args.height or variant.height, args.width or variant.width
        num_frames, steps = args.frames or variant.num_frames, args.steps or variant.num_inference_steps
    else:
        pipe = build_demo_pipeline("vace")  # tiny random weights: its frames are noise
        height, width, num_frames, steps = args.height or 48, args.width or 80, args.frames or 9, args.steps or 4
    if args.original_sampling:
        pipe.use_original_sampling("unipc", shift=args.shift or variant.shift)
    if args.task in ("extend-first", "extend-last") and not 0 < args.keep < num_frames:
        raise SystemExit(f"--keep must be between 1 and {num_frames - 1}, got {args.keep}")

    frames = pipe(
        prompt=args.prompt or PROMPTS[args.task],
        negative_prompt=args.negative_prompt,
        **task_inputs(args, height, width, num_frames),
        conditioning_scale=args.scale,
        height=height,
        width=width,
        num_frames=num_frames,
        num_inference_steps=steps,
        guidance_scale=variant.guidance_scale if args.guidance is None else args.guidance,
        generator=torch.Generator().manual_seed(args.seed),
    ).frames[0]
    output = args.output or f"vace_{args.task}.mp4"
    export_to_video(list(frames), output, fps=variant.fps)
    print(f"wrote {output} ({len(frames)} frames of {width}x{height})")
    return output


if __name__ == "__main__":
    main()
