"""Converting whole original release folders into Hub-format repos (conversion/convert.py).

Every released layout is built in code (tests/factories/original_release.py) from the parity fixtures' weights,
converted, loaded back with the classes `model_index.json` names, and checked against the outputs the original
Wan2.1 code computed (tests/fixtures/wan21_parity). Tolerances (float32, from the fixtures' README): DiT, T5 and CLIP
max_rel <= 1e-5 (the original's own float32-vs-float64 noise is 3e-7 - 1.1e-6); T5 ids and masks exact; the VAE is
checked bit for bit against the VAE module's own conversion, whose parity tests live in tests/models.
"""

import importlib.util
import json
import os

import diffusers
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import UMT5EncoderModel

from wan_diffusers import AutoencoderKLWan, WanTransformer3DModel
from wan_diffusers.conversion import ConversionError, convert_release
from wan_diffusers.conversion.convert import ComponentConversion
from wan_diffusers.conversion.model_card import front_matter
from wan_diffusers.tasks import TASKS

from factories.original_release import LAYOUTS, TINY_CLIP_NUM_HEADS, build_release, write_released_dit
from factories.parity import component_references, dit_references, manifest, original_component_state_dict
from testing_utils import max_rel

PIPELINES = {
    "t2v": "WanPipeline",
    "i2v": "WanImageToVideoPipeline",
    "flf2v": "WanImageToVideoPipeline",
    "vace": "WanVACEPipeline",
}
HAS_VACE_MODEL = importlib.util.find_spec("wan_diffusers.models.transformer_wan_vace") is not None
# VACE conversion needs the VACE transformer class (issue 6) to build its meta model
needs_vace_model = pytest.mark.skipif(not HAS_VACE_MODEL, reason="WanVACETransformer3DModel has not landed yet")
CONVERTIBLE = [layout for layout in sorted(LAYOUTS) if HAS_VACE_MODEL or LAYOUTS[layout].task != "vace"]
# One layout per task runs the original's reference calls; its siblings (same weights, other file layout) are checked
# to convert into identical files (test_single_file_and_sharded_releases_give_the_same_repo).
PARITY_LAYOUTS = [
    layout for layout in ("t2v-1.3b", "i2v-14b-720p", "flf2v-14b-720p", "vace-1.3b") if layout in CONVERTIBLE
]
SIBLINGS = [
    pair
    for pair in (("t2v-1.3b", "t2v-14b"), ("i2v-14b-720p", "i2v-14b-480p"), ("vace-1.3b", "vace-14b"))
    if pair[1] in CONVERTIBLE
]


def convert(root, layout, **options):
    """Build the tiny release of `layout` under `root` and convert it to `root / "repo"`."""
    release = build_release(root / "release", layout)
    options = {"clip_num_heads": TINY_CLIP_NUM_HEADS, "resolution": LAYOUTS[layout].resolution, **options}
    return convert_release(release, root / "repo", **options)


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    """Each layout converted once with default options, shared by the tests of this module."""
    return {layout: convert(tmp_path_factory.mktemp(layout), layout) for layout in CONVERTIBLE}


@pytest.fixture(scope="module")
def pipelines(repos):
    """The parity layouts' repos loaded with our pipeline classes, as users load them."""
    import wan_diffusers

    return {
        layout: getattr(wan_diffusers, PIPELINES[LAYOUTS[layout].task]).from_pretrained(repos[layout])
        for layout in PARITY_LAYOUTS
    }


def transformer_class(layout):
    if LAYOUTS[layout].task == "vace":
        from wan_diffusers import WanVACETransformer3DModel

        return WanVACETransformer3DModel
    return WanTransformer3DModel


# ---------------------------------------------------------------------------------------------------------------------
# 1. A complete repo for every layout


