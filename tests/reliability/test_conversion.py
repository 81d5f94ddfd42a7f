"""`wan-diffusers convert` under interruptions, concurrency, full disks and bad configs: nothing lost, one-line errors."""

import json
import os
import resource
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from reliability.helpers import one_line_error, resolve, resume, signal_inside, start_stalled, wait_until_stalled
from wan_diffusers.cli import main
from wan_diffusers.utils.atomic import MARKER

from factories.original_release import build_release

WRITE_STEP = "wan_diffusers.conversion.checkpoint_io:_write_safetensors"


def convert_args(release, output, *extra):
    return ["convert", "--checkpoint-dir", release, "--output-dir", output, *extra]


def siblings(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.parent.iterdir())


def test_concurrent_conversions_to_one_folder_leave_one_complete_repo(release, tmp_path, capsys):
    output, ready = tmp_path / "repo", tmp_path / "ready"
    first = start_stalled(WRITE_STEP, ready, *convert_args(release, output))  # a real second process
    wait_until_stalled(first, ready)
    assert main(convert_args(str(release), str(output))) == 1  # while the first one writes
    assert f"being written by another conversion (process {first.pid})" in one_line_error(capsys.readouterr().err)
    code, stderr = resume(first, ready)
    assert code == 0, stderr
    assert (output / "model_index.json").is_file() and not (output / MARKER).exists()
    assert siblings(output) == ["ready", "ready.go", "repo"]  # no staging folder left
    assert main(convert_args(str(release), str(output))) == 1  # and now it exists
    assert "already exists" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_conversion_cleans_up(signum, code, release, tmp_path, monkeypatch, capsys):
    output = tmp_path / "repo"
    with signal_inside(monkeypatch, WRITE_STEP, signum):
        assert main(convert_args(str(release), str(output))) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"nothing was written to {output}" in err
    assert siblings(output) == []


def test_an_existing_repo_survives_an_interrupted_overwrite(release, tmp_path, monkeypatch):
    output = tmp_path / "repo"
    output.mkdir()
    (output / "model_index.json").write_text('{"_class_name": "WanPipeline"}')
    with signal_inside(monkeypatch, WRITE_STEP, signal.SIGTERM):
        assert main(convert_args(str(release), str(output), "--overwrite")) == 143
    assert (output / "model_index.json").read_text() == '{"_class_name": "WanPipeline"}'
    assert siblings(output) == ["repo"]


def test_leftovers_of_a_killed_conversion_are_removed_by_the_next_run(release, tmp_path, capsys):
    output, ready = tmp_path / "repo", tmp_path / "ready"
    process = start_stalled(WRITE_STEP, ready, *convert_args(release, output))
    wait_until_stalled(process, ready)
    process.kill()
    process.communicate()
    staging = [name for name in siblings(output) if name.startswith(".repo.partial-")]
    assert len(staging) == 1 and (output / MARKER).is_file()  # SIGKILL cleans nothing: the claim and the staging
    assert main(convert_args(str(release), str(output))) == 0
    assert siblings(output) == ["ready", "repo"] and (output / "model_index.json").is_file()
    err = capsys.readouterr().err
    assert f"Removed the leftovers of an interrupted conversion: {output.parent / staging[0]} (" in err
    assert f"left by process {process.pid}" in err


def test_the_previous_repo_of_a_killed_overwrite_is_reported_not_deleted(release, tmp_path, capsys):
    output = tmp_path / "repo"
    retired = tmp_path / ".repo.replaced-0123456789ab"  # killed between moving the old repo away and the new in
    retired.mkdir()
    (retired / "model_index.json").write_text("{}")
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (retired / MARKER).write_text(json.dumps({"pid": int(finished.stdout), "host": os.uname().nodename}))
    assert main(convert_args(str(release), str(output))) == 0
    assert f"Found the previous repo of an interrupted --overwrite: {retired}" in capsys.readouterr().err
    assert (retired / "model_index.json").is_file()
    # once a complete repo is in place, the old one is what the killed run was about to delete
    assert main(convert_args(str(release), str(output), "--overwrite")) == 0
    assert siblings(output) == ["repo"]


