"""Two CPU processes under `accelerate launch` (DDP over gloo) train the tiny model through the command line, and a
launch that accelerate does not join is stopped before it trains."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import wan_diffusers

LOCAL_TWO_PROCESSES = (
    "compute_environment: LOCAL_MACHINE\nnum_processes: 2\nnum_machines: 1\nmachine_rank: 0\nmixed_precision: 'no'\n"
    "rdzv_backend: static\nsame_network: true\nmain_process_ip: 127.0.0.1\n"
)


def _launch(config_text: str, model, data, output, tmp_path, env: dict) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file CONFIG -m wan_diffusers.cli train ...`: 2 steps of full training."""
    config = tmp_path / "accelerate.yaml"
    config.write_text(LOCAL_TWO_PROCESSES + config_text)
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
        "-m", "wan_diffusers.cli", "train", "--model", str(model), "--data", str(data), "--output", str(output),
        "--full", "--steps", "2", "--batch-size", "1", "--buckets", "32x32x5", "--checkpoint-every", "1",
    ]  # fmt: skip
    source = str(Path(wan_diffusers.__file__).parents[1])  # this checkout's package, in the child processes too
    env = {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([source, env.get("PYTHONPATH", "")])}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_two_process_gloo_training(tiny_model_dir, shapes_data_dir, tmp_path):
    output = tmp_path / "ddp"
    # accelerate's launcher starts local processes with torchrun only on its "multi-GPU" path (its MULTI_CPU path needs
    # mpirun); `use_cpu` then makes each process a CPU rank, and the Accelerator joins them over gloo (MULTI_CPU). The
    # launcher does not hand `use_cpu` on to the ranks it starts, hence ACCELERATE_USE_CPU: without it each rank would
    # run alone (DistributedType.NO) instead of joining the gloo group
    config = "distributed_type: MULTI_GPU\nuse_cpu: true\nmain_process_port: 29517\n"
    env = {"ACCELERATE_USE_CPU": "true", **os.environ}
    result = _launch(config, tiny_model_dir, shapes_data_dir, output, tmp_path, env)
    assert result.returncode == 0, result.stderr[-3000:]
    environment = json.loads((output / "environment.json").read_text())
    assert environment["num_processes"] == 2 and "MULTI_CPU" in environment["distributed_type"], environment
    assert [row["step"] for row in csv.DictReader(open(output / "loss.csv"))] == ["1", "2"]
    assert (output / "transformer" / "config.json").exists()


def test_a_launch_that_accelerate_does_not_join_is_refused(tiny_model_dir, shapes_data_dir, tmp_path):
    """An FSDP config on a machine without GPUs: accelerate gives each of the two processes a run of its own
    (DistributedType.NO), which would overwrite each other's checkpoints. The trainer stops both, naming the fix."""
    config = "distributed_type: FSDP\nmain_process_port: 29518\nfsdp_config:\n  fsdp_version: 2\n"
    env = {key: value for key, value in os.environ.items() if key != "ACCELERATE_USE_CPU"}
    env["CUDA_VISIBLE_DEVICES"] = ""  # the same on a machine with GPUs
    result = _launch(config, tiny_model_dir, shapes_data_dir, tmp_path / "out", tmp_path, env)
    assert result.returncode != 0
    assert "launched as 2 processes, but accelerate set up 1" in result.stderr and "use_cpu: true" in result.stderr
    assert not (tmp_path / "out" / "checkpoints").exists()