@pytest.mark.parametrize("layout", CONVERTIBLE)
def test_every_layout_becomes_a_complete_repo(layout, repos):
    repo, task = repos[layout], LAYOUTS[layout].task
    index = json.loads((repo / "model_index.json").read_text())
    pipeline = PIPELINES[task]
    module = "transformer_wan_vace" if task == "vace" else "transformer_wan"
    expected = {
        "_class_name": pipeline,
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
        "transformer": [f"wan_diffusers.models.{module}", transformer_class(layout).__name__],
        "vae": ["wan_diffusers.models.autoencoder_kl_wan", "AutoencoderKLWan"],
    }
    if task in ("i2v", "flf2v"):
        expected["image_encoder"] = ["transformers", "CLIPVisionModelWithProjection"]
        expected["image_processor"] = ["transformers", "CLIPImageProcessor"]
    assert index == expected
    assert sorted(path.name for path in repo.iterdir()) == sorted(
        [name for name in expected if not name.startswith("_")] + ["README.md", "model_index.json"]
    )
    variant = next(variant for variant in TASKS if variant.name.lower() == layout)
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(repo / "scheduler")
    assert scheduler.config.shift == variant.shift and not scheduler.config.use_dynamic_shifting
    text = (repo / "README.md").read_text()  # the card states the same defaults as the table
    assert f"with shift {variant.shift:g} (the original's default for this release)" in text
    assert f"{variant.num_inference_steps} steps and guidance scale {variant.guidance_scale:g}" in text
    card = front_matter((repo / "README.md").read_text())
    assert (
        card["pipeline_tag"]
        == {"t2v": "text-to-video", "i2v": "image-to-video", "flf2v": "image-to-video", "vace": "video-to-video"}[task]
    )


@pytest.mark.parametrize("layout", CONVERTIBLE)
def test_converted_transformer_config_is_read_from_config_and_weights(layout, repos):
    config = transformer_class(layout).load_config(repos[layout] / "transformer")
    args = manifest(LAYOUTS[layout].task)["dit_args"]
    assert config["num_attention_heads"] * config["attention_head_dim"] == args["dim"]
    assert (config["num_layers"], config["ffn_dim"], config["in_channels"]) == (
        args["num_layers"],
        args["ffn_dim"],
        args["in_dim"],
    )
    assert config["text_dim"] == args["text_dim"] == 48  # not in config.json: read from the weights
    assert config["image_dim"] == args.get("image_dim")  # 32 for I2V/FLF2V, deliberately unlike text_dim
    assert config["pos_embed_seq_len"] == args.get("pos_embed_seq_len")
    if LAYOUTS[layout].task == "vace":
        assert (config["vace_layers"], config["vace_in_channels"]) == (args["vace_layers"], args["vace_in_dim"])


# ---------------------------------------------------------------------------------------------------------------------
# 2. Numerics after conversion, against the original Wan2.1 code


def original_dit_calls(task: str):
    """Every DiT reference call of the fixtures, one sample at a time: (case, sample, model kwargs, expected)."""
    references, cases = dit_references(task), manifest(task)["dit_cases"]
    for case in cases:
        name = case["case"]
        for i in range(case["batch"]):
            latent = references[f"dit.{name}.x.{i}"]
            if task in ("i2v", "flf2v"):  # noisy latent 16 | mask 4 | condition latent 16
                latent = torch.cat([latent, references[f"dit.{name}.y.{i}"]])
            kwargs = {
                "hidden_states": latent[None],
                "timestep": references[f"dit.{name}.t"][i : i + 1],
                "encoder_hidden_states": references[f"dit.{name}.context.{i}"][None],  # the model pads to 512 rows
            }
            if task in ("i2v", "flf2v"):
                images = 2 if task == "flf2v" else 1  # FLF2V: first and last image of a sample are adjacent
                kwargs["encoder_hidden_states_image"] = references[f"dit.{name}.clip_fea"][
                    i * images : (i + 1) * images
                ]
            if task == "vace":
                kwargs["control_hidden_states"] = references[f"dit.{name}.vace_context.{i}"][None]
                scale = case["vace_context_scale"]
                kwargs["control_hidden_states_scale"] = torch.full(
                    (len(manifest(task)["dit_args"]["vace_layers"]),), scale
                )
            yield name, i, kwargs, references[f"dit.{name}.out.{i}"]


@pytest.mark.parity
@pytest.mark.parametrize("layout", PARITY_LAYOUTS)
def test_converted_transformer_matches_the_original(layout, pipelines):
    pipe = pipelines[layout]
    assert type(pipe.transformer) is transformer_class(layout) and type(pipe.vae) is AutoencoderKLWan
    for case, sample, kwargs, expected in original_dit_calls(LAYOUTS[layout].task):
        with torch.no_grad():
            output = pipe.transformer(**kwargs).sample[0]
        error = max_rel(output, expected)
        # <= 1e-5 (fixtures' README); the original's float32-vs-float64 noise floor is 3.0e-7 - 5.6e-7
        assert error <= 1e-5, f"{layout} case {case} sample {sample}: max_rel {error:.2e}"


