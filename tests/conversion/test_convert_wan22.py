"""Converting Wan 2.2 release folders (T2V-A14B, I2V-A14B, TI2V-5B) into Hub-format repos, and loading them.

The tiny releases are the Wan 2.2 parity fixtures in their release layout (tests/fixtures/wan22_parity). The
converted DiTs are checked against the original's case A (max_rel <= 1e-5, the DiT parity tolerance; the experts'
own parity tests are in tests/models/test_transformer_wan22.py).
"""

import json

import numpy as np
import pytest
import torch

from wan_diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanPipeline
from wan_diffusers.cli import main
from wan_diffusers.conversion import ConversionError, convert_release, detect_release
from wan_diffusers.tasks import TASKS

from factories.parity22 import EXPERTS, build_wan22_release, dit_case, expected_outputs
from testing_utils import max_rel

# model -> (record in the task table, pipeline class the repo names)
RELEASES = {
    "t2v-a14b": ("t2v-A14B", "WanPipeline"),
    "i2v-a14b": ("i2v-A14B", "WanImageToVideoPipeline"),
    "ti2v-5b": ("ti2v-5B", "WanPipeline"),
}


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    converted = {}
    for model in RELEASES:
        root = tmp_path_factory.mktemp(model)
        converted[model] = convert_release(build_wan22_release(root / "release", model), root / "repo")
    return converted


@pytest.mark.parametrize("model", RELEASES)
def test_wan22_releases_become_complete_repos(model, repos):
    repo = repos[model]
    name, pipeline = RELEASES[model]
    variant = next(variant for variant in TASKS if variant.name == name)
    index = json.loads((repo / "model_index.json").read_text())
    assert index["_class_name"] == pipeline
    assert index["boundary_ratio"] == variant.boundary_ratio and index["expand_timesteps"] == variant.expand_timesteps
    two_experts = model != "ti2v-5b"
    assert ("transformer_2" in index) == two_experts and "image_encoder" not in index  # Wan 2.2 has no CLIP
    assert json.loads((repo / "scheduler" / "scheduler_config.json").read_text())["shift"] == variant.shift
    card = (repo / "README.md").read_text()
    assert "wan2.2" in card and f"with shift {variant.shift:g}" in card
    if two_experts:
        assert "`low_noise_model/config.json`" in card and f"guidance_scale_2={variant.guidance_scale_2:g}" in card
    vae = AutoencoderKLWan.load_config(repo / "vae")
    assert vae["z_dim"] == (48 if model == "ti2v-5b" else 16)


@pytest.mark.parity
@pytest.mark.parametrize("model", RELEASES)
def test_converted_repos_load_and_match_the_original(model, repos):
    """Both experts land in `transformer` / `transformer_2` in the original's order (high noise first)."""
    pipeline_class = WanImageToVideoPipeline if model == "i2v-a14b" else WanPipeline
    pipe = pipeline_class.from_pretrained(repos[model])
    folders = {"model": "transformer"} if model == "ti2v-5b" else EXPERTS
    for folder, component in folders.items():
        with torch.no_grad():
            output = getattr(pipe, component)(**dit_case(model, "A")).sample
        assert max_rel(output, expected_outputs(model, "A", folder)) <= 1e-5, f"{model} {component}"
    variant = next(variant for variant in TASKS if variant.name == RELEASES[model][0])
    assert (pipe.config.boundary_ratio, pipe.config.expand_timesteps) == (
        variant.boundary_ratio,
        variant.expand_timesteps,
    )


def test_the_ti2v_repo_loads_as_image_to_video_too(repos):
    pipe = WanImageToVideoPipeline.from_pretrained(repos["ti2v-5b"])
    assert pipe.config.expand_timesteps and pipe.image_encoder is None and pipe.transformer_2 is None


def test_a_broken_wan22_release_is_named(tmp_path):
    release = build_wan22_release(tmp_path / "release", "t2v-a14b")
    config = json.loads((release / "low_noise_model" / "config.json").read_text())
    (release / "low_noise_model" / "config.json").write_text(json.dumps(dict(config, num_layers=3)))
    with pytest.raises(ConversionError, match="two experts .* differ in structure \\(num_layers"):
        detect_release(release)
    for path in (release / "low_noise_model").iterdir():
        path.unlink()
    (release / "low_noise_model").rmdir()
    with pytest.raises(ConversionError, match="has high_noise_model/ but no low_noise_model/"):
        detect_release(release)


def test_cli_converts_and_generates(repos, tmp_path):
    """`wan-diffusers convert` on the TI2V-5B release, then `generate` image-to-video from it; and text-to-video from
    the converted T2V-A14B repo (both experts)."""
    from PIL import Image

    release = build_wan22_release(tmp_path / "release", "ti2v-5b")
    repo = tmp_path / "repo"
    assert main(["convert", "--checkpoint-dir", str(release), "--output-dir", str(repo)]) == 0
    Image.fromarray(np.zeros((40, 70, 3), dtype=np.uint8)).save(tmp_path / "image.png")
    common = ["--prompt", "A cat", "--frames", "5", "--steps", "2", "--device", "cpu"]
    image = ["--image", str(tmp_path / "image.png"), "--max-area", str(32 * 64)]
    for task, model, size in (("i2v", repo, image), ("t2v", repos["t2v-a14b"], ["--height", "32", "--width", "32"])):
        output = tmp_path / f"{task}.mp4"
        assert main(["generate", "--task", task, "--model", str(model), "--output", str(output), *common, *size]) == 0
        assert output.stat().st_size > 0
