"""Two CPU processes under `accelerate launch` (DDP over gloo) train the tiny model through the command line."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import wan_diffusers


def test_two_process_gloo_training(tiny_model_dir, shapes_data_dir, tmp_path):
    output = tmp_path / "ddp"
    # accelerate's launcher starts local processes with torchrun only on its "multi-GPU" path (its MULTI_CPU path needs
    # mpirun); `use_cpu` then makes each process a CPU rank, and the Accelerator joins them over gloo (MULTI_CPU)
    config = tmp_path / "two_cpu_processes.yaml"
    config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_processes: 2\nnum_machines: 1\n"
        "machine_rank: 0\nmixed_precision: 'no'\nuse_cpu: true\nrdzv_backend: static\nsame_network: true\n"
        "main_process_ip: 127.0.0.1\nmain_process_port: 29517\n"
    )
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
        "-m", "wan_diffusers.cli", "train", "--model", str(tiny_model_dir), "--data", str(shapes_data_dir),
        "--output", str(output), "--full", "--steps", "2", "--batch-size", "1", "--buckets", "32x32x5",
        "--checkpoint-every", "0",
    ]  # fmt: skip
    source = str(Path(wan_diffusers.__file__).parents[1])  # this checkout's package, in the child processes too
    # the launcher does not hand `use_cpu` on to the ranks it starts with torchrun; without this each rank would run
    # alone (DistributedType.NO) instead of joining the gloo group
    env = {
        "ACCELERATE_USE_CPU": "true",
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    environment = json.loads((output / "environment.json").read_text())
    assert environment["num_processes"] == 2 and "MULTI_CPU" in environment["distributed_type"], environment
    assert [row["step"] for row in csv.DictReader(open(output / "loss.csv"))] == ["1", "2"]
    assert (output / "transformer" / "config.json").exists()


def test_a_launch_that_accelerate_does_not_join_is_refused(tiny_model_dir, shapes_data_dir, tmp_path):
    """An FSDP config on a machine without GPUs: accelerate gives each of the two processes a run of its own
    (DistributedType.NO), which would overwrite each other's checkpoints. The trainer stops both with the fix."""
    config = tmp_path / "fsdp.yaml"
    config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nnum_processes: 2\nnum_machines: 1\n"
        "machine_rank: 0\nmixed_precision: 'no'\nrdzv_backend: static\nsame_network: true\n"
        "main_process_ip: 127.0.0.1\nmain_process_port: 29518\nfsdp_config:\n  fsdp_version: 2\n"
    )
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
        "-m", "wan_diffusers.cli", "train", "--model", str(tiny_model_dir), "--data", str(shapes_data_dir),
        "--output", str(tmp_path / "out"), "--full", "--steps", "2", "--batch-size", "1", "--buckets", "32x32x5",
    ]  # fmt: skip
    source = str(Path(wan_diffusers.__file__).parents[1])
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("ACCELERATE_USE_CPU", None)
    env["CUDA_VISIBLE_DEVICES"] = ""  # the same on a machine with GPUs
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "launched as 2 processes, but accelerate set up 1" in result.stderr and "use_cpu: true" in result.stderr
    assert not (tmp_path / "out" / "checkpoints").exists()
