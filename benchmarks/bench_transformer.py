"""One DiT forward of wan-diffusers against diffusers' built-in WanTransformer3DModel, on identical weights and inputs.

Prints the median seconds per forward (interleaved timing, see common.py), the ratios ours / diffusers for each mode
(eager, and regional `torch.compile` of the repeated blocks), the achieved TFLOP/s (`wan_diffusers.utils.flops`: 283
TFLOP per forward for 1.3B at 480P) and, where the accelerator's dense bf16 rate is known or given (`--peak-tflops`),
the fraction of that floor; the peak memory of a forward beyond what was in use before it (`max_memory_allocated` on
a GPU, the resident set of a fresh process on the CPU, see common.py); and the difference between the two outputs.
Results are appended as JSON lines to `--output` when given.

    python benchmarks/bench_transformer.py --preset tiny                               # CPU, seconds
    python benchmarks/bench_transformer.py --preset cpu-small                          # released widths, 2 blocks
    python benchmarks/bench_transformer.py --preset 1.3b-480p --device cuda --dtype bfloat16 --compile
    python benchmarks/bench_transformer.py --preset 14b-480p --device cuda --dtype bfloat16

Weights are random (no download): speed and memory do not depend on their values. The GPU presets follow diffusers'
own Wan benchmark (81 frames; 480 x 832 gives a latent of 21 x 60 x 104 and 32,760 tokens; the T5 context is 512
rows of 4096). Both models are laid out as `from_pretrained(torch_dtype=dtype)` would: each class's
`_keep_in_fp32_modules` in float32, the rest in `dtype`.
"""

import argparse

import torch
from common import (
    PeakResidentMemory,
    append_json_lines,
    format_times,
    run_in_fresh_process,
    summarize_times,
    throughput,
    time_interleaved,
)

