"""Key map of the Wan 2.1 DiT: original `WanModel` / `VaceWanModel` keys -> diffusers' Hub layout.

One map serves every variant (T2V, I2V, FLF2V, VACE): a key of a variant that lacks a module simply never occurs.
The original block applies `norm3` (affine) before cross-attention and `norm2` (no parameters) before the FFN; the
Hub format calls the affine cross-attention norm `norm2`, so `norm3` becomes `norm2` and the original `norm2` has no
key at all.
"""

import re

from .rules import ConversionError, Rule

# Keys inside one block; the VACE hint blocks have the same body, so both prefixes share these rules.
_BLOCK = r"(?P<block>(?:vace_)?blocks\.\d+)"
_WB = r"(?P<param>weight|bias)"

TRANSFORMER_RULES: tuple[Rule, ...] = (
    # embeddings
    Rule(rf"patch_embedding\.{_WB}", r"patch_embedding.\g<param>"),
    Rule(rf"vace_patch_embedding\.{_WB}", r"vace_patch_embedding.\g<param>"),
    Rule(rf"text_embedding\.0\.{_WB}", r"condition_embedder.text_embedder.linear_1.\g<param>"),
    Rule(rf"text_embedding\.2\.{_WB}", r"condition_embedder.text_embedder.linear_2.\g<param>"),
    Rule(rf"time_embedding\.0\.{_WB}", r"condition_embedder.time_embedder.linear_1.\g<param>"),
    Rule(rf"time_embedding\.2\.{_WB}", r"condition_embedder.time_embedder.linear_2.\g<param>"),
    Rule(rf"time_projection\.1\.{_WB}", r"condition_embedder.time_proj.\g<param>"),
    # CLIP image tokens (I2V, FLF2V): LayerNorm -> Linear -> GELU -> Linear -> LayerNorm, plus FLF2V's positions
    Rule(rf"img_emb\.proj\.0\.{_WB}", r"condition_embedder.image_embedder.norm1.\g<param>"),
    Rule(rf"img_emb\.proj\.1\.{_WB}", r"condition_embedder.image_embedder.ff.net.0.proj.\g<param>"),
    Rule(rf"img_emb\.proj\.3\.{_WB}", r"condition_embedder.image_embedder.ff.net.2.\g<param>"),
    Rule(rf"img_emb\.proj\.4\.{_WB}", r"condition_embedder.image_embedder.norm2.\g<param>"),
    Rule(r"img_emb\.emb_pos", r"condition_embedder.image_embedder.pos_embed"),
    # transformer blocks (and VACE hint blocks)
    Rule(rf"{_BLOCK}\.modulation", r"\g<block>.scale_shift_table"),
    Rule(rf"{_BLOCK}\.self_attn\.(?P<proj>[qkv])\.{_WB}", r"\g<block>.attn1.to_\g<proj>.\g<param>"),
    Rule(rf"{_BLOCK}\.self_attn\.o\.{_WB}", r"\g<block>.attn1.to_out.0.\g<param>"),
    Rule(rf"{_BLOCK}\.self_attn\.(?P<norm>norm_[qk])\.weight", r"\g<block>.attn1.\g<norm>.weight"),
    Rule(rf"{_BLOCK}\.norm3\.{_WB}", r"\g<block>.norm2.\g<param>"),
    Rule(rf"{_BLOCK}\.cross_attn\.(?P<proj>[qkv])\.{_WB}", r"\g<block>.attn2.to_\g<proj>.\g<param>"),
    Rule(rf"{_BLOCK}\.cross_attn\.o\.{_WB}", r"\g<block>.attn2.to_out.0.\g<param>"),
    Rule(rf"{_BLOCK}\.cross_attn\.(?P<norm>norm_[qk])\.weight", r"\g<block>.attn2.\g<norm>.weight"),
    Rule(rf"{_BLOCK}\.cross_attn\.(?P<proj>[kv])_img\.{_WB}", r"\g<block>.attn2.add_\g<proj>_proj.\g<param>"),
    Rule(rf"{_BLOCK}\.cross_attn\.norm_k_img\.weight", r"\g<block>.attn2.norm_added_k.weight"),
    Rule(rf"{_BLOCK}\.ffn\.0\.{_WB}", r"\g<block>.ffn.net.0.proj.\g<param>"),
    Rule(rf"{_BLOCK}\.ffn\.2\.{_WB}", r"\g<block>.ffn.net.2.\g<param>"),
    # VACE: block 0 projects the patch-embedded control input in, every hint block projects its hint out
    Rule(rf"vace_blocks\.0\.before_proj\.{_WB}", r"vace_blocks.0.proj_in.\g<param>"),
    Rule(rf"vace_blocks\.(?P<index>\d+)\.after_proj\.{_WB}", r"vace_blocks.\g<index>.proj_out.\g<param>"),
    # output head
    Rule(r"head\.modulation", r"scale_shift_table"),
    Rule(rf"head\.head\.{_WB}", r"proj_out.\g<param>"),
)


