"""The trainer end to end on a tiny pipeline: caching, bad data, full fine-tuning, checkpoints and exact resume, LoRA
saving in both formats and loading with `load_lora_weights`."""

import csv
import json
import logging

import pytest
import torch
from safetensors.torch import load_file

from wan_diffusers import WanPipeline, WanTransformer3DModel
from wan_diffusers.training.trainer import TrainingConfig, train

BUCKET = "32x32x5"  # the shapes_data_dir fixture's clips: 2 latent frames of 8 x 8, 32 tokens


def _config(model, data, output, cache, **overrides):
    settings = dict(
        model=str(model),
        data=str(data),
        output=str(output),
        buckets=(BUCKET,),
        batch_size=2,
        learning_rate=1e-3,
        caption_dropout=0.5,
        null_prompt="",
        checkpoint_every=2,
        cache_dir=str(cache),
        seed=0,
    )
    return TrainingConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_full_training_skips_bad_data_and_resumes_exactly(tiny_model_dir, shapes_data_dir, cache_dir, tmp_path):
    straight = train(
        _config(tiny_model_dir, shapes_data_dir, tmp_path / "straight", cache_dir, lora_rank=None, steps=4)
    )
    bad = [line.split("\t", 1) for line in (straight / "bad_samples.txt").read_text().splitlines()]
    reasons = {name: reason for name, reason in bad}
    assert len(bad) == 3 and "too few frames" in reasons["short.mp4"] and "broken.mp4" in reasons, bad
    assert "no caption" in [reason for _, reason in bad]
    rows = list(csv.DictReader(open(straight / "loss.csv")))
    assert [int(row["step"]) for row in rows] == [1, 2, 3, 4]

    # stop at step 2, then resume to 4 from the checkpoint: the same weights as the uninterrupted run
    resumed_dir = tmp_path / "resumed"
    train(
        _config(tiny_model_dir, shapes_data_dir, resumed_dir, cache_dir, lora_rank=None, steps=2, checkpoint_every=1)
    )
    (resumed_dir / "transformer").rename(resumed_dir / "transformer_step2")
    (resumed_dir / "checkpoints" / "step-9.partial").mkdir()  # an interrupted save: not a checkpoint to resume from
    train(_config(tiny_model_dir, shapes_data_dir, resumed_dir, cache_dir, lora_rank=None, steps=4, resume=True))
    expected = WanTransformer3DModel.from_pretrained(straight / "transformer").state_dict()
    resumed = WanTransformer3DModel.from_pretrained(resumed_dir / "transformer").state_dict()
    # float32 throughout, the same batches, noise and timesteps in the same order: equal to rounding of the reload
    for key, value in expected.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-6, msg=key)
    assert json.loads((resumed_dir / "cache_index.json").read_text())["keys"]


def test_lora_loads_with_no_unmatched_keys_in_both_formats(
    tiny_model_dir, shapes_data_dir, cache_dir, tmp_path, caplog
):
    output = train(_config(tiny_model_dir, shapes_data_dir, tmp_path / "lora", cache_dir, lora_rank=4, steps=3))
    diffusers_file = output / "lora" / "pytorch_lora_weights.safetensors"
    original_file = output / "lora" / "lora_comfyui.safetensors"
    keys = list(load_file(diffusers_file))
    assert keys and all(key.startswith("transformer.blocks.") for key in keys)
    assert all(key.startswith("diffusion_model.blocks.") for key in load_file(original_file))

    def run(lora_file):
        pipe = WanPipeline.from_pretrained(tiny_model_dir)
        if lora_file is not None:
            with caplog.at_level(logging.WARNING):
                caplog.clear()
                pipe.load_lora_weights(lora_file)
            assert not [r for r in caplog.records if "key" in r.getMessage().lower()], caplog.text
        return pipe(
            "a red circle moves left", height=32, width=32, num_frames=5, num_inference_steps=2,
            generator=torch.Generator().manual_seed(0), output_type="latent",
        ).frames  # fmt: skip

    base, with_lora, with_original = run(None), run(output / "lora"), run(original_file)
    assert (with_lora - base).abs().max() > 1e-4  # the adapter changes the output
    # the two formats hold the same weights: the same output to float32 rounding
    torch.testing.assert_close(with_original, with_lora, rtol=1e-5, atol=1e-5)


def test_bad_settings_are_refused_before_loading(tmp_path):
    config = TrainingConfig(model="nowhere", data=str(tmp_path), output=str(tmp_path / "out"))
    for field, value, message in [
        ("task", "t2i", "`--task` must be one of"),
        ("buckets", ("480x830x81",), "divisible by 16"),
        ("caption_dropout", 1.0, "`--caption-dropout`"),
        ("timestep_range", (0.5, 0.2), "`--timestep-range`"),
    ]:
        with pytest.raises(ValueError, match=message):
            TrainingConfig(**{**config.__dict__, field: value}).check()


@pytest.mark.parametrize("task", ["i2v", "vace"])
def test_image_to_video_and_vace_training(task, shapes_data_dir, tmp_path):
    from wan_diffusers.pipelines.demo import build_demo_pipeline

    model = tmp_path / "model"
    build_demo_pipeline(task).save_pretrained(model)
    output = train(
        _config(model, shapes_data_dir, tmp_path / "out", tmp_path / "cache", task=task, lora_rank=2, steps=1)
    )
    cached = load_file(next((tmp_path / "cache").glob("[0-9a-f]*.safetensors")))
    assert set(cached) >= ({"condition", "image_embeds"} if task == "i2v" else {"control"})
    pipe = build_demo_pipeline(task)
    pipe.load_lora_weights(output / "lora")
    assert pipe.get_list_adapters() == {"transformer": ["default_0"]}


def test_wan22_low_noise_expert_lora(shapes_data_dir, tmp_path):
    """`--transformer transformer_2 --timestep-range 0 0.875`: a LoRA of the Wan 2.2 low-noise expert alone, loaded
    back into that expert with diffusers' `load_into_transformer_2`."""
    from factories.pipelines import tiny_two_expert_pipeline

    model = tmp_path / "model"
    tiny_two_expert_pipeline().save_pretrained(model)
    config = _config(
        model, shapes_data_dir, tmp_path / "out", tmp_path / "cache", lora_rank=2, steps=2, learning_rate=1e-2
    )
    output = train(
        TrainingConfig(**{**config.__dict__, "transformer": "transformer_2", "timestep_range": (0.0, 0.875)})
    )

    pipe = WanPipeline.from_pretrained(model)
    kwargs = dict(height=32, width=32, num_frames=5, num_inference_steps=2, output_type="latent")
    before = pipe("a red circle moves left", generator=torch.Generator().manual_seed(0), **kwargs).frames
    pipe.load_lora_weights(output / "lora", load_into_transformer_2=True)
    assert pipe.get_list_adapters() == {"transformer_2": ["default_0"]}
    after = pipe("a red circle moves left", generator=torch.Generator().manual_seed(0), **kwargs).frames
    assert (after - before).abs().max() > 1e-4  # the second step, below the boundary, runs the adapted expert
