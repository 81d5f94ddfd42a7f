"""Key maps of the Wan VAEs: original `WanVAE_` keys (`Wan2.1_VAE.pth`, `Wan2.2_VAE.pth`) -> diffusers' Hub layout.

The original keeps the layers of a residual block in one `nn.Sequential` (`residual.0` norm, `.2` conv, `.3` norm,
`.6` conv), the encoder's and the decoder's stages in flat lists (`downsamples.N`, `upsamples.N`) and calls the
bottleneck `middle` and the output layers `head`; the Hub format names them. The encoder's flat list keeps its
indices (`down_blocks.N`); the decoder's flat list is regrouped into stages: with 2 residual blocks per encoder
stage, each decoder stage holds 3 residual blocks and an upsampler, so `upsamples.{4s + j}` becomes
`up_blocks.{s}.resnets.{j}` for j < 3 and `up_blocks.{s}.upsamplers.0` for j = 3 (the last stage has no upsampler).
The two 1x1x1 convolutions around the latent are `conv1` -> `quant_conv` and `conv2` -> `post_quant_conv`.

The Wan 2.2 VAE (`wan/modules/vae2_2.py`) nests its stages instead: `encoder.downsamples.{s}.downsamples.{j}` is
residual block j of encoder stage s (`down_blocks.{s}.resnets.{j}`), or its downsampler after the last residual
block (`down_blocks.{s}.downsampler`); `decoder.upsamples.{s}.upsamples.{j}` likewise becomes
`up_blocks.{s}.resnets.{j}` or `up_blocks.{s}.upsampler` (singular, unlike Wan 2.1's `upsamplers.0`). The stages'
shortcuts have no weights. Everything else is named as in Wan 2.1.
"""

import re
from collections.abc import Mapping

import torch

from ..models.autoencoder_kl_wan import (
    WAN21_LATENTS_MEAN,
    WAN21_LATENTS_STD,
    WAN22_LATENTS_MEAN,
    WAN22_LATENTS_STD,
)
from .rules import ConversionError, Rule, rename_state_dict, require_keys

_WB = r"(?P<param>weight|bias)"

# The layers inside each kind of block: (original pattern, Hub name), relative to the block.
_RESIDUAL_BLOCK = (
    (r"residual\.0\.gamma", "norm1.gamma"),
    (rf"residual\.2\.{_WB}", r"conv1.\g<param>"),
    (r"residual\.3\.gamma", "norm2.gamma"),
    (rf"residual\.6\.{_WB}", r"conv2.\g<param>"),
    (rf"shortcut\.{_WB}", r"conv_shortcut.\g<param>"),
)
_ATTENTION_BLOCK = (
    (r"norm\.gamma", "norm.gamma"),
    (rf"to_qkv\.{_WB}", r"to_qkv.\g<param>"),
    (rf"proj\.{_WB}", r"proj.\g<param>"),
)
_RESAMPLE = (
    (rf"resample\.1\.{_WB}", r"resample.1.\g<param>"),
    (rf"time_conv\.{_WB}", r"time_conv.\g<param>"),
)


def _block_rules(original_prefix: str, hub_prefix: str, layers: tuple[tuple[str, str], ...]) -> tuple[Rule, ...]:
    """One rule per layer of a block found at `original_prefix` (a regex) that moves to `hub_prefix`."""
    return tuple(Rule(rf"{original_prefix}\.{pattern}", rf"{hub_prefix}.{target}") for pattern, target in layers)


