"""The CLIP image encoder's key map and config (conversion/image_encoder.py); parity after conversion is tested on the
converted repos in test_convert.py."""

import pytest
import torch
from transformers import CLIPVisionModelWithProjection

from wan_diffusers.conversion.image_encoder import (
    IMAGE_ENCODER_RULES,
    image_encoder_config_from_shapes,
    image_processor_for,
)
from wan_diffusers.conversion.rules import ConversionError, check_state_dict, rename_state_dict

from factories.original_release import TINY_CLIP_NUM_HEADS
from factories.parity import manifest, original_component_state_dict

CLIP = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"


def released_vit_h_14_shapes() -> dict[str, tuple[int, ...]]:
    """The vision-tower shapes of the released CLIP checkpoint (`clip_xlm_roberta_vit_h_14` in the original `wan/modules/clip.py`)."""
    shapes = {
        "visual.patch_embedding.weight": (1280, 3, 14, 14),
        "visual.cls_embedding": (1, 1, 1280),
        "visual.pos_embedding": (1, 257, 1280),
        "visual.head": (1280, 1024),
    }
    for i in range(32):
        shapes |= {
            f"visual.transformer.{i}.mlp.0.weight": (5120, 1280),
            f"visual.transformer.{i}.mlp.2.weight": (1280, 5120),
        }
    return shapes


def tiny_shapes() -> dict[str, tuple[int, ...]]:
    return {key: tuple(t.shape) for key, t in original_component_state_dict(CLIP).items()}


def test_config_of_the_tiny_tower_is_read_from_its_weights():
    config = image_encoder_config_from_shapes(tiny_shapes(), num_attention_heads=TINY_CLIP_NUM_HEADS)
    args = manifest("i2v")["clip_args"]
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (
        args["vision_dim"],
        args["vision_layers"],
        args["vision_heads"],
    )
    assert (config.image_size, config.patch_size, config.projection_dim) == (
        args["image_size"],
        args["patch_size"],
        args["embed_dim"],
    )
    assert config.intermediate_size == args["vision_dim"] * args["vision_mlp_ratio"]
    assert (config.hidden_act, config.layer_norm_eps) == ("gelu", 1e-5)  # exact GELU, not CLIP's quick_gelu


def test_config_of_the_released_tower_is_vit_h_14():
    """The `image_encoder/config.json` values of the official Wan2.1 I2V Diffusers repos (e.g.
    Wan-AI/Wan2.1-I2V-14B-480P-Diffusers on the Hub)."""
    config = image_encoder_config_from_shapes(released_vit_h_14_shapes())
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (1280, 32, 16)
    assert (config.image_size, config.patch_size, config.intermediate_size, config.projection_dim) == (
        224,
        14,
        5120,
        1024,
    )
    assert image_processor_for(config).size == {"height": 224, "width": 224}


def test_every_vision_key_maps_and_the_text_tower_is_dropped():
    state_dict = original_component_state_dict(CLIP)
    converted = rename_state_dict(state_dict, IMAGE_ENCODER_RULES, what="CLIP")
    config = image_encoder_config_from_shapes(tiny_shapes(), num_attention_heads=TINY_CLIP_NUM_HEADS)
    model = CLIPVisionModelWithProjection(config)
    check_state_dict(converted, {key: t.shape for key, t in model.state_dict().items()}, what="CLIP")
    assert not any(key.startswith("textual.") or key == "log_scale" for key in converted)
    qkv = state_dict["visual.transformer.1.attn.to_qkv.weight"]
    assert torch.equal(converted["vision_model.encoder.layers.1.self_attn.k_proj.weight"], qkv[32:64])
    assert torch.equal(converted["visual_projection.weight"], state_dict["visual.head"].t())


def test_heads_are_needed_for_an_unreleased_width_and_must_divide_it():
    with pytest.raises(ValueError, match="`clip_num_heads` must be given for a CLIP vision tower of width 32"):
        image_encoder_config_from_shapes(tiny_shapes())
    with pytest.raises(ValueError, match="`clip_num_heads` must be a positive divisor of the CLIP width 1280, got 12"):
        image_encoder_config_from_shapes(released_vit_h_14_shapes(), num_attention_heads=12)


def test_a_non_square_patch_grid_is_refused():
    shapes = released_vit_h_14_shapes() | {"visual.pos_embedding": (1, 200, 1280)}
    with pytest.raises(ConversionError, match="200 rows; expected a class token plus a square grid"):
        image_encoder_config_from_shapes(shapes)
