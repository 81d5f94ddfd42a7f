"""`wan-diffusers generate` with bad input: one line naming the flag, exit status 1, before any model work."""

import os
import signal
import warnings
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from reliability.helpers import one_line_error, run_command, signal_inside, start_stalled, wait_until_stalled
from wan_diffusers import cli
from wan_diffusers.utils.video_io import export_to_mp4

EXPORT_STEP = "imageio.v2:get_writer"  # the encoder is running and the temporary file open


@pytest.fixture
def no_model_work(monkeypatch):
    """Fail the test if a pipeline is built or loaded: every refusal must come before."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(cli, "_load_pipeline", forbidden)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    image = folder / "image.png"
    PIL.Image.fromarray(np.zeros((32, 48, 3), dtype=np.uint8)).save(image)
    (folder / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    (folder / "not-an-image.png").write_text("hello")
    (folder / "a-file").write_text("")
    return {
        "image": image,
        "video": export_to_mp4(np.zeros((5, 32, 48, 3)), folder / "video.mp4"),
        "corrupt": folder / "corrupt.mp4",
        "not-an-image": folder / "not-an-image.png",
        "a-file": folder / "a-file",
        "folder": folder,
    }


CASES = {
    # numbers: 0 is an error, never "unset"
    "steps 0": (["--steps", "0"], "--steps must be a positive integer, got 0"),
    "frames 0": (["--frames", "0"], "--frames must be of the form 4n + 1 (1, 5, ..., 81), got 0"),
    "frames 80": (["--frames", "80"], "got 80; try 77 or 81"),
    "height 0": (["--height", "0"], "--height must be a positive multiple of 16"),
    "width 0": (["--width", "0"], "--width must be a positive multiple of 16"),
    "width 100": (["--width", "100"], "got 100; try 96 or 112"),
    "max-area 0": (["--task", "i2v", "--image", "{image}", "--max-area", "0"], "--max-area must be a positive"),
    "fps -5": (["--fps", "-5"], "--fps must be a positive integer, got -5"),
    "guidance inf": (["--guidance", "inf"], "--guidance must be a finite number, got inf"),
    "guidance nan": (["--guidance", "nan"], "--guidance must be a finite number, got nan"),
    "shift 0": (["--shift", "0"], "--shift must be a positive number, got 0.0"),
    "strength 1.5": (["--task", "v2v", "--video", "{video}", "--strength", "1.5"], "--strength must be in (0, 1]"),
    "seed -1": (["--seed", "-1"], "--seed must be an integer from 0 to 2**64 - 1, got -1"),
    # files exist and decode
    "image missing": (["--task", "i2v", "--image", "{folder}/nope.png"], "--image: no such file"),
    "image not an image": (["--task", "i2v", "--image", "{not-an-image}"], "is not an image that can be read"),
    "video corrupt": (["--task", "v2v", "--video", "{corrupt}"], "is not a video ffmpeg can read (Error opening"),
    "video is a png": (["--task", "v2v", "--video", "{image}"], "is an image, not a video"),
    "mask corrupt": (["--task", "vace", "--video", "{video}", "--mask", "{corrupt}"], "--mask"),
    "reference folder": (["--task", "vace", "--reference-image", "{folder}"], "is a folder, not a file"),
    # --output can be written
    "output folder": (["--output", "{folder}/x.mp4/"], "is a folder; give a file name"),
    "output under a file": (["--output", "{a-file}/x.mp4"], "is a file, not a folder"),
    "output not mp4": (["--output", "{folder}/x.avi"], "--output must be an .mp4 file"),
    # the device exists
    "device gpu0": (["--device", "gpu0"], "--device must be a torch device such as cpu, cuda"),
    "device cuda:7": (["--device", "cuda:7"], "--device cuda:7: "),
    # the model
    "model missing": (["--model", "./no/such/folder"], "--model ./no/such/folder: no such folder"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_before_any_model_work(case, media, no_model_work, capsys):
    args, message = CASES[case]
    args = [arg.format(**{key: str(value) for key, value in media.items()}) for arg in args]
    output = media["folder"] / "out.mp4"
    if case == "output folder":
        (media["folder"] / "x.mp4").mkdir(exist_ok=True)
    argv = ["generate", "--prompt", "a cat", "--output", str(output), *args]
    assert cli.main(argv) == 1
    assert message in one_line_error(capsys.readouterr().err)
    assert not output.exists()


def read_only_folder(tmp_path) -> Path:
    """A folder this process cannot write into: by its mode, or (as root, whom modes do not stop) sysfs."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    return folder


