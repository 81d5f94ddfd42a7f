"""The shipped tiny shapes model and its cyan LoRA, end to end: offline loading, text conditioning, sampling and
decoding, read back by the shape detector (`training.shapes.describe_video`). These are the package's end-to-end tests
of text conditioning: a model that ignored its prompt would score at chance, 20 % for colour and 25 % for direction.

The floors are loose on purpose (the issue's 80 % of colour and direction on prompts seen in training): seeds and
platforms move single videos across the detector's thresholds. `benchmarks/bench_prompt_following.py` measures the
full table (RESULTS.md)."""

import logging

import pytest
import torch

from wan_diffusers import WanPipeline, tiny_lora_path, tiny_model_path
from wan_diffusers.training.evaluation import accuracy, accuracy_report, prompt_following
from wan_diffusers.training.shapes import all_combinations, training_combinations
from wan_diffusers.training.tiny import SAMPLING_DEFAULTS

STEPS = SAMPLING_DEFAULTS["steps"]
FLOOR = 0.8


@pytest.fixture
def pipe():
    pipe = WanPipeline.from_pretrained(tiny_model_path(), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_tiny_model_follows_colour_and_direction_of_seen_prompts(pipe):
    results = prompt_following(pipe, training_combinations()[::2], num_inference_steps=STEPS)  # 24 prompts
    table = accuracy(results)
    assert table["colour"] >= FLOOR and table["direction"] >= FLOOR, accuracy_report(results)


def test_cyan_lora_teaches_a_colour_the_model_never_saw(pipe, caplog):
    """The LoRA's files, saved by the trainer, load with no unmatched keys and turn "cyan" prompts cyan; without it
    the base model, which never saw the word, does not."""
    cyan = all_combinations(colours=("cyan",))[::2]  # 6 prompts, every shape and direction
    before = accuracy(prompt_following(pipe, cyan, num_inference_steps=STEPS))
    with caplog.at_level(logging.WARNING):
        pipe.load_lora_weights(tiny_lora_path())
    assert not [record for record in caplog.records if "key" in record.getMessage().lower()], caplog.text
    results = prompt_following(pipe, cyan, num_inference_steps=STEPS)
    assert before["colour"] <= 0.2 and accuracy(results)["colour"] >= FLOOR, (before, accuracy_report(results))


def test_cyan_lora_in_the_original_key_format_gives_the_same_video(pipe):
    kwargs = dict(height=64, width=64, num_frames=17, num_inference_steps=2, output_type="latent")
    pipe.load_lora_weights(tiny_lora_path())
    expected = pipe("a cyan square moves right", generator=torch.Generator().manual_seed(0), **kwargs).frames
    pipe.unload_lora_weights()
    pipe.load_lora_weights(tiny_lora_path() / "lora_comfyui.safetensors")
    found = pipe("a cyan square moves right", generator=torch.Generator().manual_seed(0), **kwargs).frames
    torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-5)  # the same weights: float32 rounding