@pytest.mark.parity
def test_converted_text_encoder_and_tokenizer_match_the_original(pipelines):
    pipe, references, t5_case = pipelines["t2v-1.3b"], component_references("t2v"), manifest("t2v")["t5_case"]
    # ids and mask of the prompts after the original cleaning (ftfy, html.unescape twice, whitespace collapsed)
    tokens = pipe.tokenizer(
        t5_case["cleaned"],
        padding="max_length",
        truncation=True,
        max_length=512,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    assert torch.equal(tokens.input_ids, references["t5.input_ids"])
    assert torch.equal(tokens.attention_mask, references["t5.attention_mask"])
    # the embeddings through the pipeline, from the raw prompts (the pipeline cleans them as the original does)
    with torch.no_grad():
        embeddings, _ = pipe.encode_prompt(t5_case["prompts"], do_classifier_free_guidance=False)
    for i, length in enumerate(t5_case["lengths"]):
        error = max_rel(embeddings[i, :length], references[f"t5.out.{i}"])
        # <= 1e-5 (README); the original's float32-vs-float64 noise floor is 1.1e-6
        assert error <= 1e-5, f"prompt {i}: max_rel {error:.2e}"
        assert not embeddings[i, length:].any()  # zero rows after the prompt, as the DiT's padding expects


@pytest.mark.parity
@pytest.mark.parametrize("layout, case", [("i2v-14b-720p", "single"), ("flf2v-14b-720p", "pair")])
def test_converted_image_encoder_matches_the_original(layout, case, pipelines):
    references, encoder = component_references(LAYOUTS[layout].task), pipelines[layout].image_encoder
    with torch.no_grad():
        outputs = encoder(references[f"clip.{case}.pixel_values"], output_hidden_states=True)
    # Wan uses the hidden state after the second-to-last block: hidden_states[-2]
    error = max_rel(outputs.hidden_states[-2], references[f"clip.{case}.features"])
    # <= 1e-5 (README); the original's float32-vs-float64 noise floor is 3.3e-7
    assert error <= 1e-5, f"{case}: max_rel {error:.2e}"
    processor = pipelines[layout].image_processor
    image_size = encoder.config.image_size  # 32 here (16 x 16 patches of 2 pixels), 224 for the release
    assert processor.size == {"height": image_size, "width": image_size} and not processor.do_center_crop


@pytest.mark.parity
def test_converted_vae_is_the_vae_modules_conversion(pipelines):
    """Bit-identical weights to `AutoencoderKLWan.from_single_file` of the same `.pth` (whose parity with the original
    is tested in tests/models), and
    the original's encode output reproduced with the original's normalisation arithmetic."""
    vae = pipelines["t2v-1.3b"].vae
    reference_vae = AutoencoderKLWan.from_single_file(original_component_state_dict("Wan2.1_VAE.pth"))
    public = lambda config: {key: value for key, value in config.items() if not key.startswith("_")}  # noqa: E731
    assert public(vae.config) == public(reference_vae.config)
    converted, expected = vae.state_dict(), reference_vae.state_dict()
    assert converted.keys() == expected.keys()
    assert all(torch.equal(converted[key], expected[key]) for key in expected)
    references = component_references("t2v")
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        posterior = vae.encode(references["vae.encode.video_5f_40x24.input"]).latent_dist.mean
    # Bit-identical with 2 CPU threads (the reference's setting); other thread counts sum the convolutions in another
    # order, measured up to 4.4e-7.
    assert max_rel((posterior - mean) * (1 / std), references["vae.encode.video_5f_40x24.output"]) <= 1e-6


@pytest.mark.parametrize("layout, sibling", SIBLINGS)
def test_single_file_and_sharded_releases_give_the_same_repo(layout, sibling, repos):
    for folder in ("transformer", "vae", "text_encoder", "tokenizer", "image_encoder", "image_processor"):
        if (repos[layout] / folder).exists():
            assert files_of(repos[layout] / folder) == files_of(repos[sibling] / folder), folder


# ---------------------------------------------------------------------------------------------------------------------
# 3. Loading


def test_plain_diffusers_loads_the_repo_with_our_classes(repos):
    """`model_index.json` names our modules as `save_pretrained` does; diffusers 0.42 loads them once imported (here
    by `from wan_diffusers import ...` at the top of this file) and builds its own pipeline class around them."""
    for layout, pipeline_class in (
        ("t2v-1.3b", diffusers.WanPipeline),
        ("i2v-14b-720p", diffusers.WanImageToVideoPipeline),
    ):
        pipe = diffusers.DiffusionPipeline.from_pretrained(repos[layout])
        assert type(pipe) is pipeline_class
        assert type(pipe.transformer) is WanTransformer3DModel and type(pipe.vae) is AutoencoderKLWan


def test_resaving_with_diffusers_records_the_same_classes(repos, tmp_path):
    pipe = diffusers.DiffusionPipeline.from_pretrained(repos["t2v-1.3b"])
    pipe.save_pretrained(tmp_path / "resaved")
    ours = json.loads((repos["t2v-1.3b"] / "model_index.json").read_text())
    resaved = json.loads((tmp_path / "resaved" / "model_index.json").read_text())
    assert resaved["transformer"] == ours["transformer"] and resaved["vae"] == ours["vae"]


def test_bfloat16_repo_keeps_the_float32_modules_and_the_float32_vae(tmp_path):
    repo = convert(tmp_path, "t2v-1.3b", dtype="bfloat16")
    weights = load_file(repo / "transformer" / "diffusion_pytorch_model.safetensors")
    keep = WanTransformer3DModel._keep_in_fp32_modules
    for key, tensor in weights.items():
        kept = any(module in key.split(".") for module in keep)
        assert tensor.dtype == (torch.float32 if kept else torch.bfloat16), key
    assert {t.dtype for t in load_file(repo / "vae" / "diffusion_pytorch_model.safetensors").values()} == {
        torch.float32
    }
    assert {t.dtype for t in load_file(repo / "text_encoder" / "model.safetensors").values()} == {torch.bfloat16}
    assert json.loads((repo / "text_encoder" / "config.json").read_text())["dtype"] == "bfloat16"
    model = WanTransformer3DModel.from_pretrained(repo / "transformer", torch_dtype=torch.bfloat16)
    assert model.condition_embedder.time_proj.weight.dtype == torch.float32
    assert model.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16


def test_small_shards_load_and_hold_the_same_tensors(repos, tmp_path):
    repo = convert(tmp_path, "i2v-14b-720p", max_shard_size="100KB")
    index = json.loads((repo / "transformer" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all(os.path.getsize(repo / "transformer" / name) < 2 * 10**5 for name in shards)
    assert (repo / "text_encoder" / "model.safetensors.index.json").exists()
    sharded = WanTransformer3DModel.from_pretrained(repo / "transformer").state_dict()
    whole = WanTransformer3DModel.from_pretrained(repos["i2v-14b-720p"] / "transformer").state_dict()
    assert sharded.keys() == whole.keys() and all(torch.equal(sharded[k], whole[k]) for k in whole)
    encoder = UMT5EncoderModel.from_pretrained(repo / "text_encoder")
    assert torch.equal(encoder.shared.weight, encoder.encoder.embed_tokens.weight)  # tied, stored once


# ---------------------------------------------------------------------------------------------------------------------
# 4. Safety: determinism, atomic writes, clear errors that leave nothing behind


def files_of(folder):
    return {
        path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()
    }


def test_converting_twice_gives_identical_files(tmp_path):
    first = convert(tmp_path / "first", "flf2v-14b-720p")
    second = convert(tmp_path / "second", "flf2v-14b-720p")
    assert files_of(first) == files_of(second)


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def add_to_shard(release, key, tensor):
    """A tensor added to the first DiT shard, and to the index (so that the index still matches the shards)."""
    save_file({**load_file(release / DIT), key: tensor}, release / DIT)
    index_path = release / "diffusion_pytorch_model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"][key] = DIT
    index_path.write_text(json.dumps(index))


def rewrite_pth(path, change):
    state_dict = torch.load(path, weights_only=True)
    change(state_dict)
    torch.save(state_dict, path)


DIT = "diffusion_pytorch_model-00001-of-00002.safetensors"
T5 = "models_t5_umt5-xxl-enc-bf16.pth"
CLIP = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
BROKEN_RELEASES = {
    "truncated DiT shard": (lambda r: truncate(r / DIT), f"{DIT} is not a readable safetensors file"),
    "corrupted VAE": (lambda r: (r / "Wan2.1_VAE.pth").write_bytes(b"\0" * 1000), "Wan2.1_VAE.pth is not a readable"),
    "missing T5": (lambda r: (r / T5).unlink(), f"lacks files that a I2V release has:\n    {T5}"),
    "unknown DiT key": (
        lambda r: add_to_shard(r, "blocks.0.self_attn.lora_A.weight", torch.zeros(2, 2)),
        "keys the DiT key map does not know \\(1\\):\n    blocks.0.self_attn.lora_A.weight",
    ),
    "wrong DiT shape": (
        lambda r: save_file({**load_file(r / DIT), "head.modulation": torch.zeros(1, 3, 48)}, r / DIT),
        "shape mismatches \\(1\\):\n    scale_shift_table: checkpoint \\(1, 3, 48\\), model \\(1, 2, 48\\)",
    ),
    "missing T5 tensor": (
        lambda r: rewrite_pth(r / T5, lambda sd: sd.pop("blocks.1.ffn.fc1.weight")),
        "missing keys \\(1\\):\n    encoder.block.1.layer.1.DenseReluDense.wi_1.weight",
    ),
    "wrong CLIP shape": (
        lambda r: rewrite_pth(
            r / CLIP, lambda sd: sd.update({"visual.transformer.1.mlp.0.weight": torch.zeros(129, 32)})
        ),
        "vision_model.encoder.layers.1.mlp.fc1.weight: checkpoint \\(129, 32\\), model \\(128, 32\\)",
    ),
}


@pytest.mark.parametrize("problem", sorted(BROKEN_RELEASES))
def test_broken_releases_give_clear_errors_and_leave_nothing_behind(problem, tmp_path):
    release = build_release(tmp_path / "release", "i2v-14b-720p")
    damage, message = BROKEN_RELEASES[problem]
    damage(release)
    with pytest.raises(ConversionError, match=message):
        convert_release(release, tmp_path / "repo", clip_num_heads=TINY_CLIP_NUM_HEADS)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["release"]


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, OSError])
def test_a_failure_while_writing_leaves_no_partial_repo(interruption, tmp_path, monkeypatch):
    release = build_release(tmp_path / "release", "t2v-1.3b")
    original_write = ComponentConversion.write

    def write_then_fail(self, folder, **kwargs):
        original_write(self, folder, **kwargs)
        if self.folder == "vae":  # the transformer is already written
            raise interruption("disk full")

    monkeypatch.setattr(ComponentConversion, "write", write_then_fail)
    with pytest.raises(interruption):
        convert_release(release, tmp_path / "repo")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["release"]


