"""The `wan-diffusers` command: the offline demo writes playable mp4 files for every task; bad arguments exit 1."""

import json
import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import PIL.Image
import pytest

from wan_diffusers.cli import build_parser, main
from wan_diffusers.utils.video_io import export_to_mp4, load_video

SMALL = ["--height", "32", "--width", "48", "--frames", "5", "--steps", "2"]


def read_mp4(path) -> np.ndarray:
    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        assert reader.get_meta_data()["codec"] == "h264"
        return np.stack([frame for frame in reader])  # not list(reader): its length hint is infinite
    finally:
        reader.close()


def write_image(path, seed: int, size=(64, 128)):
    PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def test_demo_writes_a_playable_mp4(tmp_path, capsys):
    """Without --model (and without --prompt), t2v runs the tiny shapes model shipped in the package and says so."""
    output = tmp_path / "shapes.mp4"
    assert main(["generate", "--output", str(output), *SMALL]) == 0
    frames = read_mp4(output)
    assert frames.shape == (5, 32, 48, 3) and frames.dtype == np.uint8
    assert frames.std() > 1  # not a blank video
    err = capsys.readouterr().err
    assert "2/2" in err  # the progress bar
    assert f"Wrote {output}" in err and "tiny shapes model" in err and "prompt: 'a red circle moves right'" in err


def test_tiny_model_warns_about_a_prompt_outside_its_grammar(tmp_path, capsys):
    output = tmp_path / "cat.mp4"
    assert main(["generate", "--prompt", "a cat walks on the grass", "--output", str(output), *SMALL]) == 0
    err = capsys.readouterr().err
    assert "--prompt 'a cat walks on the grass' is not a prompt the tiny shapes model knows" in err
    assert "red, green, blue, yellow, white; circle, square, triangle; left, right, up, down" in err


@pytest.mark.parametrize("task", ["i2v", "flf2v", "v2v"])
def test_demo_of_the_other_tasks(task, tmp_path):
    inputs = []
    if task in ("i2v", "flf2v"):
        inputs += ["--image", str(write_image(tmp_path / "first.png", 0))]
    if task == "flf2v":
        inputs += ["--last-image", str(write_image(tmp_path / "last.png", 1))]
    if task == "v2v":
        clip = np.random.default_rng(0).random((7, 32, 48, 3))  # 7 frames: the first 5 (4n + 1) are used
        inputs += ["--video", str(export_to_mp4(clip, tmp_path / "in.mp4")), "--strength", "0.5", "--steps", "4"]
    output = tmp_path / "out.mp4"
    args = ["generate", "--task", task, "--prompt", "A dog", "--output", str(output), *inputs]
    if task == "v2v":
        args += ["--height", "32", "--width", "48"]
    else:
        args += ["--max-area", str(32 * 64), "--frames", "5", "--steps", "2"]
    assert main(args) == 0
    frames = read_mp4(output)
    assert frames.shape[0] == 5 and frames.shape[3] == 3
    if task != "v2v":  # the size follows the 64 x 128 image within 32 * 64 pixels
        assert frames.shape[1:3] == (32, 64)


@pytest.mark.parametrize("inputs", ["none", "video", "video+mask", "references"])
def test_demo_of_vace(inputs, tmp_path):
    """VACE from the command line: plain generation, a control video, masked editing, reference images."""
    args = ["generate", "--task", "vace", "--prompt", "A dog", "--output", str(tmp_path / "out.mp4"), *SMALL]
    clip = np.random.default_rng(0).random((5, 32, 48, 3))
    if "video" in inputs:
        args += ["--video", str(export_to_mp4(clip, tmp_path / "source.mp4"))]
    if "mask" in inputs:
        mask = np.zeros_like(clip)
        mask[:, 8:24, 12:36] = 1  # regenerate the centre, keep the rest
        args += ["--mask", str(export_to_mp4(mask, tmp_path / "mask.mp4"))]
    if inputs == "references":
        args += ["--reference-image", str(write_image(tmp_path / "a.png", 0))]
        args += ["--reference-image", str(write_image(tmp_path / "b.png", 1)), "--conditioning-scale", "0.6"]
    assert main(args) == 0
    assert read_mp4(tmp_path / "out.mp4").shape == (5, 32, 48, 3)


