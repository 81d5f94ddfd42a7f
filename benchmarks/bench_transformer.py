"""One DiT forward of wan-diffusers against diffusers' built-in WanTransformer3DModel, on identical weights and inputs.

Prints seconds per forward, peak memory and the ratio ours / diffusers for each mode (eager, and regional
`torch.compile` of the repeated blocks), plus the output difference between the two models. Results are appended as
JSON lines to `--output` when given (benchmarks/RESULTS.md collects what was seen on real hardware).

    python benchmarks/bench_transformer.py --preset tiny                               # CPU, seconds
    python benchmarks/bench_transformer.py --preset 1.3b-480p --device cuda --dtype bfloat16 --compile
    python benchmarks/bench_transformer.py --preset 14b-480p --device cuda --dtype bfloat16

Weights are random (no download): speed and memory do not depend on their values. The inputs follow diffusers'
own Wan benchmark (81 frames; 480 x 832 gives a latent of 21 x 60 x 104 and 32,760 tokens; the T5 context is 512
rows of 4096).
"""

import argparse
import gc
import json
import time

import torch

PRESETS = {
    # name: (transformer config, latent (frames, height, width))
    "tiny": (dict(num_attention_heads=4, attention_head_dim=32, ffn_dim=256, num_layers=4, text_dim=64), (5, 16, 24)),
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
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--output", help="append results as JSON lines to this file")
    return parser.parse_args()


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def time_forward(model, inputs, device, warmup: int, iters: int) -> tuple[float, float | None, torch.Tensor]:
    with torch.inference_mode():
        for _ in range(warmup):
            output = model(**inputs).sample
        synchronize(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for _ in range(iters):
            output = model(**inputs).sample
        synchronize(device)
    return (time.perf_counter() - start) / iters, peak_memory_gb(device), output.float()


def build_models(config: dict, device: torch.device, dtype: torch.dtype):
    """Both models on `device` with the same random weights, laid out as `from_pretrained(torch_dtype=dtype)` would:
    the modules each class lists in `_keep_in_fp32_modules` in float32, everything else in `dtype`."""
    import diffusers

    import wan_diffusers

    models = []
    for cls in (wan_diffusers.WanTransformer3DModel, diffusers.WanTransformer3DModel):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # initialise directly in `dtype`: a 14B model in float32 is 57 GB
        try:
            with torch.device(device):
                torch.manual_seed(0)
                model = cls(**config)
        finally:
            torch.set_default_dtype(previous)
        keep = set(model._keep_in_fp32_modules or [])
        for name, parameter in model.named_parameters():
            if keep.intersection(name.split(".")):
                parameter.data = parameter.data.float()
        models.append(model.eval())
    ours, theirs = models
    theirs.load_state_dict(ours.state_dict(), strict=True)  # identical weights (cast to each model's dtypes)
    return ours, theirs


def main():
    args = parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    config, (frames, height, width) = PRESETS[args.preset]
    ours, theirs = build_models(config, device, dtype)
    generator = torch.Generator(device).manual_seed(0)
    text_dim = ours.config.text_dim
    inputs = {
        "hidden_states": torch.randn(1, 16, frames, height, width, generator=generator, device=device, dtype=dtype),
        "timestep": torch.tensor([999.0], device=device),
        "encoder_hidden_states": torch.randn(1, 512, text_dim, generator=generator, device=device, dtype=dtype),
    }
    tokens = frames * (height // 2) * (width // 2)
    print(f"preset {args.preset}: {sum(p.numel() for p in ours.parameters()) / 1e9:.3f} B parameters, {tokens} tokens")

    modes = ["eager"] + (["compiled"] if args.compile else [])
    results = []
    for mode in modes:
        row = {"preset": args.preset, "device": str(device), "dtype": args.dtype, "mode": mode, "tokens": tokens}
        outputs = {}
        for name, model in (("ours", ours), ("diffusers", theirs)):
            if mode == "compiled":
                model.compile_repeated_blocks(fullgraph=True)
            seconds, memory, outputs[name] = time_forward(model, inputs, device, args.warmup, args.iters)
            row[f"{name}_s"], row[f"{name}_peak_gb"] = seconds, memory
            gc.collect()
        row["ratio_time"] = row["ours_s"] / row["diffusers_s"]
        if row["ours_peak_gb"] is not None:
            row["ratio_memory"] = row["ours_peak_gb"] / row["diffusers_peak_gb"]
        difference = (outputs["ours"] - outputs["diffusers"]).abs().max() / outputs["diffusers"].abs().max()
        row["max_rel_difference"] = difference.item()
        results.append(row)
        memory = (
            f", peak {row['ours_peak_gb']:.2f} vs {row['diffusers_peak_gb']:.2f} GB" if row["ours_peak_gb"] else ""
        )
        print(
            f"{mode:9s} ours {row['ours_s']:.4f} s, diffusers {row['diffusers_s']:.4f} s, "
            f"ratio {row['ratio_time']:.3f}{memory}; outputs differ by max_rel {row['max_rel_difference']:.2e}"
        )
    if args.output:
        with open(args.output, "a") as handle:
            for row in results:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