def transformer_config_from_original(
    original_config: dict, shapes: dict[str, tuple[int, ...]], *, image_dim: int | None = None
) -> dict:
    """Diffusers config of a DiT from the release's `config.json` and the weight shapes.

    `config.json` gives the sizes the original constructor saved; what it lacks is read from the weights: the text
    width (`text_embedding.0.weight`, 4096 in every release), the CLIP width (`img_emb.proj.0.weight`, 1280), the
    FLF2V position table (`img_emb.emb_pos`, 2 x 257 rows) and the VACE input channels.
    """
    dim, num_heads = original_config["dim"], original_config["num_heads"]
    if dim % num_heads:
        raise ValueError(f"`dim` ({dim}) must be divisible by `num_heads` ({num_heads}) in the DiT config.json")
    has_image = "img_emb.proj.0.weight" in shapes
    config = {
        "patch_size": [1, 2, 2],
        "num_attention_heads": num_heads,
        "attention_head_dim": dim // num_heads,
        "in_channels": original_config["in_dim"],
        "out_channels": original_config["out_dim"],
        "text_dim": shapes["text_embedding.0.weight"][1],
        "freq_dim": original_config["freq_dim"],
        "ffn_dim": original_config["ffn_dim"],
        "num_layers": original_config["num_layers"],
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": original_config["eps"],
        "image_dim": (image_dim or shapes["img_emb.proj.0.weight"][0]) if has_image else None,
        "added_kv_proj_dim": dim if has_image else None,
        "rope_max_seq_len": 1024,
        "pos_embed_seq_len": shapes["img_emb.emb_pos"][1] if "img_emb.emb_pos" in shapes else None,
    }
    if "vace_patch_embedding.weight" in shapes:
        config["vace_layers"] = _vace_layers(original_config, shapes)
        config["vace_in_channels"] = shapes["vace_patch_embedding.weight"][1]
    return config


def _vace_layers(original_config: dict, shapes: dict[str, tuple[int, ...]]) -> list[int]:
    """The blocks that receive a VACE hint: config.json's `vace_layers`, else `VaceWanModel`'s default (every second
    block: 0, 2, 4, ...). Either way there must be one hint block (`vace_blocks.{j}`) per entry."""
    num_hint_blocks = len({m.group(1) for key in shapes if (m := re.match(r"vace_blocks\.(\d+)\.", key))})
    vace_layers = original_config.get("vace_layers")
    if vace_layers is None:
        vace_layers = list(range(0, original_config["num_layers"], 2))
        source = "the original default (every second block), as config.json has no `vace_layers`"
    else:
        source = "config.json's `vace_layers`"
    if len(vace_layers) != num_hint_blocks:
        raise ConversionError(
            f"The DiT weights have {num_hint_blocks} VACE hint blocks, but {source} lists {len(vace_layers)} layers "
            f"({list(vace_layers)}); set `vace_layers` in config.json to the {num_hint_blocks} blocks they feed"
        )
    return list(vace_layers)
