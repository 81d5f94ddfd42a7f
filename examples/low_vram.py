"""Wan 2.1 on a consumer GPU: the 8 GB and 24 GB recipes of the README, as code.

    python examples/low_vram.py --vram 8  --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers
    python examples/low_vram.py --vram 24 --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers
    python examples/low_vram.py --vram 24 --model Wan-AI/Wan2.1-T2V-14B-Diffusers
    python examples/low_vram.py --vram 8                     # the recipe on the tiny offline pipeline (CPU)

What lives where (bf16 weights; the VAE stays float32):

| model | weights | 24 GB recipe | 8 GB recipe |
|---|---|---|---|
| umT5-XXL text encoder | 11.3 GB | on the CPU (runs once per prompt) | on the CPU |
| DiT 1.3B | 2.8 GB | on the GPU | model offload: on the GPU while it runs |
| DiT 14B | 28.6 GB | block-level group offload (blocks stream in) | leaf-level group offload (slow) |
| VAE | 0.5 GB | on the GPU | model offload + tiled decoding |

Peak GPU memory is the model on the GPU plus its activations: for 480 x 832 x 81 frames (32,760 tokens) the 1.3B
DiT needs about 2 GB of activations with PyTorch's memory-efficient attention, and the VAE decoder a few GB
untiled, about 1 GB tiled. The sizes above are the weights' sizes; the peaks are estimates, not CI measurements.
"""

import argparse

import torch

from wan_diffusers import WanPipeline
from wan_diffusers.pipelines.demo import build_demo_pipeline
from wan_diffusers.utils import export_to_mp4


def apply_recipe(pipe, vram_gb: int, device: torch.device) -> None:
    """Place the pipeline's models for a GPU with `vram_gb` GB of memory (8 or 24)."""
    pipe.keep_text_encoder_on_cpu()  # 11 GB of bf16 umT5 never touch the GPU
    large = sum(p.numel() for p in pipe.transformer.parameters()) > 5e9  # the 14B models
    if large:
        # blocks stream in one group at a time; the rest of the pipeline sits on the GPU
        offload_type = "block_level" if vram_gb >= 24 else "leaf_level"
        group = {"num_blocks_per_group": 4} if offload_type == "block_level" else {}
        pipe.transformer.enable_group_offload(
            onload_device=device, offload_device=torch.device("cpu"), offload_type=offload_type, **group
        )
        pipe.vae.to(device)
    elif vram_gb >= 24:
        pipe.to(device)  # the text encoder stays on the CPU (see keep_text_encoder_on_cpu)
    else:
        pipe.enable_model_cpu_offload(device=device)  # one model at a time on the GPU
    if vram_gb < 24:
        pipe.vae.enable_tiling()  # decode in overlapping 256-pixel tiles


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vram", type=int, choices=(8, 24), default=8, help="GPU memory in GB")
    parser.add_argument("--model", help="Hub id or local folder (default: the tiny offline demo pipeline)")
    parser.add_argument("--prompt", default="A corgi runs along a beach at sunset, slow motion.")
    parser.add_argument("--output", default="low_vram.mp4")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.model:
        pipe = WanPipeline.from_pretrained(args.model, torch_dtype={"vae": torch.float32, "default": torch.bfloat16})
        settings = dict(height=480, width=832, num_frames=81, num_inference_steps=50)
    else:
        pipe = build_demo_pipeline("t2v")
        settings = dict(height=48, width=64, num_frames=9, num_inference_steps=3)
    pipe.use_original_sampling("unipc", shift=5.0)
    apply_recipe(pipe, args.vram, device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    video = pipe(prompt=args.prompt, generator=torch.Generator("cpu").manual_seed(0), **settings).frames[0]
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    print(f"wrote {export_to_mp4(video, args.output, fps=16)}")


if __name__ == "__main__":
    main()
