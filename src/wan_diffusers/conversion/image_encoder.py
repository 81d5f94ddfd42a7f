"""Key map and config of the image encoder: the open-clip XLM-R ViT-H/14 `.pth` -> transformers CLIP vision model.

The release ships the whole CLIP (vision tower, XLM-RoBERTa text tower, logit scale); Wan only runs the vision
tower, and uses the hidden state after its second-to-last block (no final norm, no projection), which is
`hidden_states[-2]` of transformers' `CLIPVisionModelWithProjection`. The whole vision tower is converted, with its
last block, final norm and projection, so the result is a complete CLIP vision model, the class and layout of
the `image_encoder/` of diffusers' official Wan I2V repos. The text tower is consumed on purpose and dropped.

Sizes come from the weights (width, patch size, token count -> image size, MLP width, depth, projection width),
except the number of attention heads, which no weight shape shows: it is 16 for the released width-1280 tower, and
must be given for any other width.
"""

import math
import re

from transformers import CLIPVisionConfig

from ..pipelines.image_processing import CLIP_MEAN, CLIP_STD
from .rules import ConversionError, Rule, require_keys

# 16 heads of 80 channels in the released ViT-H/14 (`clip_xlm_roberta_vit_h_14(vision_heads=16)`)
RELEASED_NUM_HEADS = {1280: 16}

_I = r"(?P<i>\d+)"
_WB = r"(?P<param>weight|bias)"
_LAYER = r"vision_model.encoder.layers.\g<i>"


def _split_qkv(tensor):
    return tuple(tensor.chunk(3, dim=0))  # stacked q | k | v along the output dimension


IMAGE_ENCODER_RULES: tuple[Rule, ...] = (
    Rule(r"visual\.patch_embedding\.weight", "vision_model.embeddings.patch_embedding.weight"),
    Rule(r"visual\.cls_embedding", "vision_model.embeddings.class_embedding", lambda t: t.reshape(-1)),  # [1,1,W]
    Rule(r"visual\.pos_embedding", "vision_model.embeddings.position_embedding.weight", lambda t: t[0]),  # [1,T,W]
    Rule(rf"visual\.pre_norm\.{_WB}", r"vision_model.pre_layrnorm.\g<param>"),
    Rule(rf"visual\.transformer\.{_I}\.norm1\.{_WB}", rf"{_LAYER}.layer_norm1.\g<param>"),
    Rule(rf"visual\.transformer\.{_I}\.norm2\.{_WB}", rf"{_LAYER}.layer_norm2.\g<param>"),
    Rule(
        rf"visual\.transformer\.{_I}\.attn\.to_qkv\.{_WB}",
        tuple(rf"{_LAYER}.self_attn.{proj}_proj.\g<param>" for proj in "qkv"),
        _split_qkv,
    ),
    Rule(rf"visual\.transformer\.{_I}\.attn\.proj\.{_WB}", rf"{_LAYER}.self_attn.out_proj.\g<param>"),
    Rule(rf"visual\.transformer\.{_I}\.mlp\.0\.{_WB}", rf"{_LAYER}.mlp.fc1.\g<param>"),
    Rule(rf"visual\.transformer\.{_I}\.mlp\.2\.{_WB}", rf"{_LAYER}.mlp.fc2.\g<param>"),
    Rule(rf"visual\.post_norm\.{_WB}", r"vision_model.post_layernorm.\g<param>"),
    # the original applies `x @ head`; a Linear stores the transpose
    Rule(r"visual\.head", "visual_projection.weight", lambda t: t.t()),
    # The XLM-RoBERTa text tower and the contrastive logit scale: Wan never runs them (I2V encodes images only).
    Rule(r"textual\..+", None),
    Rule(r"log_scale", None),
)


def image_encoder_config_from_shapes(
    shapes: dict[str, tuple[int, ...]], *, num_attention_heads: int | None = None
) -> CLIPVisionConfig:
    """The `CLIPVisionConfig` of the release's CLIP vision tower, from its weight shapes.

    `num_attention_heads` is not visible in any shape: by default the released value (16 for width 1280);
    required for other widths.
    """
    needed = ("visual.patch_embedding.weight", "visual.pos_embedding", "visual.transformer.0.mlp.0.weight")
    require_keys(
        shapes, (*needed, "visual.head"), what="the CLIP checkpoint is not the open-clip ViT Wan 2.1 releases"
    )
    hidden_size, num_channels, _, patch_size = shapes["visual.patch_embedding.weight"]
    num_tokens = shapes["visual.pos_embedding"][1]
    grid = math.isqrt(num_tokens - 1)
    if grid * grid != num_tokens - 1:
        raise ConversionError(
            f"The CLIP position table has {num_tokens} rows; expected a class token plus a square grid of patches"
        )
    if num_attention_heads is None:
        if hidden_size not in RELEASED_NUM_HEADS:
            raise ValueError(
                f"`clip_num_heads` must be given for a CLIP vision tower of width {hidden_size}: the number of "
                f"attention heads is not stored in the weights (the released width-1280 tower has 16)"
            )
        num_attention_heads = RELEASED_NUM_HEADS[hidden_size]
    if num_attention_heads <= 0 or hidden_size % num_attention_heads:
        raise ValueError(
            f"`clip_num_heads` must be a positive divisor of the CLIP width {hidden_size}, got {num_attention_heads}"
        )
    num_layers = 1 + max(int(m.group(1)) for key in shapes if (m := re.match(r"visual\.transformer\.(\d+)\.", key)))
    config = CLIPVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=shapes["visual.transformer.0.mlp.0.weight"][0],
        projection_dim=shapes["visual.head"][1],
        num_hidden_layers=num_layers,
        num_attention_heads=num_attention_heads,
        num_channels=num_channels,
        image_size=grid * patch_size,
        patch_size=patch_size,
        hidden_act="gelu",  # exact GELU (open-clip's default), not CLIP's quick_gelu
        layer_norm_eps=1e-5,
    )
    config.architectures = ["CLIPVisionModelWithProjection"]
    return config


def image_processor_for(config: CLIPVisionConfig):
    """Preprocessing settings closest to the original's: the whole image squashed to the tower's input size.

    The original resizes the full image to image_size x image_size (bicubic, aspect ratio not kept, no crop) and
    normalises with the OpenAI CLIP constants. This records the same size and constants, with no centre crop.
    (The official Diffusers repos instead resize the short side and centre-crop, which changes the features of
    non-square images completely.) wan-diffusers' pipelines read the size from the image encoder's config and
    apply the original torch preprocessing.
    """
    from transformers import CLIPImageProcessor  # imported here: transformers 5 warns when torchvision is absent

    size = {"height": config.image_size, "width": config.image_size}
    return CLIPImageProcessor(
        do_resize=True,
        size=size,
        resample=3,  # bicubic
        do_center_crop=False,
        crop_size=size,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        do_convert_rgb=True,
    )
