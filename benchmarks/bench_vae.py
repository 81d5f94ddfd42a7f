"""VAE encode and decode of wan-diffusers against diffusers' built-in AutoencoderKLWan, on identical weights and inputs.

Prints, for encode and decode: the median seconds per call (min - max) of each model, timed interleaved (ours,
diffusers, diffusers, ours, ...) after a warm-up; the peak memory each call needs beyond what was allocated before
it, and beyond its output; the ratios ours / diffusers; and the largest difference between the two outputs.

    python benchmarks/bench_vae.py --device cpu --preset tiny                          # seconds
    python benchmarks/bench_vae.py --preset tiny --base-dim 96 --no-memory             # released widths, 64 x 64
    python benchmarks/bench_vae.py --device cuda --preset real --dtype float32         # 480 x 832, 81 frames
    python benchmarks/bench_vae.py --device cuda --preset real --dtype bfloat16
    python benchmarks/bench_vae.py --vae 2.2 --preset tiny                             # the Wan 2.2 VAE (TI2V-5B)
    python benchmarks/bench_vae.py --vae 2.2 --device cuda --preset real               # 704 x 1280, 121 frames

Peak memory is `torch.cuda.max_memory_allocated` on a GPU. On the CPU it is the peak resident set size of a fresh
process that builds one model and runs one call (after a five-frame warm-up), with glibc told to return every
allocation of 64 KiB or more to the system when it is freed (`MALLOC_MMAP_THRESHOLD_`), so that the peak follows
the memory actually in use. Weights are random (no download): neither speed nor memory depends on their values.
"""

import argparse

import torch
from common import (
    PeakResidentMemory,
    append_json_lines,
    built_in,
    format_times,
    run_in_fresh_process,
    summarize_times,
    synchronize,
    time_interleaved,
)

