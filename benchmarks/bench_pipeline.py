"""A whole text-to-video call of wan-diffusers' WanPipeline against diffusers' built-in WanPipeline.

Both pipelines get identical weights (transformer, VAE, text encoder and tokenizer), the same flow-matching Euler
scheduler, prompt, negative prompt, seed and settings, and are timed interleaved (see common.py): prompt encoding,
`num_inference_steps` denoising steps with classifier-free guidance, and VAE decoding to frames. Prints the ratios
ours / diffusers, the peak GPU memory, and how far the two videos are apart.

    python benchmarks/bench_pipeline.py --preset tiny                       # CPU, a second
    python benchmarks/bench_pipeline.py --preset cpu-small                  # released widths, 2 DiT blocks, 256 x 256
    python benchmarks/bench_pipeline.py --preset 1.3b-480p --device cuda --dtype bfloat16 --steps 10
    python benchmarks/bench_pipeline.py --preset 1.3b-480p --device cuda --dtype bfloat16 --offload model

With `--offload model` both pipelines run under `enable_model_cpu_offload()`: each model visits the GPU only while it
works, so the peak is the largest model's weights plus its activations (the original's 1.3B figure is 8.19 GB with
its T5 on the CPU; the tiny text encoder here stands in for `keep_text_encoder_on_cpu()`, and the DiT's text
projection is 32 instead of 4,096 wide, 12 MB less in bf16).

The text encoder is the tiny umT5 of the offline demo on every preset (prompt encoding is a few percent of a real
run and its weights would be a 22 GB random tensor here); the transformer and the VAE follow the preset. The videos
differ by the float64 timestep sinusoid of ours (README.md), which a few steps amplify a little.
"""

import argparse
import copy

import numpy as np
import torch
from common import append_json_lines, built_in, format_times, summarize_times, time_interleaved

PRESETS = {
    # name: (transformer config, VAE config overrides, (frames, height, width), steps)
    "tiny": (
        dict(num_attention_heads=2, attention_head_dim=16, ffn_dim=64, num_layers=2, text_dim=32, freq_dim=32),
        dict(base_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1),
        (17, 64, 96),
        4,
    ),
    "cpu-small": (dict(num_attention_heads=12, ffn_dim=8960, num_layers=2, text_dim=32), {}, (9, 256, 256), 2),
    "1.3b-480p": (dict(num_attention_heads=12, ffn_dim=8960, num_layers=30, text_dim=32), {}, (81, 480, 832), 10),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="of the transformer")
    parser.add_argument("--steps", type=int, help="override the preset's number of denoising steps")
    parser.add_argument("--offload", choices=["none", "model"], default="none", help="model CPU offload for both")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--output", help="append results as JSON lines to this file")
    return parser.parse_args()


def build_pipelines(preset: str, device: torch.device, dtype: torch.dtype, offload: str = "none") -> dict:
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler

    import wan_diffusers
    from wan_diffusers.pipelines.demo import build_demo_pipeline

    transformer_config, vae_overrides, _, _ = PRESETS[preset]
    demo = build_demo_pipeline("t2v")  # the tiny text encoder and tokenizer
    home = torch.device("cpu") if offload == "model" else device  # offloaded models wait on the CPU
    pipelines = {}
    for name, library in (("ours", wan_diffusers), ("diffusers", diffusers)):
        torch.manual_seed(0)
        transformer = built_in(dtype, home, library.WanTransformer3DModel, **transformer_config)
        torch.manual_seed(1)
        vae = built_in(torch.float32, home, library.AutoencoderKLWan, **vae_overrides)  # VAE in float32
        pipelines[name] = library.WanPipeline(
            tokenizer=demo.tokenizer,
            text_encoder=copy.deepcopy(demo.text_encoder).to(home),  # one each: offload hooks are per module
            vae=vae,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
            transformer=transformer,
        )
        pipelines[name].set_progress_bar_config(disable=True)
    for component in ("transformer", "vae"):
        state = getattr(pipelines["ours"], component).state_dict()
        getattr(pipelines["diffusers"], component).load_state_dict(state, strict=True)
    if offload == "model":
        for pipeline in pipelines.values():
            pipeline.enable_model_cpu_offload(device=device)
    return pipelines


def main():
    args = parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    _, _, (frames, height, width), steps = PRESETS[args.preset]
    steps = args.steps or steps
    pipelines = build_pipelines(args.preset, device, dtype, args.offload)
    print(
        f"preset {args.preset} on {device}, transformer in {args.dtype}: {frames} x {height} x {width}, {steps} steps"
    )

    def generate(pipeline):
        with torch.inference_mode():
            return pipeline(
                prompt="A cat walks on the grass, realistic style.",
                negative_prompt="",  # the same for both (ours defaults to the original's long negative prompt)
                height=height,
                width=width,
                num_frames=frames,
                num_inference_steps=steps,
                guidance_scale=5.0,
                generator=torch.Generator(device).manual_seed(0),
                output_type="np",
            ).frames

    row = {"benchmark": "pipeline", "preset": args.preset, "device": str(device), "dtype": args.dtype}
    row.update(frames=frames, height=height, width=width, steps=steps, offload=args.offload)
    calls = {name: (lambda pipeline=pipeline: generate(pipeline)) for name, pipeline in pipelines.items()}
    summarize_times(row, *time_interleaved(calls, device, args.warmup, args.iters))
    videos = {name: np.asarray(generate(pipeline)) for name, pipeline in pipelines.items()}
    row["max_abs_difference"] = float(np.abs(videos["ours"] - videos["diffusers"]).max())
    text = f"{format_times(row)}; videos differ by max_abs {row['max_abs_difference']:.2e} (pixel values in [0, 1])"
    if device.type == "cuda":
        for name, pipeline in pipelines.items():
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            generate(pipeline)
            row[f"{name}_peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        row["ratio_memory"] = row["ours_peak_gb"] / row["diffusers_peak_gb"]
        text += f"; peak {row['ours_peak_gb']:.2f} vs {row['diffusers_peak_gb']:.2f} GB"
    print(text)
    if args.output:
        append_json_lines(args.output, [row])


if __name__ == "__main__":
    main()