def test_default_shift_is_the_originals_per_task_and_size():
    from wan_diffusers.cli import _default_shift
    from wan_diffusers.tasks import variant_for_model

    def shift(*args):
        args = build_parser().parse_args(["generate", "--prompt", "x", *args])
        return _default_shift(args, variant_for_model(args.task, args.model))

    i2v_480p, i2v_720p = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "/models/Wan2.1-I2V-14B-720P-Diffusers/"
    assert shift("--task", "i2v", "--image", "a.png") == 3.0  # the demo's size: 480P class
    assert shift("--task", "i2v", "--image", "a.png", "--model", i2v_480p) == 3.0  # 480 * 832 pixels
    assert shift("--task", "i2v", "--image", "a.png", "--model", i2v_720p) == 5.0  # 720 * 1280 pixels
    assert shift("--task", "i2v", "--image", "a.png", "--max-area", str(720 * 1280)) == 5.0
    assert shift("--task", "i2v", "--image", "a.png", "--height", "720", "--width", "1280") == 5.0
    assert shift("--task", "i2v", "--image", "a.png", "--model", i2v_720p, "--max-area", str(480 * 832)) == 3.0
    assert shift("--task", "t2v") == 5.0


def test_generate_options(tmp_path):
    """The original DPM++ sampler, model offloading onto the CPU, the text encoder kept on the CPU, VAE tiling."""
    output = tmp_path / "out.mp4"
    options = ["--sampler", "dpm++", "--shift", "3", "--offload", "model", "--device", "cpu"]
    options += ["--text-encoder-on-cpu", "--vae-tiling", "--seed", "3", "--fps", "8"]
    assert main(["generate", "--prompt", "A cat", "--output", str(output), *SMALL, *options]) == 0
    reader = imageio.get_reader(output, format="FFMPEG")
    assert reader.get_meta_data()["fps"] == 8
    reader.close()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "i2v"], "--task i2v needs --image PATH"),
        (["--task", "flf2v", "--image", "{first}"], "--task flf2v needs --last-image PATH"),
        (["--task", "v2v"], "--task v2v needs --video PATH"),
        (["--task", "vace", "--mask", "{first}"], "--mask needs --video"),
        (["--reference-image", "{first}"], "--reference-image is not used by --task t2v"),
        (["--image", "{first}"], "--image is not used by --task t2v"),
        (["--task", "i2v", "--image", "missing.png"], "--image: no such file: missing.png"),
        (["--output", "video.gif"], "--output must be an .mp4 file"),
        (["--height", "40"], "--height must be a positive multiple of 16"),
        (["--frames", "8"], r"--frames must be of the form 4n \+ 1"),
    ],
)
def test_bad_arguments_exit_with_a_message(args, message, tmp_path, capsys):
    first = write_image(tmp_path / "first.png", 0)
    args = [arg.format(first=first) for arg in args]
    base = ["generate", "--prompt", "A cat", "--steps", "1"]
    if "--output" not in args:
        base += ["--output", str(tmp_path / "out.mp4")]
    assert main(base + args) == 1
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out.mp4").exists()


def test_convert_is_wired_to_the_conversion(tmp_path, capsys):
    parser = build_parser()
    args = parser.parse_args(["convert", "--checkpoint-dir", str(tmp_path / "nope"), "--output-dir", str(tmp_path)])
    assert args.command == "convert" and args.max_shard_size == "5GB"
    assert main(["convert", "--checkpoint-dir", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "out")]) == 1
    assert "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "--help"])
    assert exit_info.value.code == 0 and "--checkpoint-dir" in capsys.readouterr().out


def test_video_io_round_trip(tmp_path):
    frames = np.random.default_rng(0).random((5, 16, 32, 3)).astype(np.float32)
    path = export_to_mp4(frames, tmp_path / "clip.mp4")
    loaded = load_video(path)
    assert len(loaded) == 5 and loaded[0].size == (32, 16)
    assert len(load_video(path, max_frames=3)) == 3
    with pytest.raises(ValueError, match="even height and width"):
        export_to_mp4(np.zeros((2, 15, 16, 3)), tmp_path / "odd.mp4")
    with pytest.raises(ValueError, match=r"one video \[F, H, W, 3\]"):
        export_to_mp4(np.zeros((1, 2, 16, 16, 3)), tmp_path / "batch.mp4")


