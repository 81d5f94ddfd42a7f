"""Shared fixtures of the training tests: a tiny shapes pipeline saved to disk, and a small shapes dataset with three
bad entries (no caption, an unreadable file, too few frames)."""

import csv

import numpy as np
import pytest
from diffusers import FlowMatchEulerDiscreteScheduler

from wan_diffusers import WanPipeline
from wan_diffusers.training import shapes, tiny
from wan_diffusers.utils.video_io import export_to_mp4


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    tokenizer = tiny.shapes_tokenizer()
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=tiny.shapes_text_encoder(len(tokenizer)),
        vae=tiny.shapes_vae(),
        transformer=tiny.shapes_transformer(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=tiny.SHIFT),
    )
    folder = tmp_path_factory.mktemp("tiny_model") / "model"
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def shapes_data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes_data") / "data"
    shapes.write_shapes_dataset(folder, shapes.training_combinations()[:4], 1, height=32, width=32, num_frames=5)
    rows = list(csv.reader(open(folder / "metadata.csv")))
    (folder / "broken.mp4").write_bytes(b"not a video")
    export_to_mp4(np.zeros((3, 32, 32, 3), dtype=np.uint8), folder / "short.mp4")
    rows += [["broken.mp4", "a red circle moves left"], ["short.mp4", "a red circle moves up"], [rows[1][0], ""]]
    with open(folder / "metadata.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return folder