def test_an_existing_output_is_kept_unless_overwrite(tmp_path):
    release = build_release(tmp_path / "release", "t2v-1.3b")
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="`output_dir` .* already exists; pass `overwrite=True`"):
        convert_release(release, tmp_path / "repo")
    assert (tmp_path / "repo" / "keep.txt").read_text() == "mine"
    # --overwrite replaces only a pipeline repo, never a folder of other files
    with pytest.raises(ValueError, match="is not a pipeline repo .* only ever replaces one"):
        convert_release(release, tmp_path / "repo", overwrite=True)
    assert (tmp_path / "repo" / "keep.txt").read_text() == "mine"
    (tmp_path / "repo" / "model_index.json").write_text("{}")
    convert_release(release, tmp_path / "repo", overwrite=True)
    assert (tmp_path / "repo" / "model_index.json").exists() and not (tmp_path / "repo" / "keep.txt").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["release", "repo"]
    with pytest.raises(ValueError, match="must not be the release folder or contain it"):
        convert_release(release, tmp_path, overwrite=True)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"dtype": "fp8"}, "`dtype` must be one of bfloat16, float16, float32"),
        ({"shift": 0}, "`shift` must be a positive number"),
        ({"max_shard_size": "big"}, "`max_shard_size` must be a size"),
        ({"push_to_hub": "not a repo id"}, "`push_to_hub` must be a Hub repo id"),
        ({"resolution": "4k"}, "`resolution` must be one of"),
        ({"clip_num_heads": 3}, "`clip_num_heads` must be a positive divisor of the CLIP width 32, got 3"),
    ],
)
def test_bad_options_name_the_argument_before_writing_anything(options, message, tmp_path):
    release = build_release(tmp_path / "release", "i2v-14b-720p")
    options = {"clip_num_heads": TINY_CLIP_NUM_HEADS, **options}
    with pytest.raises(ValueError, match=message):
        convert_release(release, tmp_path / "repo", **options)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["release"]