def vae_rules(num_res_blocks: int = 2, num_stages: int = 4, is_residual: bool = False) -> tuple[Rule, ...]:
    """The key map for a VAE with `num_res_blocks` residual blocks per encoder stage and `num_stages` stages
    (`len(dim_mult)`): Wan 2.1's, or Wan 2.2's with `is_residual` (the config's). The released VAEs (and
    `VAE_RULES`) have 2 and 4."""
    rules = [
        Rule(rf"conv1\.{_WB}", r"quant_conv.\g<param>"),
        Rule(rf"conv2\.{_WB}", r"post_quant_conv.\g<param>"),
    ]
    for part in ("encoder", "decoder"):
        rules += [
            Rule(rf"{part}\.conv1\.{_WB}", rf"{part}.conv_in.\g<param>"),
            *_block_rules(rf"{part}\.middle\.0", f"{part}.mid_block.resnets.0", _RESIDUAL_BLOCK),
            *_block_rules(rf"{part}\.middle\.1", f"{part}.mid_block.attentions.0", _ATTENTION_BLOCK),
            *_block_rules(rf"{part}\.middle\.2", f"{part}.mid_block.resnets.1", _RESIDUAL_BLOCK),
            Rule(rf"{part}\.head\.0\.gamma", f"{part}.norm_out.gamma"),
            Rule(rf"{part}\.head\.2\.{_WB}", rf"{part}.conv_out.\g<param>"),
        ]
    if is_residual:
        return (*rules, *_wan22_stage_rules(num_res_blocks, num_stages))
    # encoder: the flat list keeps its indices; an entry is a residual block or a resampler
    encoder_entry = r"encoder\.downsamples\.(?P<index>\d+)"
    rules += _block_rules(encoder_entry, r"encoder.down_blocks.\g<index>", _RESIDUAL_BLOCK + _RESAMPLE)
    # decoder: regroup the flat list into stages of (num_res_blocks + 1) residual blocks and one upsampler
    entries_per_stage = num_res_blocks + 2
    for stage in range(num_stages):
        for position in range(num_res_blocks + 1):
            original = rf"decoder\.upsamples\.{stage * entries_per_stage + position}"
            rules += _block_rules(original, f"decoder.up_blocks.{stage}.resnets.{position}", _RESIDUAL_BLOCK)
        if stage < num_stages - 1:
            original = rf"decoder\.upsamples\.{stage * entries_per_stage + num_res_blocks + 1}"
            rules += _block_rules(original, f"decoder.up_blocks.{stage}.upsamplers.0", _RESAMPLE)
    return tuple(rules)


def _wan22_stage_rules(num_res_blocks: int, num_stages: int) -> list[Rule]:
    """The nested stages of the Wan 2.2 VAE: per stage, its residual blocks, then its resampler (not in the last)."""
    rules = []
    for stage in range(num_stages):
        for part, original, hub, resampler, blocks in (
            ("encoder", "downsamples", "down_blocks", "downsampler", num_res_blocks),
            ("decoder", "upsamples", "up_blocks", "upsampler", num_res_blocks + 1),
        ):
            entry = rf"{part}\.{original}\.{stage}\.{original}"
            for position in range(blocks):
                rules += _block_rules(
                    rf"{entry}\.{position}", f"{part}.{hub}.{stage}.resnets.{position}", _RESIDUAL_BLOCK
                )
            if stage < num_stages - 1:
                rules += _block_rules(rf"{entry}\.{blocks}", f"{part}.{hub}.{stage}.{resampler}", _RESAMPLE)
    return rules


VAE_RULES: tuple[Rule, ...] = vae_rules()


