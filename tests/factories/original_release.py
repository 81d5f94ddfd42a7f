"""Tiny release folders in the original Wan 2.1 layout, one per released layout, built in code.

A release folder holds `config.json` and the DiT safetensors (one file for the 1.3B models, shards plus
`diffusion_pytorch_model.safetensors.index.json` for the 14B ones), `Wan2.1_VAE.pth`,
`models_t5_umt5-xxl-enc-bf16.pth` with the `google/umt5-xxl/` tokenizer folder and, for I2V/FLF2V, the CLIP `.pth`
and `xlm-roberta-large/` (the file names of the original's `wan/configs/`). The weights are those of the parity
fixtures (`tests/fixtures/wan21_parity`), so a converted folder can be checked against the original's outputs; only the
file layout differs between the layouts of one task (the real 1.3B and 14B models differ in size too, which the
tiny fixtures cannot).

`original_dit_shapes` gives the original key -> shape map of a DiT of any size, for synthetic checkpoints, and
`write_released_dit` writes the DiT of a released model at full size as a sparse file (real header, no data).
"""

import json
import math
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from factories.parity import COMPONENTS_DIR, original_dit_state_dict, task_dir


@dataclass(frozen=True)
class Layout:
    task: str  # the parity model whose weights it holds: t2v, i2v, flf2v, vace
    num_shards: int  # 1: a single diffusion_pytorch_model.safetensors; more: shards + index (14B releases)
    resolution: str  # what to pass as `resolution`: the release's (the tiny weights cannot show a size)


# Keyed by the release's name in `wan_diffusers.tasks`, in lower case.
LAYOUTS = {
    "t2v-1.3b": Layout("t2v", 1, "480p"),
    "t2v-14b": Layout("t2v", 3, "720p"),
    "i2v-14b-480p": Layout("i2v", 2, "480p"),
    "i2v-14b-720p": Layout("i2v", 2, "720p"),
    "flf2v-14b-720p": Layout("flf2v", 2, "720p"),
    "vace-1.3b": Layout("vace", 1, "480p"),
    "vace-14b": Layout("vace", 2, "720p"),
}
# the tiny CLIP of the fixtures has 2 heads (not visible in its weights; the released ViT-H/14 has 16)
TINY_CLIP_NUM_HEADS = 2


def build_release(folder: Path, layout: str, *, config_overrides: dict | None = None) -> Path:
    """Write the tiny release folder of `layout` (a key of `LAYOUTS`) into `folder` (created); returns it.

    `config_overrides` changes `config.json` (None as a value removes the field).
    """
    spec = LAYOUTS[layout]
    folder.mkdir(parents=True)
    config = json.loads((task_dir(spec.task) / "config.json").read_text())
    for key, value in (config_overrides or {}).items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    write_dit(folder, original_dit_state_dict(spec.task), spec.num_shards)

    shutil.copyfile(COMPONENTS_DIR / "Wan2.1_VAE.pth", folder / "Wan2.1_VAE.pth")
    shutil.copyfile(COMPONENTS_DIR / "models_t5_umt5-xxl-enc-bf16.pth", folder / "models_t5_umt5-xxl-enc-bf16.pth")
    shutil.copytree(COMPONENTS_DIR / "google", folder / "google")
    if spec.task in ("i2v", "flf2v"):
        clip = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
        shutil.copyfile(COMPONENTS_DIR / clip, folder / clip)
        shutil.copytree(COMPONENTS_DIR / "xlm-roberta-large", folder / "xlm-roberta-large")
    # The copies of read-only fixtures are read-only too; tests corrupt and delete files in these folders.
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