def test_overwrite_replaces_only_a_pipeline_repo_and_says_what_it_replaced(release, repo, tmp_path, capsys):
    output = tmp_path / "photos"
    output.mkdir()
    (output / "holiday.jpg").write_bytes(b"precious")
    assert main(convert_args(str(release), str(output), "--overwrite")) == 1
    assert "is not a pipeline repo" in one_line_error(capsys.readouterr().err)
    assert (output / "holiday.jpg").read_bytes() == b"precious"

    target = tmp_path / "repo"
    target.mkdir()
    (target / "model_index.json").write_text('{"_class_name": "WanImageToVideoPipeline"}')
    assert main(convert_args(str(release), str(target), "--overwrite")) == 0
    assert "Replaced the previous WanImageToVideoPipeline repo at" in capsys.readouterr().err
    assert json.loads((target / "model_index.json").read_text())["_class_name"] == "WanPipeline"


@contextmanager
def file_size_limit(size: int):
    """Files cannot grow past `size` bytes (what a full disk does to a writer, in this process only)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, not a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_a_full_disk_gives_one_line_and_leaves_nothing(release, tmp_path, capsys):
    output = tmp_path / "repo"
    with file_size_limit(20_000):
        assert main(convert_args(str(release), str(output))) == 1
    line = one_line_error(capsys.readouterr().err)
    assert f"cannot write {output}" in line and "larger than this system allows" in line
    assert siblings(output) == []


def test_a_read_only_parent_gives_one_line(release, tmp_path, capsys):
    if os.geteuid() == 0:  # root writes anywhere a mode allows nothing; sysfs refuses new folders to everyone
        parent = Path("/sys/wan-diffusers-read-only")
    else:
        parent = tmp_path / "read-only"
        parent.mkdir(mode=0o555)
    assert main(convert_args(str(release), str(parent / "repo"))) == 1
    line = one_line_error(capsys.readouterr().err)
    assert f"cannot write {parent / 'repo'}" in line


@pytest.mark.parametrize(
    "field, value, rule",
    [
        ("dim", "256", '`dim` must be a positive integer, got "256"'),
        ("eps", None, "`eps` must be a positive number, got null"),
        ("num_layers", 2.5, "`num_layers` must be a positive integer, got 2.5"),
        ("num_heads", -2, "`num_heads` must be a positive integer, got -2"),
    ],
)
def test_malformed_config_values_name_the_file_and_field(field, value, rule, tmp_path, capsys):
    release = build_release(tmp_path / "release", "t2v-1.3b")
    config = json.loads((release / "config.json").read_text())
    config[field] = value
    (release / "config.json").write_text(json.dumps(config))
    assert main(convert_args(str(release), str(tmp_path / "repo"))) == 1
    assert f"error: {release / 'config.json'}: {rule}" in one_line_error(capsys.readouterr().err)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["release"]


def test_an_integer_weight_is_one_line_naming_the_tensor(tmp_path, capsys):
    import torch
    from safetensors.torch import load_file, save_file

    release = build_release(tmp_path / "release", "t2v-1.3b")
    weights = release / "diffusion_pytorch_model.safetensors"
    state_dict = load_file(weights)
    state_dict["patch_embedding.bias"] = state_dict["patch_embedding.bias"].to(torch.int32)
    save_file(state_dict, weights)
    assert main(convert_args(str(release), str(tmp_path / "repo"))) == 1
    line = one_line_error(capsys.readouterr().err)
    assert "The DiT checkpoint holds `patch_embedding.bias` as int32; Wan weights are floating-point" in line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["release"]


def test_files_that_appear_in_the_output_while_converting_are_kept(release, tmp_path, monkeypatch, capsys):
    output = tmp_path / "repo"
    module, name = resolve(WRITE_STEP)
    original = getattr(module, name)

    def write_and_meddle(*args, **kwargs):
        (output / "notes.txt").write_text("mine")  # someone saves a file into the (claimed) folder meanwhile
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, write_and_meddle)
    assert main(convert_args(str(release), str(output))) == 1
    assert "files appeared in it while converting" in one_line_error(capsys.readouterr().err)
    assert sorted(path.name for path in output.iterdir()) == ["notes.txt"] and siblings(output) == ["repo"]
