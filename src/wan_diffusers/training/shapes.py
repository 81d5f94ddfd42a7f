"""A procedural video dataset of moving shapes, and a detector that reads colour, shape and motion back from frames.

Every clip shows one shape of one colour moving in a straight line across a black background; its caption comes
from the grammar `a {colour} {shape} moves {direction}`. Rendering is exact and seeded, so a model trained on it can
be checked automatically: `describe_video` finds the shape in each frame of a generated video and reports what it
sees, which `prompt_following` compares with the prompt.

The training grammar is `COLOURS` x `SHAPES` x `DIRECTIONS` (60 combinations); `held_out_combinations` picks 12 of
them that a model never sees, so that the benchmark can tell memorised combinations from composed ones.
`EXTRA_COLOURS` (cyan, magenta) are left out of the base grammar on purpose: they are the "new task" a LoRA learns.
"""

import csv
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# RGB in [0, 1]
COLOURS = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "white": (1.0, 1.0, 1.0),
}
EXTRA_COLOURS = {"cyan": (0.0, 1.0, 1.0), "magenta": (1.0, 0.0, 1.0)}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # (dx, dy), y grows downwards

# hue in degrees of every saturated colour the detector can name (white is told apart by its low saturation)
_HUES = {"red": 0.0, "yellow": 60.0, "green": 120.0, "cyan": 180.0, "blue": 240.0, "magenta": 300.0}
# fill ratio of the bounding box: square 1, circle pi/4 = 0.785, triangle 1/2; the thresholds sit halfway
_FILL_THRESHOLDS = ((0.89, "square"), (0.64, "circle"), (0.0, "triangle"))


def caption(colour: str, shape: str, direction: str) -> str:
    return f"a {colour} {shape} moves {direction}"


def parse_caption(text: str) -> tuple[str, str, str]:
    """`"a red circle moves left"` -> `("red", "circle", "left")`; a clear error for anything else."""
    words = text.strip().lower().split()
    if len(words) != 5 or words[0] != "a" or words[3] != "moves":
        raise ValueError(f"a shapes prompt must read `a {{colour}} {{shape}} moves {{direction}}`, got {text!r}")
    return words[1], words[2], words[4]


def all_combinations(colours=tuple(COLOURS)) -> list[tuple[str, str, str]]:
    return list(itertools.product(colours, SHAPES, DIRECTIONS))


def held_out_combinations() -> list[tuple[str, str, str]]:
    """12 of the 60 combinations, one colour per (shape, direction) pair: (colour + shape + direction) % 5 == 0 on
    their indices. Every (colour, shape), (colour, direction) and (shape, direction) pair keeps at least two training
    combinations, so a held-out prompt asks for a new composition of things the model has seen."""
    colours = list(COLOURS)
    return [
        (colour, shape, direction)
        for (i, colour), (j, shape), (k, direction) in itertools.product(
            enumerate(colours), enumerate(SHAPES), enumerate(DIRECTIONS)
        )
        if (i + j + k) % 5 == 0
    ]


def training_combinations() -> list[tuple[str, str, str]]:
    held_out = set(held_out_combinations())
    return [combination for combination in all_combinations() if combination not in held_out]


@dataclass(frozen=True)
class ClipSpec:
    """One clip: what it shows and where. Sizes and positions are in pixels; `speed` in pixels per frame."""

    colour: str
    shape: str
    direction: str
    size: float
    start: tuple[float, float]  # centre (x, y) in the first frame
    speed: float

    @property
    def caption(self) -> str:
        return caption(self.colour, self.shape, self.direction)


def random_clip_spec(
    colour: str,
    shape: str,
    direction: str,
    rng: np.random.Generator,
    height: int = 64,
    width: int = 64,
    num_frames: int = 17,
) -> ClipSpec:
    """A random size, speed and start for a clip whose shape stays whole inside the frame from start to end."""
    size = rng.uniform(0.22, 0.3) * min(height, width)
    travel_room = (width if DIRECTIONS[direction][0] else height) - size - 4
    speed = rng.uniform(0.45, 0.7) * travel_room / (num_frames - 1)
    dx, dy = DIRECTIONS[direction]
    margin = size / 2 + 2
    # the coordinate along the motion starts far enough from the edge it moves towards; the other one is free
    x0 = rng.uniform(margin, width - margin) if dx == 0 else None
    y0 = rng.uniform(margin, height - margin) if dy == 0 else None
    travel = speed * (num_frames - 1)
    if dx:
        low, high = (margin, width - margin - travel) if dx > 0 else (margin + travel, width - margin)
        x0 = rng.uniform(low, high)
    if dy:
        low, high = (margin, height - margin - travel) if dy > 0 else (margin + travel, height - margin)
        y0 = rng.uniform(low, high)
    return ClipSpec(colour, shape, direction, float(size), (float(x0), float(y0)), float(speed))


