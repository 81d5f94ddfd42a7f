"""The README.md (Hub model card) of a converted repo: YAML front matter, usage, what was converted from what."""

from dataclasses import dataclass

import yaml

from .. import tasks

PIPELINE_TAGS = {"t2v": "text-to-video", "i2v": "image-to-video", "flf2v": "image-to-video", "vace": "video-to-video"}
_TASK_TAGS = {
    "t2v": ["text-to-video"],
    "i2v": ["image-to-video"],
    "flf2v": ["image-to-video", "first-last-frame-to-video"],
    # VACE generates from text alone too, and edits / controls / extends videos
    "vace": ["video-to-video", "text-to-video", "reference-to-video", "video-editing", "vace"],
}


@dataclass(frozen=True)
class ComponentRow:
    folder: str
    class_path: str  # "wan_diffusers.WanTransformer3DModel"
    source: str
    num_parameters: int | None
    dtype: str


@dataclass(frozen=True)
class ModelCardInfo:
    """Everything the card says, so it can be rendered (and tested) without converting anything."""

    release_name: str
    task: str
    base_model: str | None
    pipeline_class: str
    repo_id: str
    shift: float
    shift_reason: str
    resolution: str
    size: str | None
    components: tuple[ComponentRow, ...]
    converter_version: str
    variant_name: str | None = None  # the record in `wan_diffusers.tasks`, when task, size and resolution do not say

    @property
    def variant(self) -> tasks.WanTask:
        """The release's record in `wan_diffusers.tasks`: the original's sampling defaults the card states."""
        if self.variant_name is not None:
            return next(variant for variant in tasks.TASKS if variant.name == self.variant_name)
        return tasks.find_variant(self.task, size=self.size, resolution=self.resolution)

    @classmethod
    def from_conversion(cls, release, components, *, shift: float, repo_id: str) -> "ModelCardInfo":
        from .. import __version__
        from .detect import DIT_INDEX, DIT_WEIGHTS, T5_TOKENIZER

        def dit_source(files, folder: str = "") -> str:
            weights = DIT_WEIGHTS if len(files) == 1 else DIT_INDEX
            shards = "" if len(files) == 1 else f" ({len(files)} shards)"
            return f"`{folder}config.json` + `{folder}{weights}`{shards}"

        experts = release.expert_2 is not None
        sources = {
            "transformer": dit_source(release.dit_files, "high_noise_model/" if experts else ""),
            "transformer_2": dit_source(release.expert_2.files, "low_noise_model/") if experts else "",
            "vae": f"`{release.vae_checkpoint.name}`",
            "text_encoder": f"`{release.t5_checkpoint.name}`",
            "image_encoder": f"`{release.clip_checkpoint.name}` (vision tower; the text tower is dropped)"
            if release.clip_checkpoint
            else "",
        }
        rows = [
            ComponentRow(
                name,
                f"{component.library}.{component.class_name}",
                sources[name],
                component.num_parameters,
                _dtype_summary(component.tensors),
            )
            for name, component in components.items()
        ]
        rows.append(
            ComponentRow("tokenizer", "transformers.T5TokenizerFast", f"`{T5_TOKENIZER}/` (copied)", None, "-")
        )
        if release.clip_checkpoint:
            rows.append(
                ComponentRow(
                    "image_processor",
                    "transformers.CLIPImageProcessor",
                    "the original CLIP preprocessing settings (size, mean, std)",
                    None,
                    "-",
                )
            )
        default = release.default_shift
        reason = (
            "the original's default for this release"
            if shift == default
            else f"set at conversion (default {default:g})"
        )
        rows.append(
            ComponentRow("scheduler", "diffusers.FlowMatchEulerDiscreteScheduler", f"shift {shift:g}", None, "-")
        )
        return cls(
            release_name=release.name,
            task=release.task,
            base_model=release.base_model,
            pipeline_class=release.pipeline_class_name,
            repo_id=repo_id,
            shift=shift,
            shift_reason=reason,
            resolution=release.resolution,
            size=release.size,
            components=tuple(rows),
            converter_version=__version__,
            variant_name=release.variant.name,
        )


