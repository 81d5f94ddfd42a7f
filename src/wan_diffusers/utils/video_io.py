"""Reading images and videos, and writing H.264 mp4 files through imageio-ffmpeg (its bundled ffmpeg binary, so no
system ffmpeg is needed)."""

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from .atomic import atomic_file


def export_to_mp4(frames, path: str | os.PathLike, fps: int = 16, quality: int = 8) -> Path:
    """Write one video as an H.264 mp4 (yuv420p, playable everywhere) and return its path.

    The file is written under a temporary name beside `path` and renamed when complete (`utils.atomic`).

    `frames`: what a pipeline returns for one video: a numpy array [F, H, W, 3] or a tensor [F, 3, H, W] with values in
    [0, 1], a uint8 array [F, H, W, 3], or a list of PIL images. `quality` is imageio's 0-10 scale.
    """
    import imageio.v2 as imageio

    array = _frames_to_uint8(frames)
    if array.shape[1] % 2 or array.shape[2] % 2:
        raise ValueError(f"`frames` must have an even height and width for H.264, got {array.shape[1:3]}")
    path = Path(path)
    # ffmpeg writes as it encodes: into a temporary file, so an existing `path` survives any interruption
    with atomic_file(path) as temporary:
        writer = imageio.get_writer(
            temporary,
            format="FFMPEG",
            fps=fps,
            codec="libx264",
            quality=quality,
            pixelformat="yuv420p",
            macro_block_size=2,
            ffmpeg_log_level="error",
        )
        try:
            for frame in array:
                writer.append_data(frame)
        finally:
            writer.close()
    return path


def load_image(path: str | os.PathLike) -> PIL.Image.Image:
    """An image file as an RGB PIL image."""
    with PIL.Image.open(path) as image:
        return image.convert("RGB")


def load_video(path: str | os.PathLike, max_frames: int | None = None) -> list[PIL.Image.Image]:
    """The frames of a video file (mp4, webm, gif, ... anything ffmpeg reads) as RGB PIL images.

    A file ffmpeg cannot read raises a ValueError with ffmpeg's own reason (not its whole build banner).
    """
    frames = []
    with _video_reader(path, f"`{path}`") as reader:
        for frame in reader:
            frames.append(PIL.Image.fromarray(np.asarray(frame)[..., :3]))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"`{path}` holds no video frames")
    return frames


def probe_video(path: str | os.PathLike, name: str) -> None:
    """Raise a ValueError naming `name` unless `path` is a video with at least one frame that decodes."""
    if Path(path).suffix.lower() in PIL.Image.registered_extensions() and Path(path).suffix.lower() != ".gif":
        raise ValueError(f"{name} {path} is an image, not a video; give a video file (mp4, webm, gif, ...)")
    with _video_reader(path, f"{name} {path}") as reader:
        try:
            next(iter(reader))
        except StopIteration:
            raise ValueError(f"{name} {path} holds no video frames") from None


@contextmanager
def _video_reader(path, name: str):
    import imageio.v2 as imageio

    try:
        reader = imageio.get_reader(path, format="FFMPEG")
    except (OSError, RuntimeError, ValueError) as error:
        raise ValueError(f"{name} is not a video ffmpeg can read ({_ffmpeg_reason(error)})") from None
    try:
        yield reader
    except (OSError, RuntimeError) as error:
        raise ValueError(f"{name} is not a video ffmpeg can read ({_ffmpeg_reason(error)})") from None
    finally:
        reader.close()


def _ffmpeg_reason(error: Exception) -> str:
    """The line of an imageio-ffmpeg error that says what is wrong, without ffmpeg's version and build banner."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in reversed(lines):
        if ":" in line and not line.startswith(("configuration:", "built with", "lib", "ffmpeg version")):
            return line
    return lines[-1] if lines else type(error).__name__


def _frames_to_uint8(frames) -> np.ndarray:
    if isinstance(frames, list) and frames and isinstance(frames[0], PIL.Image.Image):
        return np.stack([np.asarray(frame.convert("RGB")) for frame in frames])
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().float().cpu().permute(0, 2, 3, 1).numpy()  # [F, 3, H, W] -> [F, H, W, 3]
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"`frames` must be one video [F, H, W, 3], got shape {list(frames.shape)}")
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