def render_clip(spec: ClipSpec, height: int = 64, width: int = 64, num_frames: int = 17, supersample: int = 4):
    """The clip as float32 frames [F, H, W, 3] in [0, 1], antialiased by `supersample`^2 samples per pixel."""
    colour = np.asarray({**COLOURS, **EXTRA_COLOURS}[spec.colour], dtype=np.float32)
    offsets = (np.arange(supersample) + 0.5) / supersample
    ys = (np.arange(height)[:, None] + offsets[None, :]).reshape(-1)  # sample positions, pixel units
    xs = (np.arange(width)[:, None] + offsets[None, :]).reshape(-1)
    dx, dy = DIRECTIONS[spec.direction]
    frames = np.empty((num_frames, height, width, 3), dtype=np.float32)
    half = spec.size / 2
    for index in range(num_frames):
        cx = spec.start[0] + dx * spec.speed * index
        cy = spec.start[1] + dy * spec.speed * index
        u = xs[None, :] - cx  # [1, W*s]
        v = ys[:, None] - cy  # [H*s, 1]
        if spec.shape == "circle":
            inside = u**2 + v**2 <= half**2
        elif spec.shape == "square":
            inside = (np.abs(u) <= half) & (np.abs(v) <= half)
        elif spec.shape == "triangle":  # apex up, base down, as wide as it is tall
            inside = (v >= -half) & (v <= half) & (np.abs(u) <= (v + half) / 2)
        else:
            raise ValueError(f"`shape` must be one of {SHAPES}, got {spec.shape!r}")
        coverage = inside.reshape(height, supersample, width, supersample).mean(axis=(1, 3), dtype=np.float32)
        frames[index] = coverage[..., None] * colour
    return frames


def codec_clip(rng: np.random.Generator, height: int = 64, width: int = 64, num_frames: int = 17) -> np.ndarray:
    """A clip for training the VAE, frames [F, H, W, 3] in [0, 1]: one to three moving shapes, each of a random colour
    (a grammar colour half of the time, any RGB otherwise), overlapping ones combined by their brightest channel.

    Wider than the grammar because the VAE is a codec: the DiT's latents (and a LoRA's new colour) must decode too.
    Several shapes and free colours give every step more content to reconstruct, and colours whose channels vary
    independently teach the latent all three channels from the start (with only the grammar's colours, the red and
    blue channels are learnt hundreds of steps after the green one).
    """
    named = np.asarray(list({**COLOURS, **EXTRA_COLOURS}.values()), dtype=np.float32)
    frames = np.zeros((num_frames, height, width, 3), dtype=np.float32)
    for _ in range(rng.integers(1, 4)):
        rgb = named[rng.integers(len(named))] if rng.random() < 0.5 else rng.uniform(0, 1, 3).astype(np.float32)
        spec = random_clip_spec(
            "white", rng.choice(SHAPES), rng.choice(list(DIRECTIONS)), rng, height, width, num_frames
        )
        frames = np.maximum(frames, render_clip(spec, height, width, num_frames) * rgb)
    return frames


def write_shapes_dataset(
    folder: str | os.PathLike,
    combinations: list[tuple[str, str, str]],
    clips_per_combination: int,
    seed: int = 0,
    height: int = 64,
    width: int = 64,
    num_frames: int = 17,
    fps: int = 16,
) -> Path:
    """Render clips as mp4 files plus `metadata.csv` (`file_name,caption`), the layout `wan-diffusers train` reads.

    Seeded: the same arguments write the same clips. The folder is written under a temporary name and renamed.
    """
    from ..utils.video_io import export_to_mp4

    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"`folder` {folder} exists already; remove it or choose another path")
    partial = folder.with_name(folder.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for colour, shape, direction in combinations:
        for index in range(clips_per_combination):
            spec = random_clip_spec(colour, shape, direction, rng, height, width, num_frames)
            name = f"{colour}_{shape}_{direction}_{index:03d}.mp4"
            export_to_mp4(render_clip(spec, height, width, num_frames), partial / name, fps=fps, quality=10)
            rows.append((name, spec.caption))
    with open(partial / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "caption"])
        writer.writerows(rows)
    partial.rename(folder)
    return folder


# -- reading shapes back from frames -----------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoDescription:
    """What `describe_video` saw: names (or None when nothing was found) plus the measurements behind them."""

    colour: str | None
    shape: str | None
    direction: str | None
    hue: float | None  # degrees
    saturation: float | None
    fill_ratio: float | None
    displacement: tuple[float, float] | None  # centroid (dx, dy) from the first to the last frame, pixels


def describe_video(frames, threshold: float = 0.35, min_pixels: int = 6, min_travel: float = 4.0) -> VideoDescription:
    """Find the shape in each frame of one video [F, H, W, 3] (values in [0, 1]) and name its colour, shape and motion.

    - colour: the hue of the mean RGB of the bright pixels (brightest channel > `threshold`), or white when its
      saturation is below 0.35;
    - shape: the median over frames of the fill ratio (bright pixels / bounding-box area): square, circle or triangle;
    - direction: the dominant axis and sign of the centroid's motion from the first to the last frame where a shape
      was found, if it moved at least `min_travel` pixels.
    """
    import colorsys

    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"`frames` must be one video [F, H, W, 3], got shape {list(frames.shape)}")
    colours, fills, centroids = [], [], []
    for frame in frames:
        bright = frame.max(axis=-1) > threshold
        if bright.sum() < min_pixels:
            continue
        ys, xs = np.nonzero(bright)
        colours.append(frame[bright].mean(axis=0))
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        fills.append(bright.sum() / box)
        centroids.append((xs.mean(), ys.mean()))
    if not colours:
        return VideoDescription(None, None, None, None, None, None, None)
    red, green, blue = np.mean(colours, axis=0)
    hue, saturation, _ = colorsys.rgb_to_hsv(float(red), float(green), float(blue))
    hue *= 360.0
    if saturation < 0.35:
        colour = "white"
    else:
        colour = min(_HUES, key=lambda name: min(abs(hue - _HUES[name]), 360 - abs(hue - _HUES[name])))
    fill = float(np.median(fills))
    shape = next(name for bound, name in _FILL_THRESHOLDS if fill >= bound)
    dx, dy = (float(b - a) for a, b in zip(centroids[0], centroids[-1]))
    direction = None
    if max(abs(dx), abs(dy)) >= min_travel:
        direction = ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")
    return VideoDescription(colour, shape, direction, hue, saturation, fill, (dx, dy))
