"""The conversion command line (conversion/command.py and the script conversion/convert_wan_to_diffusers.py)."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from wan_diffusers.conversion import add_convert_arguments, run_convert

from factories.original_release import build_release

SCRIPT = Path(__file__).resolve().parents[2] / "conversion" / "convert_wan_to_diffusers.py"


def parse(*argv):
    return add_convert_arguments(argparse.ArgumentParser()).parse_args(argv)


def test_options_and_defaults():
    args = parse("--checkpoint-dir", "in", "--output-dir", "out")
    assert (args.checkpoint_dir, args.output_dir) == (Path("in"), Path("out"))
    assert (args.dtype, args.max_shard_size, args.push_to_hub, args.overwrite) == (None, "5GB", None, False)
    assert (args.resolution, args.shift, args.clip_num_heads, args.private) == (None, None, None, False)
    args = parse(
        "--checkpoint-dir",
        "in",
        "--output-dir",
        "out",
        "--dtype",
        "bfloat16",
        "--max-shard-size",
        "2GiB",
        "--push-to-hub",
        "me/repo",
        "--overwrite",
        "--resolution",
        "480p",
        "--shift",
        "3",
        "--clip-num-heads",
        "16",
    )
    assert (args.dtype, args.max_shard_size, args.push_to_hub, args.overwrite) == ("bfloat16", "2GiB", "me/repo", True)
    assert (args.resolution, args.shift, args.clip_num_heads) == ("480p", 3.0, 16)
    with pytest.raises(SystemExit):
        parse("--checkpoint-dir", "in", "--output-dir", "out", "--dtype", "float64")


def test_run_convert_writes_the_repo_and_reports_it(tmp_path, capsys):
    release = build_release(tmp_path / "release", "t2v-1.3b")
    assert run_convert(parse("--checkpoint-dir", str(release), "--output-dir", str(tmp_path / "repo"))) == 0
    assert (tmp_path / "repo" / "model_index.json").exists()
    err = capsys.readouterr().err
    assert "Converting Wan2.1-T2V (custom size) (T2V)" in err and f"Wrote {tmp_path / 'repo'}" in err


def test_bad_input_exits_with_status_1_and_a_message(tmp_path, capsys):
    release = build_release(tmp_path / "release", "i2v-14b-720p")  # its tiny CLIP needs --clip-num-heads
    assert run_convert(parse("--checkpoint-dir", str(release), "--output-dir", str(tmp_path / "repo"))) == 1
    err = capsys.readouterr().err
    assert "error: `--clip-num-heads` must be given" in err and "Traceback" not in err
    assert not (tmp_path / "repo").exists()


@pytest.mark.slow
def test_the_script_converts_a_release(tmp_path):
    release = build_release(tmp_path / "release", "flf2v-14b-720p")
    command = [
        sys.executable,
        str(SCRIPT),
        "--checkpoint-dir",
        str(release),
        "--output-dir",
        str(tmp_path / "repo"),
        "--clip-num-heads",
        "2",
        "--dtype",
        "bfloat16",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "repo" / "image_encoder" / "model.safetensors").exists()
