"""What a parallel layout costs per denoising step: arithmetic per GPU, bytes each GPU receives, expected speed-up.

A paper model, not a measurement: the FLOPs are `utils/flops.py`'s; the bytes follow from what diffusers' engine and
FSDP2 exchange, in bfloat16 (2 bytes per value), for a guided step (two DiT forwards) on `L` video tokens of width `d`
through `n` self-attention layers:

- Ulysses, degree `u` (of a context group `r x u`): before every self-attention an all-to-all of q, k and v, after it
  one of the output; each holds `L / (r u)` tokens of width `d`, of which a rank keeps `1 / u`:
  `4 n (L / (r u)) d (u - 1) / u` values per forward.
- Ring, degree `r`: every rank receives the keys and values of the `r - 1` others (diffusers gathers them with one
  all-gather per layer, `rotate_method="allgather"`; a point-to-point ring moves the same bytes); under Ulysses they
  have `d / u` channels: `2 n (r - 1) (L / r) (d / u)` values per forward.
- CFG-parallel: one forward per rank per step instead of two, and one all-gather of the prediction (float32,
  `L x 64` values, negligible).
- FSDP over `N` ranks: every forward all-gathers the `(N - 1) / N` of the DiT's weights a rank lacks (the text encoder
  runs once per prompt, not per step).

The expected step time is compute at the accelerator's dense rate plus communication at `bandwidth` (bytes per second
into each GPU), with no overlap: a conservative floor. `python -m wan_diffusers.distributed.cost` prints the tables of
`docs/multi_gpu.md`.
"""

from dataclasses import dataclass

from ..utils.flops import PEAK_TFLOPS, transformer_forward_flops, video_tokens
from .layout import ParallelLayout

BYTES_PER_VALUE = 2  # bfloat16
# NVLink 4 of an H100 / H200 SXM: 18 links of 25 GB/s per direction.
NVLINK_BYTES_PER_SECOND = 450e9

# The released Wan 2.1 DiTs, and the latent grids of 81 frames at 480P (832 x 480) and 720P (1280 x 720).
MODELS = {
    "1.3B": dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30),
    "14B": dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40),
}
LATENTS = {"480P": (21, 60, 104), "720P": (21, 90, 160)}


@dataclass(frozen=True)
class StepCost:
    """Per GPU, per guided denoising step."""

    flops: float
    all_to_all_bytes: float
    ring_bytes: float
    all_gather_bytes: float  # FSDP's weights and CFG-parallel's prediction

    @property
    def bytes(self) -> float:
        return self.all_to_all_bytes + self.ring_bytes + self.all_gather_bytes

    def seconds(self, peak_tflops: float, bandwidth: float = NVLINK_BYTES_PER_SECOND) -> float:
        return self.flops / (peak_tflops * 1e12) + self.bytes / bandwidth


def parameter_count(config: dict) -> int:
    """Weights of a DiT with `config`, counted on the meta device (nothing is allocated)."""
    import torch

    from ..models.transformer_wan import WanTransformer3DModel

    with torch.device("meta"):
        model = WanTransformer3DModel(**config)
    return sum(parameter.numel() for parameter in model.parameters())


def step_cost(config: dict, latent: tuple[int, int, int], layout: ParallelLayout, num_gpus: int) -> StepCost:
    """The cost of one guided step of a DiT with `config` on `latent` (frames, height, width) under `layout`."""
    tokens = video_tokens(config, *latent)
    width = config["num_attention_heads"] * config["attention_head_dim"]
    layers = config["num_layers"] + len(config.get("vace_layers") or ())
    forwards = 2 // layout.cfg_degree  # per rank
    ring, ulysses = layout.ring_degree, layout.ulysses_degree
    local_tokens = tokens / (ring * ulysses)
    all_to_all = 4 * layers * local_tokens * width * (ulysses - 1) / ulysses
    ring_values = 2 * layers * (ring - 1) * (tokens / ring) * (width / ulysses)
    all_gather = 0.0
    if layout.fsdp:
        all_gather += forwards * parameter_count(config) * BYTES_PER_VALUE * (num_gpus - 1) / num_gpus
    if layout.cfg_parallel:
        all_gather += tokens * 64 * 4  # the other branch's float32 prediction
    flops = 2 * transformer_forward_flops(config, *latent).total / max(layout.degree, 1)
    return StepCost(
        flops=flops,
        all_to_all_bytes=forwards * all_to_all * BYTES_PER_VALUE,
        ring_bytes=forwards * ring_values * BYTES_PER_VALUE,
        all_gather_bytes=all_gather,
    )


def layouts_for(num_gpus: int, num_heads: int) -> dict[str, ParallelLayout]:
    """The layouts of `num_gpus` ranks worth comparing: Ulysses (where the heads divide), Ring, CFG x Ulysses."""
    layouts = {}
    if num_heads % num_gpus == 0:
        layouts[f"Ulysses {num_gpus}"] = ParallelLayout(ulysses_degree=num_gpus)
    layouts[f"Ring {num_gpus}"] = ParallelLayout(ring_degree=num_gpus)
    half = num_gpus // 2
    if num_gpus >= 2 and num_heads % half == 0:
        name = "CFG 2" if half == 1 else f"CFG 2 x Ulysses {half}"
        layouts[name] = ParallelLayout(ulysses_degree=half, cfg_parallel=True)
    return layouts


def markdown_tables(peak_tflops: float = PEAK_TFLOPS["H100"]) -> str:
    """The tables of docs/multi_gpu.md."""
    lines = []
    for model_name, config in MODELS.items():
        for resolution, latent in LATENTS.items():
            single = step_cost(config, latent, ParallelLayout(), 1)
            lines += [
                f"**T2V-{model_name}, {resolution}** ({video_tokens(config, *latent):,} tokens; one GPU: "
                f"{single.flops / 1e12:,.0f} TFLOP per step, floor {single.seconds(peak_tflops):.2f} s)",
                "",
                "| GPUs | layout | TFLOP / GPU | all-to-all GB | ring GB | + FSDP all-gather GB | step s | speed-up |",
                "|---:|---|---:|---:|---:|---:|---:|---:|",
            ]
            for num_gpus in (2, 4, 8):
                for name, layout in layouts_for(num_gpus, config["num_attention_heads"]).items():
                    cost = step_cost(config, latent, layout, num_gpus)
                    fsdp = step_cost(config, latent, ParallelLayout(**{**layout.__dict__, "fsdp": True}), num_gpus)
                    seconds = cost.seconds(peak_tflops)
                    lines.append(
                        f"| {num_gpus} | {name} | {cost.flops / 1e12:,.1f} | {cost.all_to_all_bytes / 1e9:.2f} | "
                        f"{cost.ring_bytes / 1e9:.2f} | {(fsdp.all_gather_bytes - cost.all_gather_bytes) / 1e9:.1f} | "
                        f"{seconds:.3f} | {single.seconds(peak_tflops) / seconds:.2f}x |"
                    )
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_tables())