def vae_config_from_original(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    """Diffusers config of a Wan 2.1 or Wan 2.2 VAE, read from the shapes of its original weights (`key -> shape`).

    The releases store no config (the original hard-codes it in `_video_vae`); everything follows from the weights:
    the base width from `encoder.conv1` (96 released for Wan 2.1), the latent channels from `conv2` (16), the stages
    from the encoder's flat list (resamplers separate the stages; a resampler with a `time_conv` also halves the
    frame rate), the stage widths from each stage's last residual block. `latents_mean` / `latents_std` are the
    Wan 2.1 constants. A Wan 2.2 VAE (nested stages) is read by `_wan22_config_from_original`.
    """
    required = ("encoder.conv1.weight", "conv2.weight", "decoder.head.2.weight")
    missing = [key for key in required if key not in shapes]
    if missing:
        raise ConversionError(f"Not a Wan VAE checkpoint: missing {missing}")
    if any(_WAN22_ENCODER_ENTRY.fullmatch(key) for key in shapes):
        return _wan22_config_from_original(shapes)
    base_dim, in_channels = shapes["encoder.conv1.weight"][:2]
    z_dim = shapes["conv2.weight"][0]
    out_channels = shapes["decoder.head.2.weight"][0]

    # the encoder's flat list: residual blocks (with a `residual.2` conv) and resamplers (with `resample.1`)
    entry = re.compile(r"encoder\.downsamples\.(\d+)\.(residual\.2|resample\.1)\.weight")
    entries = sorted((int(m[1]), m[2]) for key in shapes if (m := entry.fullmatch(key)))
    stages: list[list[int]] = [[]]  # residual block indices per stage
    temperal_downsample = []
    for index, kind in entries:
        if kind == "resample.1":
            temperal_downsample.append(f"encoder.downsamples.{index}.time_conv.weight" in shapes)
            stages.append([])
        else:
            stages[-1].append(index)
    num_res_blocks = len(stages[0])
    if num_res_blocks == 0 or any(len(stage) != num_res_blocks for stage in stages):
        raise ConversionError(
            "Not a Wan 2.1 VAE checkpoint: the encoder stages must all hold the same number of residual blocks, "
            f"found {[len(stage) for stage in stages]}"
        )
    stage_widths = [shapes[f"encoder.downsamples.{stage[-1]}.residual.6.weight"][0] for stage in stages]
    if any(width % base_dim for width in stage_widths):
        raise ConversionError(f"Stage widths {stage_widths} are not multiples of the base width {base_dim}")
    if z_dim != len(WAN21_LATENTS_MEAN):
        raise ConversionError(
            f"A Wan 2.1 VAE has {len(WAN21_LATENTS_MEAN)} latent channels (`conv2.weight`), got {z_dim}: no latent "
            "normalisation constants are known for it"
        )
    return {
        "base_dim": base_dim,
        "decoder_base_dim": None,
        "z_dim": z_dim,
        "dim_mult": [width // base_dim for width in stage_widths],
        "num_res_blocks": num_res_blocks,
        "attn_scales": [],
        "temperal_downsample": temperal_downsample,
        "dropout": 0.0,
        "latents_mean": list(WAN21_LATENTS_MEAN),
        "latents_std": list(WAN21_LATENTS_STD),
        "is_residual": False,
        "in_channels": in_channels,
        "out_channels": out_channels,
        "patch_size": None,
        "scale_factor_temporal": 2 ** sum(temperal_downsample),
        "scale_factor_spatial": 2 ** (len(stage_widths) - 1),
    }


# an entry of a Wan 2.2 encoder stage: `encoder.downsamples.{stage}.downsamples.{position}.<layer>`
_WAN22_ENCODER_ENTRY = re.compile(
    r"encoder\.downsamples\.(\d+)\.downsamples\.(\d+)\.(residual\.2|resample\.1)\.weight"
)
# `WanVAE_.encode` / `.decode` in `wan/modules/vae2_2.py` (un)patchify with a fixed patch size
_WAN22_PATCH_SIZE = 2


def _wan22_config_from_original(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    """Diffusers config of a Wan 2.2 VAE (`Wan2.2_VAE.pth`) from the shapes of its original weights.

    As for Wan 2.1, plus: the decoder's base width from `decoder.conv1` divided by the last width multiplier (256
    released, where the encoder's is 160: `Wan2_2_VAE` never passes `dec_dim`, so `WanVAE_`'s default applies), the
    patchify (in / out channels 12 = 3 x 2 x 2) and the 48 Wan 2.2 normalisation constants.
    """
    stages: dict[int, dict[int, str]] = {}  # stage -> position -> residual.2 | resample.1
    for key in shapes:
        if m := _WAN22_ENCODER_ENTRY.fullmatch(key):
            stages.setdefault(int(m[1]), {})[int(m[2])] = m[3]
    num_stages = len(stages)
    residual_counts = [sum(kind == "residual.2" for kind in stages[stage].values()) for stage in sorted(stages)]
    num_res_blocks = residual_counts[0]
    if sorted(stages) != list(range(num_stages)) or any(count != num_res_blocks for count in residual_counts):
        raise ConversionError(
            f"Not a Wan 2.2 VAE checkpoint: the encoder stages must be numbered from 0 and all hold the same number "
            f"of residual blocks, found stages {sorted(stages)} with {residual_counts}"
        )
    temperal_downsample = [
        f"encoder.downsamples.{stage}.downsamples.{num_res_blocks}.time_conv.weight" in shapes
        for stage in range(num_stages - 1)
    ]
    base_dim, in_channels = shapes["encoder.conv1.weight"][:2]
    last_convs = [
        f"encoder.downsamples.{stage}.downsamples.{num_res_blocks - 1}.residual.6.weight" for stage in stages
    ]
    require_keys(shapes, [*last_convs, "decoder.conv1.weight"], what="the checkpoint is not a complete Wan 2.2 VAE")
    stage_widths = [shapes[key][0] for key in last_convs]
    if any(width % base_dim for width in stage_widths):
        raise ConversionError(f"Stage widths {stage_widths} are not multiples of the base width {base_dim}")
    dim_mult = [width // base_dim for width in stage_widths]
    decoder_base_dim = shapes["decoder.conv1.weight"][0] // dim_mult[-1]
    z_dim = shapes["conv2.weight"][0]
    out_channels = shapes["decoder.head.2.weight"][0]
    video_channels = 3 * _WAN22_PATCH_SIZE**2
    if in_channels != video_channels or out_channels != video_channels:
        raise ConversionError(
            f"A Wan 2.2 VAE encodes and decodes 3 x {_WAN22_PATCH_SIZE} x {_WAN22_PATCH_SIZE} = {video_channels} "
            f"patchified channels (`encoder.conv1.weight`, `decoder.head.2.weight`), got {in_channels} and "
            f"{out_channels}"
        )
    if z_dim != len(WAN22_LATENTS_MEAN):
        raise ConversionError(
            f"A Wan 2.2 VAE has {len(WAN22_LATENTS_MEAN)} latent channels (`conv2.weight`), got {z_dim}: no latent "
            "normalisation constants are known for it"
        )
    return {
        "base_dim": base_dim,
        "decoder_base_dim": decoder_base_dim,
        "z_dim": z_dim,
        "dim_mult": dim_mult,
        "num_res_blocks": num_res_blocks,
        "attn_scales": [],
        "temperal_downsample": temperal_downsample,
        "dropout": 0.0,
        "latents_mean": list(WAN22_LATENTS_MEAN),
        "latents_std": list(WAN22_LATENTS_STD),
        "is_residual": True,
        "in_channels": in_channels,
        "out_channels": out_channels,
        "patch_size": _WAN22_PATCH_SIZE,
        "scale_factor_temporal": 2 ** sum(temperal_downsample),
        "scale_factor_spatial": _WAN22_PATCH_SIZE * 2 ** (num_stages - 1),
    }


def _version(config: Mapping) -> str:
    return "Wan 2.2 VAE" if config["is_residual"] else "Wan 2.1 VAE"


def convert_vae_state_dict(state_dict: Mapping[str, torch.Tensor], config: dict | None = None) -> dict:
    """Rename an original VAE state dict (Wan 2.1 or 2.2) to the Hub layout (tensors are not copied).

    `config` (from `vae_config_from_original`, computed when not given) fixes the version and the stages.
    """
    if config is None:
        config = vae_config_from_original({key: tuple(value.shape) for key, value in state_dict.items()})
    rules = vae_rules(config["num_res_blocks"], len(config["dim_mult"]), is_residual=config["is_residual"])
    return rename_state_dict(state_dict, rules, what=_version(config))