def render_model_card(info: ModelCardInfo) -> str:
    front_matter = {
        "license": "apache-2.0",
        "library_name": "diffusers",
        "pipeline_tag": PIPELINE_TAGS[info.task],
        "tags": ["wan", _generation_tag(info), "wan-diffusers", *_TASK_TAGS[info.task]],
    }
    if info.base_model:
        front_matter["base_model"] = info.base_model
    origin = (
        f"[{info.base_model}](https://huggingface.co/{info.base_model})" if info.base_model else "an original-format"
    )
    total = sum(row.num_parameters or 0 for row in info.components)
    table = "\n".join(
        f"| `{row.folder}/` | `{row.class_path}` | {row.source} | "
        f"{_count(row.num_parameters) if row.num_parameters else '-'} | {row.dtype} |"
        for row in info.components
    )
    return f"""---
{yaml.safe_dump(front_matter, sort_keys=False).strip()}
---

# {info.release_name} (diffusers format)

{info.release_name} converted from {origin} Wan {_generation(info)} release into the diffusers layout by
[wan-diffusers](https://github.com/wan-diffusers/wan-diffusers) {info.converter_version}. The transformer and the VAE
are wan-diffusers' classes, which compute what the original Wan{_generation(info)} code computes (float32 parity with the original
within ~1e-6 relative); the weights and configs have the same names and shapes as the official `-Diffusers` repos.

## Usage

```bash
pip install wan-diffusers
```

```python
{_usage(info)}
```

`model_index.json` names wan-diffusers' transformer and VAE by module path
(`wan_diffusers.models.{_transformer_module(info)}`, `wan_diffusers.models.autoencoder_kl_wan`), as `save_pretrained`
records them. The repo therefore also loads with `diffusers.DiffusionPipeline.from_pretrained` (diffusers'
`{info.pipeline_class}` then runs with wan-diffusers' transformer and VAE) once those modules are imported, e.g. by
`from wan_diffusers import {_diffusers_transformer(info)}, AutoencoderKLWan`: diffusers does not import modules a
repo names by itself. Without wan-diffusers, pass diffusers' own classes, which read the same files:
`transformer=diffusers.{_diffusers_transformer(info)}.from_pretrained(repo, subfolder="transformer")` and
`vae=diffusers.AutoencoderKLWan.from_pretrained(repo, subfolder="vae")`.

## What was converted

| folder | class | converted from | parameters | stored dtype |
|---|---|---|---|---|
{table}

{_count(total)} parameters in all. Every original tensor was mapped by an explicit key map (each original key matched
by exactly one rule), every target tensor filled, every shape checked{_left_out(info)}. Sizes the weights do not show
are the released values unless set at conversion.

The scheduler is `FlowMatchEulerDiscreteScheduler` with shift {info.shift:g} ({info.shift_reason}). {_defaults(info)}
To sample exactly as the original `generate.py` does (its UniPC solver and sigma schedule, at this shift), call
`pipe.use_original_sampling("unipc")` (or `"dpm++"`) before generating.

## License

The weights are released by the Wan team under the Apache 2.0 license; see the original release.
"""


def _defaults(info: ModelCardInfo) -> str:
    """The original's sampling defaults for this release, as a sentence (from `wan_diffusers.tasks`)."""
    variant = info.variant
    shifts = {  # Wan 2.1 picks the shift from the size; Wan 2.2 has one per model
        other.resolution: other.shift for other in tasks.variants(info.task) if other.shift_follows_size
    }
    if not variant.shift_follows_size:
        shifts = {variant.resolution: variant.shift}
    by_resolution = (
        " (" + ", ".join(f"{shift:g} at {resolution.upper()}" for resolution, shift in shifts.items()) + ")"
        if len(set(shifts.values())) > 1
        else ""
    )
    sentence = (
        f"The original's `generate.py` samples this task with shift {variant.shift:g}{by_resolution}, "
        f"{variant.num_inference_steps} steps and guidance scale {variant.guidance_scale:g}"
    )
    if variant.guidance_scale_2 is not None:
        sentence += (
            f" for the high-noise expert (`transformer`) and {variant.guidance_scale_2:g} for the low-noise one "
            f"(`transformer_2`, `guidance_scale_2`), which takes over below timestep {variant.boundary_ratio * 1000:g}"
        )
    return sentence + (f"; {variant.note}." if variant.note else ".")


