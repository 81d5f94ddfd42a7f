"""examples/: every script runs offline on the tiny demo pipelines and writes a playable mp4."""

import importlib.util
from pathlib import Path

import imageio.v3 as iio
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("name", ["t2v", "i2v", "flf2v", "v2v", "low_vram"])
def test_example_runs_offline(name, tmp_path):
    output = tmp_path / f"{name}.mp4"
    load_example(name).main(["--output", str(output)])
    frames = iio.imread(output)
    assert frames.shape[0] == 9 and frames.shape[3] == 3  # the demo settings: 9 frames, RGB