def test_clip_heads_are_required_for_an_unreleased_width(tmp_path):
    release = build_release(tmp_path / "release", "i2v-14b-720p")
    with pytest.raises(ValueError, match="`clip_num_heads` must be given for a CLIP vision tower of width 32"):
        convert_release(release, tmp_path / "repo")


def test_push_to_hub_uploads_the_finished_repo(tmp_path, monkeypatch):
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            assert (folder_path / "model_index.json").exists()  # the complete repo, after the rename
            calls.append(("upload_folder", repo_id, folder_path))

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    repo = convert(tmp_path, "t2v-1.3b", push_to_hub="someone/wan-tiny", private=True)
    assert calls == [
        ("create_repo", "someone/wan-tiny", {"private": True, "exist_ok": True}),
        ("upload_folder", "someone/wan-tiny", repo),
    ]
    assert 'from_pretrained("someone/wan-tiny"' in (repo / "README.md").read_text()


@needs_vace_model
def test_vace_layers_default_to_every_second_block_when_config_json_lacks_them(tmp_path, repos):
    # the fixture has 3 blocks and hints for [0, 2]: what the original `VaceWanModel` builds without `vace_layers`
    release = build_release(tmp_path / "release", "vace-1.3b", config_overrides={"vace_layers": None})
    repo = convert_release(release, tmp_path / "repo")
    assert files_of(repo / "transformer") == files_of(repos["vace-1.3b"] / "transformer")
    release = build_release(tmp_path / "wrong", "vace-1.3b", config_overrides={"vace_layers": [0]})
    with pytest.raises(ConversionError, match="2 VACE hint blocks, but config.json's `vace_layers` lists 1 layers"):
        convert_release(release, tmp_path / "wrong-repo")


