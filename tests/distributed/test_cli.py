"""`torchrun -m wan_diffusers generate` with the multi-process flags, `--save-latents`, and the layout errors."""

import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from wan_diffusers.cli import main

from testing_utils import max_rel

# 2 latent frames of 4 x 6 patches: 48 tokens
SMALL = ["--prompt", "A cat", "--height", "64", "--width", "96", "--frames", "5", "--steps", "2", "--device", "cpu"]


@pytest.mark.slow
def test_torchrun_writes_one_video_and_the_single_process_latents(tmp_path, capsys):
    assert (
        main(
            [
                "generate",
                *SMALL,
                "--output",
                str(tmp_path / "one.mp4"),
                "--save-latents",
                str(tmp_path / "one.safetensors"),
            ]
        )
        == 0
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "wan_diffusers", "generate", *SMALL, "--output", str(tmp_path / "two.mp4")]
    command += ["--ring", "2", "--fsdp", "--save-latents", str(tmp_path / "two.safetensors")]
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("Wrote ") == 1, result.stderr[-3000:]  # rank 0 only
    assert result.stderr.count("Generated in ") == 1, result.stderr[-3000:]  # messages from rank 0 only
    assert sorted(path.name for path in tmp_path.iterdir() if not path.name.startswith(".")) == [
        "one.mp4",
        "one.safetensors",
        "two.mp4",
        "two.safetensors",
    ]
    single, parallel = (
        load_file(tmp_path / "one.safetensors")["latents"],
        load_file(tmp_path / "two.safetensors")["latents"],
    )
    assert single.shape == (1, 8, 2, 16, 24)  # the tiny shapes model (t2v without --model): 8 channels, 4x VAE
    difference = max_rel(parallel, single)
    print(f"torchrun --ring 2 --fsdp against one process: max_rel {difference:.2e}")
    # float32 rounding of the split attention (one forward: tests/distributed/test_parallelize.py), amplified up to 9x
    # in the guided prediction (1 - g) u + g c with g = 5; 1.3e-5 with the trained tiny shapes model
    assert difference <= 3e-5


def _model_folder(tmp_path, heads: int):
    """A Hub-format folder with only the configs: a check that reads a weight would fail."""
    (tmp_path / "model" / "transformer").mkdir(parents=True)
    (tmp_path / "model" / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    config = {"num_attention_heads": heads, "attention_head_dim": 128, "patch_size": [1, 2, 2]}
    (tmp_path / "model" / "transformer" / "config.json").write_text(json.dumps(config))
    return str(tmp_path / "model")


@pytest.mark.parametrize(
    "world_size, flags, message",
    [
        (4, ["--ulysses", "2"], "--cfg-parallel (1) x --ring (1) x --ulysses (2) = 2 ranks, but the job has 4"),
        (2, ["--ulysses", "2", "--cfg-parallel", "--guidance", "5"], "= 4 ranks, but the job has 2"),
        (1, ["--ring", "2"], "= 2 ranks, but the job has 1"),
        (5, ["--ulysses", "5", "MODEL"], "--ulysses must divide the model's 12 attention heads"),
        (4, ["--ulysses", "2", "--ring", "2", "--frames", "1", "--height", "16", "--width", "16"], "has 1 tokens"),
        (4, ["--ulysses", "4", "--height", "480", "--width", "848", "--frames", "1", "MODEL"], "has 1590 tokens"),
        (2, ["--cfg-parallel", "--guidance", "1"], "--guidance 1.0 turns guidance off"),
        (1, ["--save-latents", "latents.pt"], "--save-latents must be a .safetensors file"),
        (2, ["--ulysses", "2", "--offload", "model"], "--offload model moves weights"),
        (2, ["--fsdp", "--text-encoder-on-cpu"], "drop --text-encoder-on-cpu"),
    ],
)
def test_impossible_layouts_fail_before_loading(world_size, flags, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", str(world_size))
    if "MODEL" in flags:  # a 12-head model, as the released 1.3B
        flags = [*flags[:-1], "--model", _model_folder(tmp_path, 12)]
    output = tmp_path / "out.mp4"
    assert main(["generate", "--prompt", "A cat", "--output", str(output), *flags]) == 1
    assert message in capsys.readouterr().err
    assert not output.exists()
