"""Prompt cleaning and default negative prompts, against the strings and token ids the original produced."""

import pytest
import torch

from wan_diffusers.pipelines.text import DEFAULT_NEGATIVE_PROMPTS, clean_prompt

from factories.encoders import tiny_tokenizer
from factories.parity import component_references, manifest


@pytest.mark.parity
def test_cleaning_and_token_ids_match_the_original():
    case = manifest("t2v")["t5_case"]
    cleaned = [clean_prompt(prompt) for prompt in case["prompts"]]
    assert cleaned == case["cleaned"]  # ftfy turns "，" into "," (keeps "。"), entities unescaped, spaces collapsed
    tokens = tiny_tokenizer()(cleaned, padding="max_length", max_length=512, truncation=True, return_tensors="pt")
    references = component_references("t2v")
    assert torch.equal(tokens.input_ids, references["t5.input_ids"])
    assert torch.equal(tokens.attention_mask, references["t5.attention_mask"])


@pytest.mark.parametrize("task", ["t2v", "i2v", "flf2v"])
def test_default_negative_prompts_are_the_original_ones(task):
    assert DEFAULT_NEGATIVE_PROMPTS[task] == manifest(task)["sampling"]["negative_prompt"]


def test_negative_prompts_of_the_other_tasks():
    assert DEFAULT_NEGATIVE_PROMPTS["v2v"] == DEFAULT_NEGATIVE_PROMPTS["vace"] == DEFAULT_NEGATIVE_PROMPTS["t2v"]
    assert DEFAULT_NEGATIVE_PROMPTS["flf2v"] == "镜头切换，" + DEFAULT_NEGATIVE_PROMPTS["i2v"]
    assert DEFAULT_NEGATIVE_PROMPTS["i2v"] == "镜头晃动，" + DEFAULT_NEGATIVE_PROMPTS["t2v"]


def test_cleaning_edge_cases():
    assert clean_prompt("  a\t\tb\n c  ") == "a b c"
    assert clean_prompt("&amp;lt;tag&amp;gt;") == "<tag>"  # unescaped twice
    assert clean_prompt("") == ""
