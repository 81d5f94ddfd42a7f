"""Denoising steps with classifier-free guidance: wan-diffusers' WanPipeline against diffusers' built-in WanPipeline.

A step is what the sampling loop does per timestep: the conditional and the unconditional DiT call, the guidance
combination and a flow-matching Euler step. Three ways are timed interleaved (see common.py) on identical random
weights, latents and text embeddings (512 rows, what the DiT attends to for any prompt):

- `ours`: our pipeline as it runs by default, two DiT calls per step;
- `ours_batched`: our pipeline after `enable_batched_guidance()`, one DiT call on a batch of two;
- `diffusers`: diffusers' pipeline, two DiT calls per step.

With `--experts` both pipelines hold two experts of the same shape and other random weights, as Wan 2.2 A14B does
(`transformer_2`, `boundary_ratio` 0.875, guidance 4.0 for the high-noise and 3.0 for the low-noise expert): with the
default 2 steps per call (timesteps 1000 and 833) every call runs one step of each expert, so it times a guided step
across the switch, expert hand-over included.

It prints seconds per step (the median call over `--steps` steps, divided by the steps), the ratios to diffusers,
the achieved TFLOP/s (`wan_diffusers.utils.flops`) and, where the accelerator's dense bf16 rate is known or given
(`--peak-tflops`), the fraction of the floor; then the peak memory of one call beyond the memory in use before it
(`torch.cuda.max_memory_allocated` on a GPU; on the CPU the peak resident set of a fresh process, see common.py).

    python benchmarks/bench_step.py --preset cpu-small                          # CPU, ~1 minute
    python benchmarks/bench_step.py --preset 1.3b-480p --device cuda --dtype bfloat16
    python benchmarks/bench_step.py --preset 1.3b-480p --device cuda --dtype bfloat16 --compile
    python benchmarks/bench_step.py --preset 14b-720p --device cuda --dtype bfloat16 --steps 2
    python benchmarks/bench_step.py --preset cpu-small --experts                # Wan 2.2 A14B: across the switch

The presets are bench_transformer.py's.
"""

import argparse

import torch
from bench_transformer import PRESETS, build_models
from common import (
    PeakResidentMemory,
    append_json_lines,
    format_times,
    run_in_fresh_process,
    summarize_times,
    throughput,
    time_interleaved,
)

MODES = ("ours", "ours_batched", "diffusers")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps per timed call")
    parser.add_argument("--compile", action="store_true", help="regional torch.compile of both models' blocks")
    parser.add_argument("--attention-backend", help="diffusers attention backend for both models, e.g. flash")
    parser.add_argument("--peak-tflops", type=float, help="the accelerator's dense rate (default: known GPUs)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--experts", action="store_true", help="two experts (Wan 2.2 A14B), switching mid-call")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--output", help="append results as JSON lines to this file")
    return parser.parse_args()


def build_steppers(
    preset: str, device: torch.device, dtype: torch.dtype, compile: bool, backend: str | None, experts: bool = False
):
    """Each mode as a function running one call of `steps` steps, and the transformer config."""
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler

    import wan_diffusers

    config, (frames, height, width) = PRESETS[preset]
    models = build_models(config, device, dtype)
    models_2 = build_models(config, device, dtype, seed=1) if experts else {}
    pipelines = {}
    for name, library in (("ours", wan_diffusers), ("diffusers", diffusers)):
        for model in (models[name], models_2.get(name)):
            if model is not None and backend:
                model.set_attention_backend(backend)
            if model is not None and compile:
                model.compile_repeated_blocks(fullgraph=True)
        two_experts = dict(transformer_2=models_2[name], boundary_ratio=0.875) if experts else {}
        pipelines[name] = library.WanPipeline(
            tokenizer=None,
            text_encoder=None,
            vae=None,
            transformer=models[name],
            scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
            **two_experts,
        )
        pipelines[name].set_progress_bar_config(disable=True)
    generator = torch.Generator(device).manual_seed(0)
    text_dim = models["ours"].config.text_dim
    latents = torch.randn(1, 16, frames, height, width, generator=generator, device=device)
    prompt_embeds, negative_prompt_embeds = (
        torch.randn(1, 512, text_dim, generator=generator, device=device, dtype=dtype) for _ in range(2)
    )

    # T2V-A14B's pair (high, low noise) with two experts, else the Wan 2.1 default
    guidance = dict(guidance_scale=4.0, guidance_scale_2=3.0) if experts else dict(guidance_scale=5.0)

    def stepper(pipeline, batched: bool = False):
        def call(steps: int) -> torch.Tensor:
            if batched:
                pipeline.enable_batched_guidance()
            else:
                getattr(pipeline, "disable_batched_guidance", lambda: None)()
            with torch.inference_mode():
                return pipeline(
                    prompt_embeds=prompt_embeds,
                    negative_prompt_embeds=negative_prompt_embeds,
                    latents=latents,
                    height=height * 8,
                    width=width * 8,
                    num_frames=(frames - 1) * 4 + 1,
                    num_inference_steps=steps,
                    output_type="latent",
                    **guidance,
                ).frames.float()

        return call

    steppers = {
        "ours": stepper(pipelines["ours"]),
        "ours_batched": stepper(pipelines["ours"], batched=True),
        "diffusers": stepper(pipelines["diffusers"]),
    }
    return steppers, dict(models["ours"].config)