# The released VAEs: Wan 2.1 is the class's default config; Wan 2.2 as in `Wan-AI/Wan2.2-TI2V-5B-Diffusers`
# (`vae/config.json`; the latent statistics do not matter here).
RELEASED = {
    "2.1": {},
    "2.2": {
        "base_dim": 160,
        "decoder_base_dim": 256,
        "z_dim": 48,
        "is_residual": True,
        "in_channels": 12,
        "out_channels": 12,
        "patch_size": 2,
        "scale_factor_spatial": 16,
        "latents_mean": [0.0] * 48,
        "latents_std": [1.0] * 48,
    },
}
PRESETS = {
    # VAE: {name: (config overrides of the released VAE, video (frames, height, width))}; the tiny presets keep the
    # layout at a sixth of the widths (Wan 2.2: the decoder's 256 / 160 ratio, rounded)
    "2.1": {"tiny": ({"base_dim": 16}, (17, 64, 64)), "real": ({}, (81, 480, 832))},
    "2.2": {"tiny": ({"base_dim": 16, "decoder_base_dim": 24}, (17, 64, 64)), "real": ({}, (121, 704, 1280))},
}
OPERATIONS = ("encode", "decode")
IMPLEMENTATIONS = ("ours", "diffusers")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", choices=PRESETS, default="2.1", help="which released VAE: Wan 2.1 or Wan 2.2")
    parser.add_argument("--preset", choices=PRESETS["2.1"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--frames", type=int, help="override the preset's frame count (1 + 4k)")
    parser.add_argument("--height", type=int, help="override the preset's height (a multiple of 8; Wan 2.2: 16)")
    parser.add_argument("--width", type=int, help="override the preset's width (a multiple of 8; Wan 2.2: 16)")
    parser.add_argument("--base-dim", type=int, help="override the preset's VAE width (released: 96; Wan 2.2: 160)")
    parser.add_argument("--decoder-base-dim", type=int, help="override the decoder's width (released Wan 2.2: 256)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--output", help="append the results as JSON lines to this file")
    return parser.parse_args()


# ---------------------------------------------------------------------------------------------------------------------
# Models and inputs


def vae_class(implementation: str):
    if implementation == "ours":
        from wan_diffusers import AutoencoderKLWan
    else:
        from diffusers import AutoencoderKLWan
    return AutoencoderKLWan


def build_model(implementation: str, config: dict, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """One VAE with random weights from `seed`, created directly on `device` in `dtype`."""
    torch.manual_seed(seed)
    return built_in(dtype, device, vae_class(implementation), **config)


def build_models(config: dict, device: torch.device, dtype: torch.dtype) -> dict:
    """Ours and diffusers' with identical weights (loaded strictly: the key layouts must agree)."""
    models = {name: build_model(name, config, device, dtype) for name in IMPLEMENTATIONS}
    models["diffusers"].load_state_dict(models["ours"].state_dict(), strict=True)
    return models


def make_inputs(model, frames: int, height: int, width: int, device: torch.device, dtype: torch.dtype) -> dict:
    """A video [1, 3, frames, H, W] in [-1, 1] for encode and latents [1, z, 1 + (frames-1)/4, H/s, W/s] for decode
    (s = 8 for Wan 2.1, 16 for Wan 2.2)."""
    generator = torch.Generator(device).manual_seed(0)
    factor = model.config.scale_factor_spatial
    latent_shape = (1, model.config.z_dim, 1 + (frames - 1) // 4, height // factor, width // factor)
    return {
        "encode": (torch.rand(1, 3, frames, height, width, generator=generator, device=device) * 2 - 1).to(dtype),
        "decode": torch.randn(latent_shape, generator=generator, device=device).to(dtype),
    }


def run(model, operation: str, inputs: dict) -> torch.Tensor:
    """One call; returns its output tensor (the posterior's parameters for encode, the video for decode)."""
    with torch.inference_mode():
        if operation == "encode":
            return model.encode(inputs["encode"]).latent_dist.parameters
        return model.decode(inputs["decode"]).sample


# ---------------------------------------------------------------------------------------------------------------------
# Peak memory


def cuda_peak(model, operation: str, inputs: dict, device: torch.device) -> dict:
    """Peak bytes allocated by one call beyond what was allocated before it, and the size of its output."""
    synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    output = run(model, operation, inputs)
    synchronize(device)
    return {"peak_bytes": torch.cuda.max_memory_allocated(device) - before, "output_bytes": _bytes(output)}


def cpu_peak(implementation: str, operation: str, config: dict, video: tuple[int, int, int], dtype: str) -> dict:
    """Like `cuda_peak`, for the CPU: measured in a fresh process (see the module docstring)."""
    return run_in_fresh_process(_cpu_peak_in_this_process, implementation, operation, config, video, dtype)


def _cpu_peak_in_this_process(implementation, operation, config, video, dtype) -> dict:
    device, dtype = torch.device("cpu"), getattr(torch, dtype)
    model = build_model(implementation, config, device, dtype)
    frames, height, width = video
    # warm-up on 5 frames, i.e. both chunk shapes (the first and the steady one): the convolution library builds and
    # caches its kernels per shape, which is a one-time cost and not working memory
    run(model, operation, make_inputs(model, 5, height, width, device, dtype))
    inputs = make_inputs(model, frames, height, width, device, dtype)
    memory = PeakResidentMemory()
    memory.start()
    output = run(model, operation, inputs)
    return {"peak_bytes": memory.stop(), "output_bytes": _bytes(output)}


def _bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


# ---------------------------------------------------------------------------------------------------------------------


def main():
    args = parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    overrides, (frames, height, width) = PRESETS[args.vae][args.preset]
    frames, height, width = args.frames or frames, args.height or height, args.width or width
    config = {**RELEASED[args.vae], **overrides}
    if args.base_dim:
        config["base_dim"] = args.base_dim
    if args.decoder_base_dim:
        config["decoder_base_dim"] = args.decoder_base_dim
    models = build_models(config, device, dtype)
    inputs = make_inputs(models["ours"], frames, height, width, device, dtype)
    print(
        f"Wan {args.vae} VAE, preset {args.preset} on {device} in {args.dtype}: {frames} frames of {height} x {width}, "
        f"{sum(p.numel() for p in models['ours'].parameters()) / 1e6:.1f} M parameters"
    )
    results = []
    for operation in OPERATIONS:
        row = {"vae": args.vae, "preset": args.preset, "device": str(device), "dtype": args.dtype}
        row.update(operation=operation, frames=frames, height=height, width=width)
        row.update(base_dim=config.get("base_dim", 96), decoder_base_dim=models["ours"].config.decoder_base_dim)
        calls = {name: (lambda m=model, op=operation: run(m, op, inputs)) for name, model in models.items()}
        summarize_times(row, *time_interleaved(calls, device, args.warmup, args.iters))
        outputs = {name: run(model, operation, inputs).float() for name, model in models.items()}
        row["max_abs_difference"] = (outputs["ours"] - outputs["diffusers"]).abs().max().item()
        del outputs
        if not args.no_memory:
            for name in IMPLEMENTATIONS:
                if device.type == "cuda":
                    memory = cuda_peak(models[name], operation, inputs, device)
                else:
                    memory = cpu_peak(name, operation, config, (frames, height, width), args.dtype)
                row[f"{name}_peak_mb"] = memory["peak_bytes"] / 2**20
                row[f"{name}_beyond_output_mb"] = (memory["peak_bytes"] - memory["output_bytes"]) / 2**20
            row["ratio_peak"] = row["ours_peak_mb"] / row["diffusers_peak_mb"]
            row["ratio_beyond_output"] = row["ours_beyond_output_mb"] / row["diffusers_beyond_output_mb"]
        results.append(row)
        print(_summary(row))
    if args.output:
        append_json_lines(args.output, results)


def _summary(row: dict) -> str:
    text = (
        f"{row['operation']:6s} time: {format_times(row)}; outputs differ by max_abs {row['max_abs_difference']:.2e}"
    )
    if "ratio_peak" in row:
        text += (
            f"\n       peak memory: ours {row['ours_peak_mb']:.1f} MiB, diffusers {row['diffusers_peak_mb']:.1f} MiB, "
            f"ratio {row['ratio_peak']:.3f}; beyond the output: ours {row['ours_beyond_output_mb']:.1f} MiB, "
            f"diffusers {row['diffusers_beyond_output_mb']:.1f} MiB, ratio {row['ratio_beyond_output']:.3f}"
        )
    return text


if __name__ == "__main__":
    main()
