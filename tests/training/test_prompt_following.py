"""The shipped tiny shapes model follows its prompts, and the shipped cyan LoRA teaches it a new colour: the first
end-to-end checks of text conditioning, sampling and decoding together. Floors are loose (the benchmark,
`benchmarks/bench_prompt_following.py`, gives the real figures): they catch a broken pipeline, not a 5 % drift."""


from wan_diffusers import WanPipeline, tiny_lora_path, tiny_model_path
from wan_diffusers.training.evaluation import accuracy, prompt_following
from wan_diffusers.training.shapes import training_combinations

STEPS = 10  # half the default: faster, and still well above the floors


def test_tiny_model_loads_offline_and_follows_seen_prompts():
    pipe = WanPipeline.from_pretrained(tiny_model_path(), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    combinations = training_combinations()[::6]  # 8 seen combinations, every colour, shape and direction
    table = accuracy(prompt_following(pipe, combinations, num_inference_steps=STEPS))
    assert table["colour"] >= 0.8 and table["direction"] >= 0.8, table


def test_cyan_lora_teaches_a_new_colour():
    pipe = WanPipeline.from_pretrained(tiny_model_path(), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    combinations = [("cyan", "square", "right"), ("cyan", "circle", "down"), ("cyan", "triangle", "left")]
    before = prompt_following(pipe, combinations, num_inference_steps=STEPS)
    pipe.load_lora_weights(tiny_lora_path())
    after = prompt_following(pipe, combinations, num_inference_steps=STEPS)
    assert sum(result.found[0] == "cyan" for result in before) <= 1, before
    assert sum(result.found[0] == "cyan" for result in after) >= 2, after
