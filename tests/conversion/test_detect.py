"""Variant detection from the files and weights of a release folder (conversion/detect.py)."""

import dataclasses
import json
import shutil

import pytest

from wan_diffusers.conversion.detect import WanRelease, detect_release
from wan_diffusers.conversion.rules import ConversionError

from factories.original_release import LAYOUTS, build_release, original_dit_shapes
from factories.parity import manifest, original_dit_state_dict

EXPECTED = {  # layout -> (task, pipeline class, transformer class, number of DiT files)
    "t2v-1.3b": ("t2v", "WanPipeline", "WanTransformer3DModel", 1),
    "t2v-14b": ("t2v", "WanPipeline", "WanTransformer3DModel", 3),
    "i2v-14b-480p": ("i2v", "WanImageToVideoPipeline", "WanTransformer3DModel", 2),
    "i2v-14b-720p": ("i2v", "WanImageToVideoPipeline", "WanTransformer3DModel", 2),
    "flf2v-14b-720p": ("flf2v", "WanImageToVideoPipeline", "WanTransformer3DModel", 2),
    "vace-1.3b": ("vace", "WanVACEPipeline", "WanVACETransformer3DModel", 1),
    "vace-14b": ("vace", "WanVACEPipeline", "WanVACETransformer3DModel", 2),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_is_detected_from_its_files(layout, tmp_path):
    # the folder name says nothing: the variant must come from the files and weights
    release = detect_release(build_release(tmp_path / "release", layout), resolution=LAYOUTS[layout].resolution)
    task, pipeline, transformer, num_files = EXPECTED[layout]
    assert (release.task, release.pipeline_class_name, release.transformer_class_name) == (task, pipeline, transformer)
    assert len(release.dit_files) == num_files
    assert release.size is None  # tiny weights: not a released size
    assert (release.clip_checkpoint is not None) == (task in ("i2v", "flf2v"))


def test_the_factory_knows_every_original_key():
    """`original_dit_shapes` (used for synthetic checkpoints) gives exactly the keys and shapes of the fixtures."""
    for task in ("t2v", "i2v", "flf2v", "vace"):
        args = manifest(task)["dit_args"]
        shapes = original_dit_shapes(
            dim=args["dim"],
            ffn_dim=args["ffn_dim"],
            num_layers=args["num_layers"],
            in_dim=args["in_dim"],
            text_dim=args["text_dim"],
            image_dim=args.get("image_dim"),
            flf2v=task == "flf2v",
            vace_layers=args.get("vace_layers"),
            vace_in_dim=args.get("vace_in_dim", 96),
        )
        assert shapes == {key: tuple(t.shape) for key, t in original_dit_state_dict(task).items()}, task


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> dict[str, WanRelease]:
    layouts = {"t2v": "t2v-1.3b", "i2v": "i2v-14b-720p", "flf2v": "flf2v-14b-720p", "vace": "vace-1.3b"}
    return {
        task: detect_release(build_release(tmp_path_factory.mktemp(task) / "r", layout))
        for task, layout in layouts.items()
    }


@pytest.mark.parametrize(
    "task, size, resolution, name, shift",
    [
        ("t2v", "1.3B", "480p", "Wan2.1-T2V-1.3B", 5.0),  # generate.py's (its README advises 8-12 for 1.3B)
        ("t2v", "14B", "720p", "Wan2.1-T2V-14B", 5.0),
        ("i2v", "14B", "480p", "Wan2.1-I2V-14B-480P", 3.0),
        ("i2v", "14B", "720p", "Wan2.1-I2V-14B-720P", 5.0),
        ("flf2v", "14B", "720p", "Wan2.1-FLF2V-14B-720P", 16.0),
        ("flf2v", "14B", "480p", "Wan2.1-FLF2V-14B-720P", 16.0),  # only released at 720P (run at 480P if asked)
        ("vace", "1.3B", "480p", "Wan2.1-VACE-1.3B", 16.0),
        ("vace", "14B", "720p", "Wan2.1-VACE-14B", 16.0),
        ("t2v", None, "720p", "Wan2.1-T2V (custom size)", 5.0),
    ],
)
def test_names_base_models_and_shifts_of_the_releases(task, size, resolution, name, shift, releases):
    # the real 1.3B / 14B weights would give these sizes; the tiny ones cannot
    release = dataclasses.replace(releases[task], size=size, resolution=resolution)
    assert release.name == name
    assert release.base_model == (None if size is None else f"Wan-AI/{name}")
    assert release.default_shift == shift


def test_released_sizes_are_recognised_from_config(tmp_path):
    folder = build_release(tmp_path / "release", "t2v-1.3b", config_overrides={"dim": 1536, "num_layers": 30})
    release = detect_release(folder)
    assert (release.size, release.resolution, release.name) == ("1.3B", "480p", "Wan2.1-T2V-1.3B")


def test_model_type_must_agree_with_the_weights(tmp_path):
    folder = build_release(tmp_path / "release", "t2v-1.3b", config_overrides={"model_type": "i2v"})
    with pytest.raises(ConversionError, match="model_type 'i2v'.*T2V model.*different releases"):
        detect_release(folder)
    folder = build_release(tmp_path / "flf2v", "flf2v-14b-720p", config_overrides={"model_type": "i2v"})
    with pytest.raises(ConversionError, match="emb_pos"):
        detect_release(folder)


def test_vace_accepts_the_base_model_type(tmp_path):
    folder = build_release(tmp_path / "release", "vace-1.3b", config_overrides={"model_type": "t2v"})
    assert detect_release(folder).task == "vace"


@pytest.mark.parametrize(
    "remove, message",
    [
        ("Wan2.1_VAE.pth", "(?s)lacks files.*Wan2.1_VAE.pth"),
        ("models_t5_umt5-xxl-enc-bf16.pth", "(?s)lacks files.*models_t5_umt5-xxl-enc-bf16.pth"),
        ("google", "(?s)lacks files.*google/umt5-xxl/"),
        ("models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth", "CLIP image encoder, needed by I2V"),
        ("config.json", "has no config.json"),
        ("diffusion_pytorch_model-00002-of-00002.safetensors", "Shards listed in .* are missing.*00002-of-00002"),
        ("diffusion_pytorch_model.safetensors.index.json", "has no DiT weights"),
    ],
)
def test_missing_files_are_named(remove, message, tmp_path):
    folder = build_release(tmp_path / "release", "i2v-14b-720p")
    path = folder / remove
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(ConversionError, match=message):
        detect_release(folder)


def test_inconsistent_or_ambiguous_dit_files_are_refused(tmp_path):
    folder = build_release(tmp_path / "release", "t2v-14b")
    index_path = folder / "diffusion_pytorch_model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    key = sorted(index["weight_map"])[0]
    index["weight_map"][key] = "diffusion_pytorch_model-00002-of-00003.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(ConversionError, match=f"does not match its shards:\n    {key}: index says"):
        detect_release(folder)

    folder = build_release(tmp_path / "both", "t2v-1.3b")
    shutil.copyfile(index_path, folder / index_path.name)
    with pytest.raises(ConversionError, match="holds both"):
        detect_release(folder)


def test_config_errors_are_clear(tmp_path):
    folder = build_release(tmp_path / "release", "t2v-1.3b", config_overrides={"dim": None, "ffn_dim": None})
    with pytest.raises(ConversionError, match="lacks fields every Wan release writes: dim, ffn_dim"):
        detect_release(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ConversionError, match="config.json is not valid JSON"):
        detect_release(folder)


def test_bad_arguments_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="`checkpoint_dir` must be an original Wan 2.1 or Wan 2.2 release folder"):
        detect_release(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="`resolution` must be one of"):
        detect_release(tmp_path, resolution="1080p")
