"""`from_pretrained` says what is wrong with a repo at load time: no such folder, the wrong pipeline class, a config
that disagrees with its weights."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wan_diffusers import WanImageToVideoPipeline, WanPipeline, WanVACEPipeline, WanVideoToVideoPipeline
from wan_diffusers.cli import main


def test_a_missing_local_folder_is_no_such_folder(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        WanPipeline.from_pretrained(tmp_path / "Wan2.1-T2V-1.3B-Diffusers")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        WanPipeline.from_pretrained("./Wan2.1-T2V-1.3B-Diffusers")


@pytest.mark.parametrize(
    "pipeline_class, repo_class",
    [
        (WanPipeline, "WanImageToVideoPipeline"),
        (WanImageToVideoPipeline, "WanPipeline"),
        (WanVACEPipeline, "WanPipeline"),
        (WanVideoToVideoPipeline, "WanVACEPipeline"),
    ],
)
def test_a_repo_of_another_task_is_refused_naming_the_class(pipeline_class, repo_class, repo, tmp_path):
    other = shutil.copytree(repo, tmp_path / "repo")
    index = json.loads((other / "model_index.json").read_text())
    (other / "model_index.json").write_text(json.dumps({**index, "_class_name": repo_class}))
    with pytest.raises(ValueError, match=rf"is a {repo_class} repo, .* load it with `{repo_class}.from_pretrained"):
        pipeline_class.from_pretrained(other)


def test_video_to_video_runs_text_to_video_repos(repo):
    assert isinstance(WanVideoToVideoPipeline.from_pretrained(repo), WanVideoToVideoPipeline)


@pytest.mark.parametrize(
    "component, field, value, message",
    [
        ("transformer", "num_layers", 3, r"`num_layers` \(3\) makes 3 `blocks` but the weights hold 2"),
        ("transformer", "num_layers", 1, r"`num_layers` \(1\) makes 1 `blocks` but the weights hold 2"),
        ("transformer", "ffn_dim", 999, r"blocks.0.ffn.net.0.proj.weight is \[224, 128\] .* check `ffn_dim` \(999\)"),
        ("transformer", "eps", None, "`eps` must be a number, got null"),
        ("transformer", "eps", "x", '`eps` must be a number, got "x"'),
        ("vae", "z_dim", 8, "vae/config.json disagrees with the weights in vae/"),
    ],
)
def test_a_config_that_disagrees_with_its_weights_is_refused_at_load_time(
    component, field, value, message, repo, tmp_path
):
    broken = shutil.copytree(repo, tmp_path / "repo")
    config_path = broken / component / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), field: value}))
    with pytest.raises(
        ValueError, match=rf"{component}/config.json.*{message}" if "disagrees" not in message else message
    ):
        WanPipeline.from_pretrained(broken)


def test_the_command_names_the_missing_model_folder(tmp_path, capsys):
    assert (
        main(["generate", "--prompt", "a cat", "--model", str(tmp_path / "nope"), "--output", str(tmp_path / "a.mp4")])
        == 1
    )
    assert "no such folder" in capsys.readouterr().err


def test_the_readme_diffusion_pipeline_route_loads_a_vace_repo(tmp_path):
    """README's snippet, run as written in a fresh interpreter: the imports it names are all a VACE repo needs."""
    from reliability.helpers import command_env
    from wan_diffusers.conversion import convert_release

    from factories.original_release import build_release

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    snippet = re.search(r"```python\n(from diffusers import DiffusionPipeline\n.*?)```", readme, re.S).group(1)
    repo = convert_release(build_release(tmp_path / "release", "vace-1.3b"), tmp_path / "repo")
    script = f"OUT = {str(repo)!r}\n{snippet}print(type(pipe).__name__, type(pipe.transformer).__module__)\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=command_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["WanVACEPipeline", "wan_diffusers.models.transformer_wan_vace"]
    assert "Expected types" not in result.stderr, result.stderr


def test_diffusers_type_warnings_pass_unless_our_class_stands_in_for_its_namesake():
    """Only 'ours in place of diffusers' class of the same name' is dropped; every other type warning is kept."""
    import logging

    import wan_diffusers.models  # noqa: F401 (installs the filter)
    from wan_diffusers.utils.diffusers_type_check import PIPELINE_LOADING_LOGGER

    logger = logging.getLogger(PIPELINE_LOADING_LOGGER)
    expected = "(<class 'diffusers.models.transformers.transformer_wan.WanTransformer3DModel'>,)"

    def kept(message: str) -> bool:
        return all(f.filter(logging.makeLogRecord({"msg": message})) for f in logger.filters)

    ours = "<class 'wan_diffusers.models.transformer_wan.WanTransformer3DModel'>"
    assert not kept(f"Expected types for transformer: {expected}, got {ours}.")
    assert kept(f"Expected types for transformer: {expected}, got <class 'wan_diffusers.models.x.AutoencoderKLWan'>.")
    assert kept(f"Expected types for transformer: {expected}, got <class 'torch.nn.modules.linear.Linear'>.")