def _usage(info: ModelCardInfo) -> str:
    variant = info.variant
    lines = [
        "import torch",
        f"from wan_diffusers import {info.pipeline_class}",
        "from diffusers.utils import export_to_video"
        + (", load_image" if info.task in ("i2v", "flf2v", "vace") else ""),
        "",
        f'pipe = {info.pipeline_class}.from_pretrained("{info.repo_id}", torch_dtype=torch.bfloat16)',
        "pipe.vae.to(torch.float32)  # the original decodes in float32",
        "pipe.enable_model_cpu_offload()",
        "",
    ]
    arguments = []
    if info.task in ("i2v", "flf2v"):
        lines.append('image = load_image("first_frame.png")')
        arguments.append("image=image")
    if info.task == "flf2v":
        lines.append('last_image = load_image("last_frame.png")')
        arguments.append("last_image=last_image")
    if info.task == "vace":
        lines.append('reference = load_image("reference.png")')
        arguments.append("reference_images=[reference]")
    arguments += [
        'prompt="A cat walks on the grass, realistic style."',
        f"height={variant.height}",
        f"width={variant.width}",
        f"num_frames={variant.num_frames}",
        f"guidance_scale={variant.guidance_scale:g}",
    ]
    if variant.guidance_scale_2 is not None:
        arguments.append(f"guidance_scale_2={variant.guidance_scale_2:g}")
    lines.append("video = pipe(" + ", ".join(arguments) + ").frames[0]")
    lines.append(f'export_to_video(video, "output.mp4", fps={variant.fps})')
    return "\n".join(lines)


def _generation(info: ModelCardInfo) -> str:
    return "2.2" if (info.variant.release or "").startswith("Wan2.2") else "2.1"


def _generation_tag(info: ModelCardInfo) -> str:
    return f"wan{_generation(info)}"


def _diffusers_transformer(info: ModelCardInfo) -> str:
    return "WanVACETransformer3DModel" if info.task == "vace" else "WanTransformer3DModel"


def _left_out(info: ModelCardInfo) -> str:
    if info.task not in ("i2v", "flf2v"):
        return ""
    return "; CLIP's text tower and logit scale are the only tensors left out (Wan never runs them)"


def _transformer_module(info: ModelCardInfo) -> str:
    return "transformer_wan_vace" if info.task == "vace" else "transformer_wan"


def _dtype_summary(tensors) -> str:
    """ "bfloat16", or "bfloat16 (float32: 12 tensors)" when some modules are kept in float32."""
    counts: dict[str, int] = {}
    for tensor in tensors:
        name = str(tensor.dtype).removeprefix("torch.")
        counts[name] = counts.get(name, 0) + 1
    ordered = sorted(counts, key=lambda name: -counts[name])
    return ordered[0] + "".join(f" ({name}: {counts[name]} tensors)" for name in ordered[1:])


def _count(number: int) -> str:
    if number >= 10**9:
        return f"{number / 1e9:.2f} B"
    if number >= 10**6:
        return f"{number / 1e6:.1f} M"
    return f"{number:,}"


def front_matter(card: str) -> dict:
    """The YAML front matter of a model card, parsed (raises ValueError if there is none)."""
    if not card.startswith("---\n"):
        raise ValueError("`card` must start with a YAML front matter block ('---')")
    end = card.index("\n---\n", 4)
    return yaml.safe_load(card[4:end])
