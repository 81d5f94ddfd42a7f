"""The shipped tiny shapes model and its LoRA, end to end: offline loading, text conditioning, sampling and decoding
read back by the shape detector. The model's prompt-following accuracy is measured by
`benchmarks/bench_prompt_following.py` (RESULTS.md); it is still close to chance after the 2,000 training steps the
shipped model had, so these tests check that the path works, not a quality floor."""

import logging

import torch

from wan_diffusers import WanPipeline, tiny_lora_path, tiny_model_path
from wan_diffusers.training.evaluation import prompt_following
from wan_diffusers.training.shapes import training_combinations

STEPS = 10  # half the default: fast, and enough to draw a shape


def test_tiny_model_loads_offline_and_draws_a_moving_shape():
    pipe = WanPipeline.from_pretrained(tiny_model_path(), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    results = prompt_following(pipe, training_combinations()[::12], num_inference_steps=STEPS)  # 4 seen prompts
    assert all(result.found[0] is not None and result.found[1] is not None for result in results), results
    assert sum(result.found[2] is not None for result in results) >= 2, results  # it moves


def test_shipped_lora_loads_with_no_unmatched_keys_and_changes_the_output(caplog):
    pipe = WanPipeline.from_pretrained(tiny_model_path(), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(height=64, width=64, num_frames=17, num_inference_steps=2, output_type="latent")
    before = pipe("a cyan square moves right", generator=torch.Generator().manual_seed(0), **kwargs).frames
    with caplog.at_level(logging.WARNING):
        pipe.load_lora_weights(tiny_lora_path())
    assert not [record for record in caplog.records if "key" in record.getMessage().lower()], caplog.text
    after = pipe("a cyan square moves right", generator=torch.Generator().manual_seed(0), **kwargs).frames
    assert (after - before).abs().max() > 1e-3