def write_dit(folder: Path, state_dict: dict[str, torch.Tensor], num_shards: int) -> None:
    """The DiT as the releases store it: one safetensors file, or `num_shards` shards and an index json."""
    if num_shards == 1:
        save_file(state_dict, folder / "diffusion_pytorch_model.safetensors")
        return
    keys = sorted(state_dict)
    weight_map, total_size = {}, 0
    for shard in range(num_shards):
        name = f"diffusion_pytorch_model-{shard + 1:05d}-of-{num_shards:05d}.safetensors"
        part = {key: state_dict[key] for key in keys[shard::num_shards]}
        save_file(part, folder / name)
        weight_map.update(dict.fromkeys(part, name))
        total_size += sum(t.numel() * t.element_size() for t in part.values())
    index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def original_dit_shapes(
    *,
    dim: int,
    ffn_dim: int,
    num_layers: int,
    in_dim: int = 16,
    out_dim: int = 16,
    text_dim: int = 4096,
    freq_dim: int = 256,
    image_dim: int | None = None,
    flf2v: bool = False,
    vace_layers: list[int] | None = None,
    vace_in_dim: int = 96,
) -> dict[str, tuple[int, ...]]:
    """Original key -> shape of `WanModel` (`wan/modules/model.py`) or `VaceWanModel` (`wan/modules/vace_model.py`),
    for any size."""

    def block(prefix: str, image: bool) -> dict[str, tuple[int, ...]]:
        shapes = {f"{prefix}.modulation": (1, 6, dim)}
        for attention in ("self_attn", "cross_attn"):
            for proj in "qkvo":
                shapes |= {
                    f"{prefix}.{attention}.{proj}.weight": (dim, dim),
                    f"{prefix}.{attention}.{proj}.bias": (dim,),
                }
            shapes |= {f"{prefix}.{attention}.norm_q.weight": (dim,), f"{prefix}.{attention}.norm_k.weight": (dim,)}
        if image:
            for proj in ("k_img", "v_img"):
                shapes |= {
                    f"{prefix}.cross_attn.{proj}.weight": (dim, dim),
                    f"{prefix}.cross_attn.{proj}.bias": (dim,),
                }
            shapes[f"{prefix}.cross_attn.norm_k_img.weight"] = (dim,)
        shapes |= {f"{prefix}.norm3.weight": (dim,), f"{prefix}.norm3.bias": (dim,)}
        shapes |= {f"{prefix}.ffn.0.weight": (ffn_dim, dim), f"{prefix}.ffn.0.bias": (ffn_dim,)}
        shapes |= {f"{prefix}.ffn.2.weight": (dim, ffn_dim), f"{prefix}.ffn.2.bias": (dim,)}
        return shapes

    shapes = {
        "patch_embedding.weight": (dim, in_dim, 1, 2, 2),
        "patch_embedding.bias": (dim,),
        "text_embedding.0.weight": (dim, text_dim),
        "text_embedding.0.bias": (dim,),
        "text_embedding.2.weight": (dim, dim),
        "text_embedding.2.bias": (dim,),
        "time_embedding.0.weight": (dim, freq_dim),
        "time_embedding.0.bias": (dim,),
        "time_embedding.2.weight": (dim, dim),
        "time_embedding.2.bias": (dim,),
        "time_projection.1.weight": (6 * dim, dim),
        "time_projection.1.bias": (6 * dim,),
        "head.modulation": (1, 2, dim),
        "head.head.weight": (4 * out_dim, dim),
        "head.head.bias": (4 * out_dim,),
    }
    for i in range(num_layers):
        shapes |= block(f"blocks.{i}", image_dim is not None)
    if image_dim is not None:
        shapes |= {
            "img_emb.proj.0.weight": (image_dim,),
            "img_emb.proj.0.bias": (image_dim,),
            "img_emb.proj.1.weight": (image_dim, image_dim),
            "img_emb.proj.1.bias": (image_dim,),
            "img_emb.proj.3.weight": (dim, image_dim),
            "img_emb.proj.3.bias": (dim,),
            "img_emb.proj.4.weight": (dim,),
            "img_emb.proj.4.bias": (dim,),
        }
        if flf2v:
            shapes["img_emb.emb_pos"] = (1, 2 * 257, image_dim)
    if vace_layers is not None:
        shapes |= {"vace_patch_embedding.weight": (dim, vace_in_dim, 1, 2, 2), "vace_patch_embedding.bias": (dim,)}
        for j in range(len(vace_layers)):
            shapes |= block(f"vace_blocks.{j}", False)
            shapes |= {f"vace_blocks.{j}.after_proj.weight": (dim, dim), f"vace_blocks.{j}.after_proj.bias": (dim,)}
        shapes |= {"vace_blocks.0.before_proj.weight": (dim, dim), "vace_blocks.0.before_proj.bias": (dim,)}
    return shapes


# config.json of the released DiTs (the `WanModel` arguments of `wan/configs/wan_t2v_1_3B.py` and the 14B configs)
RELEASED_CONFIGS = {
    "t2v-1.3b": {"dim": 1536, "ffn_dim": 8960, "num_heads": 12, "num_layers": 30, "in_dim": 16, "model_type": "t2v"},
    "t2v-14b": {"dim": 5120, "ffn_dim": 13824, "num_heads": 40, "num_layers": 40, "in_dim": 16, "model_type": "t2v"},
    "i2v-14b": {"dim": 5120, "ffn_dim": 13824, "num_heads": 40, "num_layers": 40, "in_dim": 36, "model_type": "i2v"},
    "flf2v-14b": {
        "dim": 5120,
        "ffn_dim": 13824,
        "num_heads": 40,
        "num_layers": 40,
        "in_dim": 36,
        "model_type": "flf2v",
    },
    "vace-1.3b": {
        "dim": 1536,
        "ffn_dim": 8960,
        "num_heads": 12,
        "num_layers": 30,
        "in_dim": 16,
        "model_type": "vace",
        "vace_layers": list(range(0, 30, 2)),
        "vace_in_dim": 96,
    },
    "vace-14b": {
        "dim": 5120,
        "ffn_dim": 13824,
        "num_heads": 40,
        "num_layers": 40,
        "in_dim": 16,
        "model_type": "vace",
        "vace_layers": list(range(0, 40, 5)),
        "vace_in_dim": 96,
    },
}


def write_released_dit(folder: Path, name: str) -> None:
    """`config.json` and the DiT of a released model at its real size, as a *sparse* file: the header is real, the
    data is a hole (no disk space, reads as zeros), which is all that detection and conversion planning read."""
    config = {
        "_class_name": "WanModel",
        "_diffusers_version": "0.30.0",
        "eps": 1e-06,
        "freq_dim": 256,
        "out_dim": 16,
        "text_len": 512,
        **RELEASED_CONFIGS[name],
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    shapes = original_dit_shapes(
        dim=config["dim"],
        ffn_dim=config["ffn_dim"],
        num_layers=config["num_layers"],
        in_dim=config["in_dim"],
        image_dim=1280 if config["model_type"] in ("i2v", "flf2v") else None,
        flf2v=config["model_type"] == "flf2v",
        vace_layers=config.get("vace_layers"),
        vace_in_dim=config.get("vace_in_dim", 96),
    )
    header, offset = {}, 0
    for key, shape in sorted(shapes.items()):
        size = 4 * math.prod(shape)
        header[key] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    header_bytes = json.dumps(header).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    with open(folder / "diffusion_pytorch_model.safetensors", "wb") as file:
        file.write(struct.pack("<Q", len(header_bytes)) + header_bytes)
        file.truncate(8 + len(header_bytes) + offset)
