"""LoRA adapters for the Wan DiT: peft configuration, and saving in diffusers' and the original (ComfyUI) key format.

diffusers format (`pytorch_lora_weights.safetensors`): `transformer.blocks.0.attn1.to_q.lora_A.weight`, written by
`WanPipeline.save_lora_weights` and read by `pipe.load_lora_weights`.

Original / ComfyUI format (`*_comfyui.safetensors`): the original module names under `diffusion_model.` with
`lora_down` / `lora_up` and one `.alpha` scalar per module, as the LoRAs trained for the original Wan2.1 code are
published (diffusers' `_convert_non_diffusers_wan_lora_to_diffusers` reads them back).
"""

import re

import torch

# what `--lora-targets` names by default: every linear layer of attention and feed-forward in the blocks
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj", "ffn.net.0.proj", "ffn.net.2")

# Hub module name -> original module name, inside `blocks.N.` (`wan/modules/model.py`: WanAttentionBlock)
_ORIGINAL_BLOCK_MODULES = {
    "attn1.to_q": "self_attn.q",
    "attn1.to_k": "self_attn.k",
    "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q",
    "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "attn2.add_k_proj": "cross_attn.k_img",
    "attn2.add_v_proj": "cross_attn.v_img",
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
}
_LORA_KEY = re.compile(
    r"^(?:transformer\.)?(?P<prefix>(?:vace_)?blocks\.\d+)\.(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$"
)


def lora_config(rank: int, alpha: float | None = None, targets=DEFAULT_TARGETS, seed: int | None = None):
    """A peft `LoraConfig` for the DiT's blocks (`alpha` defaults to `rank`, i.e. scale 1)."""
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=list(targets), init_lora_weights=True)


def to_original_format(state_dict: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """A diffusers-format transformer LoRA -> original key format (`diffusion_model.blocks.0.self_attn.q.lora_down
    .weight`, `lora_up`, `.alpha`). Every key must map; anything else is an error naming it."""
    converted = {}
    for key, value in state_dict.items():
        match = _LORA_KEY.match(key)
        module = match and _ORIGINAL_BLOCK_MODULES.get(match["module"])
        if module is None:
            raise ValueError(
                f"LoRA key {key!r} has no original-format name (targets: {list(_ORIGINAL_BLOCK_MODULES)})"
            )
        base = f"diffusion_model.{match['prefix']}.{module}"
        converted[f"{base}.lora_{'down' if match['ab'] == 'A' else 'up'}.weight"] = value
        converted[f"{base}.alpha"] = torch.tensor(float(alpha))
    return converted


def save_lora(transformer, folder, alpha: float, state_dict=None) -> None:
    """Write `pytorch_lora_weights.safetensors` (diffusers) and `lora_comfyui.safetensors` (original keys) of the
    adapter in `transformer` (a diffusers model with a peft adapter) to `folder`.

    A LoRA of a Wan 2.2 low-noise expert is saved the same way and loaded with
    `pipe.load_lora_weights(folder, load_into_transformer_2=True)` (diffusers' convention)."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    from ..pipelines.pipeline_wan import WanPipeline

    layers = get_peft_model_state_dict(transformer, state_dict=state_dict)
    layers = {key: value.detach().to("cpu", torch.float32).contiguous() for key, value in layers.items()}
    WanPipeline.save_lora_weights(folder, transformer_lora_layers=layers, safe_serialization=True)
    save_file(to_original_format(layers, alpha), f"{folder}/lora_comfyui.safetensors")