@pytest.mark.slow
def test_console_entry_point(tmp_path):
    """The installed way of running it: a fresh interpreter, as `wan-diffusers generate ...` does."""
    output = tmp_path / "demo.mp4"
    command = [sys.executable, "-m", "wan_diffusers.cli", "generate", "--prompt", "A cat", "--output", str(output)]
    result = subprocess.run(command + SMALL, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert read_mp4(output).shape == (5, 32, 48, 3)


def test_a_local_model_folder(tmp_path):
    """`--model` with a folder in the Hub format: here the demo pipeline saved with `save_pretrained`."""
    from wan_diffusers.pipelines.demo import build_demo_pipeline

    build_demo_pipeline("t2v").save_pretrained(tmp_path / "tiny-t2v")
    output = tmp_path / "out.mp4"
    args = ["generate", "--model", str(tmp_path / "tiny-t2v"), "--prompt", "A cat", "--output", str(output)]
    assert main(args + SMALL) == 0
    assert read_mp4(output).shape == (5, 32, 48, 3)


def test_an_original_release_folder_is_pointed_to_convert(tmp_path, capsys):
    release = tmp_path / "Wan2.1-T2V-1.3B"
    release.mkdir()
    (release / "config.json").write_text("{}")
    (release / "Wan2.1_VAE.pth").write_bytes(b"")
    args = ["generate", "--model", str(release), "--prompt", "A cat", "--output", str(tmp_path / "out.mp4")]
    assert main(args) == 1
    assert "convert it first with `wan-diffusers convert --checkpoint-dir" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# wan-diffusers bench

BENCH_SMALL = ["--height", "32", "--width", "48", "--num-frames", "5", "--steps", "2", "--warmup", "1"]


def save_tiny_transformer(folder, task="t2v", **config):
    from wan_diffusers import WanTransformer3DModel, WanVACETransformer3DModel

    from factories.transformer import tiny_transformer_config

    cls = WanVACETransformer3DModel if "vace_layers" in config else WanTransformer3DModel
    cls(**tiny_transformer_config(task, **config)).save_pretrained(folder)
    return folder


def test_bench_reports_seconds_per_step_and_the_floor(tmp_path, capsys):
    save_tiny_transformer(tmp_path / "pipe" / "transformer")
    (tmp_path / "pipe" / "model_index.json").write_text("{}")  # a pipeline folder: its transformer/ is used
    results = tmp_path / "results.jsonl"
    args = ["bench", "--model", str(tmp_path / "pipe"), "--peak-tflops", "0.5", "--output", str(results)]
    assert main(args + BENCH_SMALL) == 0
    out = capsys.readouterr().out
    assert "s/step (median of 2" in out and "% of the floor" in out
    result = json.loads(results.read_text())
    assert result["tokens"] == 2 * 2 * 3 and result["steps_timed"] == 2 and result["guidance"] == "two-pass"
    assert result["floor_s_per_step"] == pytest.approx(result["tflop_per_step"] / 0.5)
    assert result["fraction_of_floor"] == pytest.approx(result["floor_s_per_step"] / result["s_per_step"])
    assert result["peak_rss_gb"] > 0


@pytest.mark.parametrize(
    "task, config, guidance",
    [
        ("t2v", {}, "batched"),
        ("t2v", {}, "off"),
        ("i2v", {}, "two-pass"),
        ("flf2v", {}, "batched"),
        ("t2v", {"vace_layers": [0], "vace_in_channels": 8}, "batched"),
    ],
)
def test_bench_runs_every_kind_of_model_from_its_config_alone(task, config, guidance, tmp_path, capsys):
    from wan_diffusers import WanTransformer3DModel, WanVACETransformer3DModel

    folder = save_tiny_transformer(tmp_path / "transformer", task, **config)
    (folder / "diffusion_pytorch_model.safetensors").unlink()  # --random-weights reads config.json alone
    args = ["bench", "--model", str(folder), "--random-weights", "--guidance", guidance]
    assert main(args + BENCH_SMALL) == 0
    out = capsys.readouterr().out
    cls = WanVACETransformer3DModel if config.get("vace_layers") else WanTransformer3DModel
    assert out.startswith(cls.__name__) and "floor: unknown for this device" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--height", "40"], "--height must be a positive multiple of 16"),
        (["--num-frames", "8"], r"--num-frames must be 4k \+ 1"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--peak-tflops", "-1"], "--peak-tflops must be positive"),
        (["--model", "{missing}"], "missing"),
    ],
)
def test_bench_bad_arguments_exit_with_a_message(args, message, tmp_path, capsys):
    import re

    folder = save_tiny_transformer(tmp_path / "transformer")
    args = [arg.format(missing=tmp_path / "missing") for arg in args]
    assert main(["bench", "--model", str(folder)] + args) == 1
    assert re.search(message, capsys.readouterr().err)


def test_the_cli_loads_without_unix_only_modules(monkeypatch):
    """Windows has no `resource` (nor `fcntl`): the command and all its subcommands' parsers must load without them."""
    import importlib

    import wan_diffusers

    for name in ("resource", "fcntl"):
        monkeypatch.setitem(sys.modules, name, None)  # `import resource` now raises ImportError
    for name in [name for name in sys.modules if name.startswith("wan_diffusers.") and "models" not in name]:
        monkeypatch.delitem(sys.modules, name)
        monkeypatch.setattr(wan_diffusers, name.split(".")[1], None, raising=False)
    cli = importlib.import_module("wan_diffusers.cli")
    parser = cli.build_parser()
    assert parser.parse_args(["bench", "--model", "x"]).command == "bench"
    from wan_diffusers.bench import _peak_rss_gb

    assert _peak_rss_gb() is None