PRESETS = {
    # name: (transformer config, latent (frames, height, width))
    "tiny": (dict(num_attention_heads=4, attention_head_dim=32, ffn_dim=256, num_layers=4, text_dim=64), (5, 16, 24)),
    "cpu-small": (dict(num_attention_heads=12, ffn_dim=8960, num_layers=2), (5, 30, 52)),
    "1.3b-480p": (dict(num_attention_heads=12, ffn_dim=8960, num_layers=30), (21, 60, 104)),
    "14b-480p": (dict(num_attention_heads=40, ffn_dim=13824, num_layers=40), (21, 60, 104)),
    "14b-720p": (dict(num_attention_heads=40, ffn_dim=13824, num_layers=40), (21, 90, 160)),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--compile", action="store_true", help="also time regional torch.compile of the blocks")
    parser.add_argument("--peak-tflops", type=float, help="the accelerator's dense rate (default: known GPUs)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--output", help="append results as JSON lines to this file")
    return parser.parse_args()


def build_models(config: dict, device: torch.device, dtype: torch.dtype, seed: int = 0) -> dict:
    """Ours and diffusers' on `device` with the same random weights (loaded strictly: the layouts must agree), laid
    out as `from_pretrained(torch_dtype=dtype)` would (`wan_diffusers.bench.random_weights_model`); `seed` picks
    the weights (a second expert of a Wan 2.2 A14B model gets other ones)."""
    import diffusers

    import wan_diffusers
    from wan_diffusers.bench import random_weights_model

    models = {}
    for name, cls in (("ours", wan_diffusers.WanTransformer3DModel), ("diffusers", diffusers.WanTransformer3DModel)):
        torch.manual_seed(seed)
        models[name] = random_weights_model(cls, config, device, dtype)
    models["diffusers"].load_state_dict(models["ours"].state_dict(), strict=True)
    return models


def make_inputs(preset: str, text_dim: int, device: torch.device, dtype: torch.dtype) -> dict:
    _, (frames, height, width) = PRESETS[preset]
    generator = torch.Generator(device).manual_seed(0)
    return {
        "hidden_states": torch.randn(1, 16, frames, height, width, generator=generator, device=device, dtype=dtype),
        "timestep": torch.tensor([999.0], device=device),
        "encoder_hidden_states": torch.randn(1, 512, text_dim, generator=generator, device=device, dtype=dtype),
    }


def forward(model, inputs: dict) -> torch.Tensor:
    with torch.inference_mode():
        return model(**inputs).sample.float()


def cuda_peak_bytes(model, inputs: dict, device: torch.device) -> int:
    """Bytes one forward allocates beyond what was allocated before it."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    forward(model, inputs)
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def cpu_peak_in_fresh_process(preset: str, dtype: str, implementation: str) -> int:
    """Like `cuda_peak_bytes` for the CPU's resident memory, in this (fresh) process, after a warm-up forward."""
    device, dtype = torch.device("cpu"), getattr(torch, dtype)
    model = build_models(PRESETS[preset][0], device, dtype)[implementation]
    inputs = make_inputs(preset, model.config.text_dim, device, dtype)
    forward(model, inputs)
    memory = PeakResidentMemory()
    memory.start()
    forward(model, inputs)
    return memory.stop()


def main():
    from wan_diffusers.utils.flops import peak_tflops, transformer_forward_flops, video_tokens

    args = parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    config, latent = PRESETS[args.preset]
    models = build_models(config, device, dtype)
    inputs = make_inputs(args.preset, models["ours"].config.text_dim, device, dtype)
    tokens = video_tokens(dict(models["ours"].config), *latent)
    flops = transformer_forward_flops(dict(models["ours"].config), *latent).total
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or peak_tflops(device_name)
    parameters = sum(p.numel() for p in models["ours"].parameters()) / 1e9
    print(
        f"preset {args.preset} on {device_name} in {args.dtype}: {parameters:.3f} B parameters, {tokens:,} tokens, "
        f"{flops / 1e12:.4g} TFLOP per forward"
    )

    results = []
    for mode in ["eager"] + (["compiled"] if args.compile else []):
        if mode == "compiled":
            for model in models.values():
                model.compile_repeated_blocks(fullgraph=True)
        row = {"benchmark": "transformer", "preset": args.preset, "device": device_name, "dtype": args.dtype}
        row.update(mode=mode, tokens=tokens, tflop_per_forward=flops / 1e12)
        calls = {name: (lambda model=model: forward(model, inputs)) for name, model in models.items()}
        summarize_times(row, *time_interleaved(calls, device, args.warmup, args.iters))
        outputs = {name: forward(model, inputs) for name, model in models.items()}
        difference = (outputs["ours"] - outputs["diffusers"]).abs().max() / outputs["diffusers"].abs().max()
        row["max_rel_difference"] = difference.item()
        text = f"{mode:9s} {format_times(row)}; outputs differ by max_rel {row['max_rel_difference']:.2e}"
        for name in models:
            throughput(row, name, flops, peak)
            text += f"\n          {name}: {row[f'{name}_tflops']:.4g} TFLOP/s"
            if peak:
                text += f", {100 * row[f'{name}_fraction_of_floor']:.1f} % of the floor at {peak:.0f} TFLOP/s"
        if not args.no_memory and (device.type == "cuda" or mode == "eager"):
            for name, model in models.items():
                if device.type == "cuda":
                    peak_bytes = cuda_peak_bytes(model, inputs, device)
                else:
                    peak_bytes = run_in_fresh_process(cpu_peak_in_fresh_process, args.preset, args.dtype, name)
                row[f"{name}_peak_mb"] = peak_bytes / 2**20
            row["ratio_peak"] = row["ours_peak_mb"] / row["diffusers_peak_mb"]
            text += (
                f"\n          peak memory of a forward beyond what was in use before it: ours "
                f"{row['ours_peak_mb']:.1f} MiB, diffusers {row['diffusers_peak_mb']:.1f} MiB, ratio {row['ratio_peak']:.3f}"
            )
        results.append(row)
        print(text)
    if args.output:
        append_json_lines(args.output, results)


if __name__ == "__main__":
    main()