def test_the_top_level_package_as_library_name_would_not_load_in_plain_diffusers(repos, tmp_path):
    """Why model_index.json records module paths: with `["wan_diffusers", ...]` diffusers looks for `ModelMixin` on
    the package to find a loading method, and gives up."""
    import shutil

    repo = shutil.copytree(repos["t2v-1.3b"], tmp_path / "repo")
    index = json.loads((repo / "model_index.json").read_text())
    index["transformer"] = ["wan_diffusers", "WanTransformer3DModel"]
    (repo / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="does not seem to have any of the loading methods"):
        diffusers.DiffusionPipeline.from_pretrained(repo)


# Parameters (billions, 3 decimals) and tensors of the official Diffusers repos' transformers (their
# `transformer/` folders on the Hub)
OFFICIAL_COUNTS = {
    "t2v-1.3b": (1.419, 825),
    "t2v-14b": (14.288, 1095),
    "i2v-14b": (16.395, 1303),
    "flf2v-14b": (16.396, 1304),
    "vace-1.3b": (2.154, 1264),
    "vace-14b": (17.338, 1331),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_COUNTS))
def test_released_dits_plan_to_the_official_parameter_counts(name, tmp_path):
    """At real size (a sparse file: the header is real, the data a hole), detection names the release and the
    conversion plan has exactly the official model's tensors; nothing is read but headers, nothing is allocated."""
    from wan_diffusers.conversion.convert import _transformer
    from wan_diffusers.conversion.detect import detect_release

    release = build_release(tmp_path / "release", "i2v-14b-720p")  # the tiny VAE, T5 and CLIP beside it
    (release / "diffusion_pytorch_model.safetensors.index.json").unlink()
    for shard in release.glob("diffusion_pytorch_model-*.safetensors"):
        shard.unlink()
    write_released_dit(release, name)
    detected = detect_release(release)
    assert (
        detected.name
        == {
            "t2v-1.3b": "Wan2.1-T2V-1.3B",
            "t2v-14b": "Wan2.1-T2V-14B",
            "i2v-14b": "Wan2.1-I2V-14B-720P",
            "flf2v-14b": "Wan2.1-FLF2V-14B-720P",
            "vace-1.3b": "Wan2.1-VACE-1.3B",
            "vace-14b": "Wan2.1-VACE-14B",
        }[name]
    )
    plan = _transformer(detected, torch.bfloat16)
    assert (round(plan.num_parameters / 1e9, 3), len(plan.tensors)) == OFFICIAL_COUNTS[name]


def test_encoders_of_another_model_are_refused(tmp_path):
    """A released 1.3B DiT (text width 4096) beside the tiny T5 (width 48): the files come from different models."""
    release = build_release(tmp_path / "release", "t2v-1.3b")
    (release / "diffusion_pytorch_model.safetensors").unlink()
    write_released_dit(release, "t2v-1.3b")
    with pytest.raises(ConversionError, match="The T5 encoder outputs 48 channels but the DiT's text_dim is 4096"):
        convert_release(release, tmp_path / "repo")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["release"]
