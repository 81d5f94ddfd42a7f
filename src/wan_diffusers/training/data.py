"""Training data: a folder of videos or images with captions, sampled into buckets and cached as latents.

Layout (`wan-diffusers train --data FOLDER`): media files (mp4, webm, mov, mkv, avi, gif; png, jpg, jpeg, webp) and
captions in `metadata.csv` or `metadata.jsonl` (columns `file_name` and `caption`; `video`, `image`, `file` and
`text`, `prompt` are accepted too), or a `NAME.txt` caption next to each `NAME.mp4`.

A sample is read once, sampled to `num_frames` frames every `frame_stride` source frames (an image is a 1-frame
video), resized and centre-cropped to its bucket, the (height, width, frames) entry of `buckets` closest to its aspect
ratio among those it has enough frames for, then encoded: normalised VAE latents and umT5 prompt features (its own
tokens only; the model zero-pads them) are written to the cache folder, one safetensors file per sample, so that later
runs and epochs never touch the VAE or the text encoder. Bad samples (unreadable, too few frames, no caption) are
skipped and listed in `bad_samples.txt` in the output folder, never fatal.
"""

import csv
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
_FILE_COLUMNS = ("file_name", "video", "image", "file", "path")
_CAPTION_COLUMNS = ("caption", "text", "prompt")


@dataclass(frozen=True)
class Bucket:
    height: int
    width: int
    num_frames: int

    @classmethod
    def parse(cls, text: str) -> "Bucket":
        """`"480x832x81"` (height x width x frames)."""
        try:
            height, width, frames = (int(part) for part in text.lower().split("x"))
        except ValueError:
            raise ValueError(f"a bucket is HEIGHTxWIDTHxFRAMES such as 480x832x81, got {text!r}") from None
        return cls(height, width, frames)

    def __str__(self) -> str:
        return f"{self.height}x{self.width}x{self.num_frames}"


@dataclass(frozen=True)
class Item:
    path: Path
    caption: str


