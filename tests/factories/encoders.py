"""Tiny text and image encoders: random-weight umT5 / CLIP for pipeline tests, and the parity fixtures' converted ones.

- `tiny_tokenizer()`: the fixtures' small sentencepiece umT5 tokenizer (452 tokens, `</s>` appended, `<pad>` = 0).
- `tiny_text_encoder(text_dim)`: a 2-layer `UMT5EncoderModel` with random weights.
- `tiny_image_encoder(image_dim)`: a 2-layer `CLIPVisionModelWithProjection` (8 x 8 pixels, 4 x 4 patches: 5 tokens).
- `tiny_image_processor()`: the `CLIPImageProcessor` saved next to it (the pipelines do not use it).
- `parity_text_encoder()`, `parity_image_encoder()`: the fixtures' original T5 and CLIP checkpoints, converted with
  the package's key maps.
"""

import torch
from transformers import (
    AutoTokenizer,
    CLIPImageProcessor,
    CLIPVisionModelWithProjection,
    UMT5EncoderModel,
)

from wan_diffusers.conversion.image_encoder import IMAGE_ENCODER_RULES, image_encoder_config_from_shapes
from wan_diffusers.conversion.rules import rename_state_dict
from wan_diffusers.conversion.text_encoder import TEXT_ENCODER_RULES, text_encoder_config_from_shapes
from wan_diffusers.pipelines.demo import CLIP_IMAGE_SIZE, IMAGE_DIM, TEXT_DIM
from wan_diffusers.pipelines.demo import tiny_image_encoder as tiny_clip
from wan_diffusers.pipelines.demo import tiny_text_encoder as tiny_umt5

from factories.parity import COMPONENTS_DIR, manifest, original_component_state_dict

TOKENIZER_DIR = COMPONENTS_DIR / "google" / "umt5-xxl"


def tiny_tokenizer():
    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def tiny_text_encoder(text_dim: int = TEXT_DIM, seed: int = 0) -> UMT5EncoderModel:
    torch.manual_seed(seed)
    return tiny_umt5(vocab_size=512, d_model=text_dim)  # the tokenizer's 452 tokens fit


def tiny_image_encoder(image_dim: int = IMAGE_DIM, seed: int = 0) -> CLIPVisionModelWithProjection:
    torch.manual_seed(seed)
    return tiny_clip(hidden_size=image_dim, intermediate_size=2 * image_dim)


def tiny_image_processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(size={"shortest_edge": CLIP_IMAGE_SIZE}, crop_size=CLIP_IMAGE_SIZE)


def parity_text_encoder() -> UMT5EncoderModel:
    """The fixtures' umT5 (`components/models_t5_umt5-xxl-enc-bf16.pth`, float32 despite its name), converted."""
    original = original_component_state_dict("models_t5_umt5-xxl-enc-bf16.pth")
    config = text_encoder_config_from_shapes({key: tuple(value.shape) for key, value in original.items()})
    model = UMT5EncoderModel(config)
    result = model.load_state_dict(rename_state_dict(original, TEXT_ENCODER_RULES, what="T5"), strict=False)
    # `encoder.embed_tokens` is tied to `shared` and never stored separately
    if result.unexpected_keys or result.missing_keys != ["encoder.embed_tokens.weight"]:
        raise AssertionError(f"T5 conversion does not fit UMT5EncoderModel: {result}")
    return model.eval()


def parity_image_encoder() -> CLIPVisionModelWithProjection:
    """The fixtures' CLIP vision tower (`components/models_clip_...pth`), converted; 2 heads (not in the weights)."""
    original = original_component_state_dict("models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth")
    shapes = {key: tuple(value.shape) for key, value in original.items()}
    config = image_encoder_config_from_shapes(shapes, num_attention_heads=manifest("i2v")["clip_args"]["vision_heads"])
    model = CLIPVisionModelWithProjection(config)
    model.load_state_dict(rename_state_dict(original, IMAGE_ENCODER_RULES, what="CLIP"), strict=True)
    return model.eval()