def cpu_peak_in_fresh_process(preset: str, dtype: str, mode: str, steps: int, experts: bool = False) -> int:
    """Bytes one call of `mode` needs beyond what is resident before it, in this (fresh) process."""
    steppers, _ = build_steppers(preset, torch.device("cpu"), getattr(torch, dtype), False, None, experts)
    steppers[mode](1)  # warm-up: one-time kernel and buffer set-up is not working memory
    memory = PeakResidentMemory()
    memory.start()
    steppers[mode](steps)
    return memory.stop()


def main():
    from wan_diffusers.utils.flops import peak_tflops, transformer_forward_flops, video_tokens

    args = parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    steppers, config = build_steppers(args.preset, device, dtype, args.compile, args.attention_backend, args.experts)
    latent = PRESETS[args.preset][1]
    flops_per_step = 2 * transformer_forward_flops(config, *latent).total
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or peak_tflops(device_name)
    print(
        f"preset {args.preset} on {device_name} in {args.dtype}: {video_tokens(config, *latent):,} tokens, "
        f"{flops_per_step / 1e12:.4g} TFLOP per guided step, {args.steps} steps per call"
    )

    row = {"benchmark": "step", "preset": args.preset, "device": device_name, "dtype": args.dtype}
    row["experts"] = 2 if args.experts else 1
    row.update(steps=args.steps, compiled=args.compile, attention_backend=args.attention_backend or "default")
    calls = {mode: (lambda step=step: step(args.steps)) for mode, step in steppers.items()}
    summarize_times(row, *time_interleaved(calls, device, args.warmup, args.iters))
    for mode in MODES:  # per step
        for key in (f"{mode}_s", f"{mode}_s_min", f"{mode}_s_max", f"{mode}_cpu_s"):
            row[key] /= args.steps
        throughput(row, mode, flops_per_step, peak)
    row["ratio_batched_time"] = row["ours_batched_s"] / row["diffusers_s"]
    outputs = {mode: step(args.steps) for mode, step in steppers.items()}
    scale = outputs["diffusers"].abs().max()
    row["max_rel_difference"] = ((outputs["ours"] - outputs["diffusers"]).abs().max() / scale).item()
    row["max_rel_batched_vs_two_pass"] = ((outputs["ours_batched"] - outputs["ours"]).abs().max() / scale).item()
    print(f"s/step: {format_times(row)}")
    print(
        f"batched guidance: {row['ours_batched_s']:.4g} s/step ({row['ours_batched_s_min']:.4g}-"
        f"{row['ours_batched_s_max']:.4g}), ratio to diffusers {row['ratio_batched_time']:.3f}; "
        f"latents differ from ours two-pass by max_rel {row['max_rel_batched_vs_two_pass']:.2e}, "
        f"ours from diffusers by {row['max_rel_difference']:.2e}"
    )
    for mode in MODES:
        text = f"{mode:13s} {row[f'{mode}_tflops']:.4g} TFLOP/s"
        if peak:
            text += f", {100 * row[f'{mode}_fraction_of_floor']:.1f} % of the floor at {peak:.0f} TFLOP/s"
        print(text)

    if not args.no_memory:
        for mode in MODES:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
                steppers[mode](args.steps)
                torch.cuda.synchronize(device)
                peak_bytes = torch.cuda.max_memory_allocated(device) - before
            else:
                peak_bytes = run_in_fresh_process(
                    cpu_peak_in_fresh_process, args.preset, args.dtype, mode, args.steps, args.experts
                )
            row[f"{mode}_peak_mb"] = peak_bytes / 2**20
        row["ratio_peak"] = row["ours_peak_mb"] / row["diffusers_peak_mb"]
        row["ratio_batched_peak"] = row["ours_batched_peak_mb"] / row["diffusers_peak_mb"]
        print(
            "peak memory of a call beyond what was in use before it: "
            + ", ".join(f"{mode} {row[f'{mode}_peak_mb']:.1f} MiB" for mode in MODES)
            + f"; ratio {row['ratio_peak']:.3f} (batched {row['ratio_batched_peak']:.3f})"
        )
    if args.output:
        append_json_lines(args.output, [row])


if __name__ == "__main__":
    main()