def discover(folder: str | os.PathLike) -> tuple[list[Item], list[tuple[str, str]]]:
    """The captioned media files of `folder`, and the (file, reason) pairs of those that cannot be used."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"`--data` must be a folder of videos or images with captions, got {folder}")
    rows = _metadata_rows(folder)
    bad = []
    if rows is None:  # NAME.txt captions next to the media files
        rows = []
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES:
                sidecar = path.with_suffix(".txt")
                rows.append((path.name, sidecar.read_text().strip() if sidecar.exists() else ""))
    items = []
    for name, text in rows:
        path = folder / name
        if not text:
            bad.append((name, "no caption"))
        elif not path.is_file():
            bad.append((name, "file not found"))
        elif path.suffix.lower() not in VIDEO_SUFFIXES | IMAGE_SUFFIXES:
            bad.append((name, f"not a video or image file ({path.suffix})"))
        else:
            items.append(Item(path, text))
    return items, bad


def _metadata_rows(folder: Path) -> list[tuple[str, str]] | None:
    if (folder / "metadata.csv").exists():
        with open(folder / "metadata.csv", newline="") as handle:
            records = list(csv.DictReader(handle))
    elif (folder / "metadata.jsonl").exists():
        with open(folder / "metadata.jsonl") as handle:
            records = [json.loads(line) for line in handle if line.strip()]
    else:
        return None
    rows = []
    for number, record in enumerate(records, start=2):
        name = next((record[key] for key in _FILE_COLUMNS if record.get(key)), None)
        text = next((record[key] for key in _CAPTION_COLUMNS if record.get(key)), "")
        if name is None:
            raise ValueError(
                f"metadata row {number} in {folder} names no file: give one of the columns {list(_FILE_COLUMNS)}"
            )
        rows.append((str(name), str(text or "").strip()))
    return rows


def read_frames(path: Path, num_frames: int, frame_stride: int) -> np.ndarray:
    """`num_frames` frames [F, H, W, 3] uint8 of a video (every `frame_stride`-th from the start), or an image."""
    from ..utils.video_io import load_image, load_video

    if path.suffix.lower() in IMAGE_SUFFIXES:
        return np.asarray(load_image(path))[None]
    needed = 1 + (num_frames - 1) * frame_stride
    frames = load_video(path, max_frames=needed)
    if len(frames) < needed:
        raise ValueError(f"too few frames ({len(frames)}, needs {needed})")
    return np.stack([np.asarray(frame) for frame in frames[::frame_stride][:num_frames]])


def choose_bucket(frames: np.ndarray, buckets: list[Bucket], available_frames: int) -> Bucket | None:
    """The bucket closest in aspect ratio among those with at most `available_frames` frames (the longest first)."""
    fitting = [bucket for bucket in buckets if bucket.num_frames <= available_frames]
    if not fitting:
        return None
    longest = max(bucket.num_frames for bucket in fitting)
    aspect = frames.shape[2] / frames.shape[1]
    return min(
        (bucket for bucket in fitting if bucket.num_frames == longest),
        key=lambda bucket: abs(np.log(bucket.width / bucket.height) - np.log(aspect)),
    )


def resize_crop(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """uint8 frames [F, H, W, 3] -> float video [3, F, height, width] in [-1, 1]: scaled to cover, centre-cropped."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1  # [F, 3, H, W]
    scale = max(height / video.shape[2], width / video.shape[3])
    size = (max(height, round(video.shape[2] * scale)), max(width, round(video.shape[3] * scale)))
    if size != tuple(video.shape[2:]):
        video = torch.nn.functional.interpolate(video, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    return video[:, :, top : top + height, left : left + width].permute(1, 0, 2, 3).clamp(-1, 1)


class LatentCache:
    """Per-sample safetensors files of cached model inputs, keyed by the source, its caption, bucket and encoders.

    `fingerprint` names the encoders (and any setting that changes what is cached) so that a cache made with other
    weights is never reused.
    """

    def __init__(self, folder: str | os.PathLike, fingerprint: str):
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.folder.mkdir(parents=True, exist_ok=True)

    def key(self, item: Item, extra: str) -> str:
        stat = item.path.stat()
        text = f"{item.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{item.caption}|{extra}|{self.fingerprint}"
        return hashlib.sha1(text.encode()).hexdigest()[:20]

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def save(self, key: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        from safetensors.torch import save_file

        partial = self.folder / f"{key}.partial"
        save_file({name: value.contiguous() for name, value in tensors.items()}, partial, metadata=metadata)
        os.replace(partial, self.path(key))

    def load(self, key: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(self.path(key))


class CachedDataset(torch.utils.data.Dataset):
    """The cached samples; `buckets[i]` says which bucket sample `i` belongs to (batches never mix buckets)."""

    def __init__(self, cache: LatentCache, keys: list[str], buckets: list[str]):
        self.cache, self.keys, self.buckets = cache, keys, buckets

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.cache.load(self.keys[index])


class BucketBatchSampler(torch.utils.data.Sampler):
    """Shuffled batches of `batch_size` indices that share a bucket, reshuffled every epoch from `seed + epoch`.

    Incomplete batches are dropped, so every batch has the same shape within its bucket.
    """

    def __init__(self, buckets: list[str], batch_size: int, seed: int = 0):
        self.buckets, self.batch_size, self.seed, self.epoch = buckets, batch_size, seed, 0
        groups: dict[str, list[int]] = {}
        for index, bucket in enumerate(buckets):
            groups.setdefault(bucket, []).append(index)
        self.groups = list(groups.values())
        if len(self) == 0:
            raise ValueError(
                f"`--batch-size` {batch_size} is larger than every bucket ({[len(g) for g in self.groups]} samples): "
                "lower it or add data"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(len(group) // self.batch_size for group in self.groups)

    def __iter__(self):
        rng = np.random.default_rng(self.seed + self.epoch)
        batches = []
        for group in self.groups:
            order = rng.permutation(group)
            batches += [
                order[i : i + self.batch_size].tolist()
                for i in range(0, len(order) - self.batch_size + 1, self.batch_size)
            ]
        for index in rng.permutation(len(batches)):
            yield batches[index]


def collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack a batch; prompt features of different lengths are zero-padded to the longest (the model pads to 512)."""
    batch = {}
    for name in samples[0]:
        values = [sample[name] for sample in samples]
        if name == "prompt_embeds":
            length = max(value.shape[0] for value in values)
            values = [torch.nn.functional.pad(value, (0, 0, 0, length - value.shape[0])) for value in values]
        batch[name] = torch.stack(values)
    return batch
