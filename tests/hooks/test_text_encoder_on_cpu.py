"""The text-encoder-on-CPU hook: it takes a module back from accelerate's offloading, keeps its result, marks it."""

import torch
from accelerate import cpu_offload

from wan_diffusers.hooks.text_encoder_on_cpu import (
    apply_text_encoder_on_cpu,
    is_kept_on_cpu,
    remove_text_encoder_on_cpu,
)

from factories.encoders import tiny_text_encoder


def encode(text_encoder) -> torch.Tensor:
    input_ids = torch.tensor([[5, 9, 3, 1]])
    with torch.no_grad():
        return text_encoder(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).last_hidden_state


def test_the_hook_undoes_offloading_and_keeps_the_result():
    text_encoder = tiny_text_encoder()
    expected = encode(text_encoder)
    cpu_offload(text_encoder, execution_device="cpu")  # weights go to the meta device, hooks on every layer
    assert text_encoder.shared.weight.device.type == "meta"
    apply_text_encoder_on_cpu(text_encoder)
    assert is_kept_on_cpu(text_encoder)
    assert not any(hasattr(module, "_hf_hook") for module in text_encoder.modules())
    assert all(parameter.device.type == "cpu" for parameter in text_encoder.parameters())
    assert torch.equal(encode(text_encoder), expected)  # the same weights, the same computation

    apply_text_encoder_on_cpu(text_encoder)  # applying again changes nothing
    assert torch.equal(encode(text_encoder), expected)
    remove_text_encoder_on_cpu(text_encoder)
    assert not is_kept_on_cpu(text_encoder) and not is_kept_on_cpu(None)
    assert torch.equal(encode(text_encoder), expected)