def test_an_unwritable_output_folder_is_refused_first(tmp_path, no_model_work, capsys):
    output = read_only_folder(tmp_path) / "x.mp4"
    assert cli.main(["generate", "--prompt", "a cat", "--output", str(output)]) == 1
    assert "is not writable; choose another place" in one_line_error(capsys.readouterr().err)


SMALL = ["--height", "32", "--width", "48", "--frames", "5", "--steps", "1"]


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_existing_video_survives_a_signal_while_exporting(signum, code, tmp_path, monkeypatch, capsys):
    output = tmp_path / "cat.mp4"
    output.write_bytes(b"yesterday's video")
    with signal_inside(monkeypatch, EXPORT_STEP, signum):
        assert cli.main(["generate", "--prompt", "a cat", "--output", str(output), *SMALL]) == code
    assert output.read_bytes() == b"yesterday's video"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cat.mp4"]  # no temporary file left
    assert "error: interrupted" in capsys.readouterr().err


def test_the_real_command_exits_1_without_a_traceback_unless_debug(tmp_path):
    output = tmp_path / "cat.mp4"
    result = run_command("generate", "--prompt", "a cat", "--steps", "0", "--output", output)
    assert result.returncode == 1
    assert one_line_error(result.stderr) == "error: --steps must be a positive integer, got 0"
    with pytest.raises(ValueError, match="--steps must be a positive integer"):  # --debug: the traceback
        cli.main(["generate", "--prompt", "a cat", "--steps", "0", "--output", str(output), "--debug"])
    assert not output.exists()


def test_a_killed_export_leaves_no_partial_video_after_the_next_run(tmp_path, capsys):
    output, ready = tmp_path / "cat.mp4", tmp_path / "ready"
    output.write_bytes(b"yesterday's video")
    # stalled after the encoder took its first frames: the temporary file exists and is incomplete
    append = "imageio.plugins.ffmpeg:FfmpegFormat.Writer._append_data"
    process = start_stalled(append, ready, "generate", "--prompt", "a cat", "--output", output, *SMALL)
    wait_until_stalled(process, ready)
    process.kill()  # SIGKILL: no cleanup runs
    process.communicate()
    assert output.read_bytes() == b"yesterday's video"
    partial = [path for path in tmp_path.iterdir() if path.name.startswith(f".cat.mp4.partial-{process.pid}-")]
    assert len(partial) == 1  # what the encoder had written
    assert cli.main(["generate", "--prompt", "a cat", "--output", str(output), *SMALL]) == 0
    assert f"Removed {partial[0]}, left by an interrupted run" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cat.mp4", "ready"]


def test_help_keeps_the_examples_and_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    help_text = capsys.readouterr().out
    assert '\n    wan-diffusers generate --output shapes.mp4 [--prompt "a blue triangle moves up"]\n' in help_text
    assert "(default: output.mp4 here)" in " ".join(help_text.split())
    with pytest.raises(SystemExit):
        cli.main(["convert", "--help"])
    help_text = capsys.readouterr().out
    assert "Convert an original Wan 2.1 or Wan 2.2 release folder" in help_text
    assert "\n    wan-diffusers convert --checkpoint-dir Wan2.1-T2V-1.3B --output-dir" in help_text
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("wan-diffusers ")


def test_a_model_run_shows_the_decoding_and_warns_nothing_of_ours(repo, tmp_path, capsys):
    output = tmp_path / "cat.mp4"
    argv = ["generate", "--prompt", "a cat", "--model", str(repo), "--output", str(output), "--device", "cpu", *SMALL]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli.main(argv) == 0
    assert not [str(w.message) for w in caught if "torch_dtype" in str(w.message)]
    err = capsys.readouterr().err
    assert "Decoding: 100%" in err and "2/2" in err  # 5 frames: 2 latent frames
    assert output.is_file()


def test_ctrl_c_while_decoding_stops_and_keeps_the_existing_video(repo, tmp_path, monkeypatch, capsys):
    output = tmp_path / "cat.mp4"
    output.write_bytes(b"yesterday's video")
    with signal_inside(monkeypatch, "wan_diffusers.models.autoencoder_kl_wan:CausalConvCache", signal.SIGINT):
        assert cli.main(["generate", "--prompt", "a cat", "--output", str(output), *SMALL]) == 130
    assert output.read_bytes() == b"yesterday's video"
    assert "error: interrupted (Ctrl-C)" in capsys.readouterr().err


def test_bench_shows_a_sign_of_life(repo, capsys):
    args = ["bench", "--model", str(repo), "--height", "32", "--width", "48", "--num-frames", "5"]
    assert cli.main([*args, "--steps", "2", "--warmup", "1", "--peak-tflops", "1"]) == 0
    err = capsys.readouterr().err
    assert f"Loading the transformer of {repo}" in err and "bench: 1 warm-up + 2 timed steps: 100%" in err
