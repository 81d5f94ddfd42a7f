"""Peak memory of converting a release, relative to the release's size, on a synthetic checkpoint of a few GB.

    python benchmarks/conversion_memory.py                  # ~3 GB DiT + 1.45 GB T5; as stored, bf16, fp32
    python benchmarks/conversion_memory.py --dit-gb 6 --keep /tmp/bench

The synthetic release has the original layout and key names of a T2V release: a DiT of width 1536 (as T2V-1.3B)
with as many blocks as `--dit-gb` asks for, in one safetensors file (the worst case for memory-mapping: the whole
file is one mapping), a T5 `.pth` with the released vocabulary (one 256384-row embedding, the largest single tensor
of a real release) at a smaller width, and the tiny VAE and tokenizer of the test fixtures. Each conversion runs in
a fresh process; its peak resident set size (`VmHWM`, which counts the pages of memory-mapped checkpoint files as
well as ordinary allocations; `ru_maxrss` would not do, as Linux carries it over from the forking parent) is compared
with the total size of the release's weight files.

Reported per run: peak RSS / checkpoint size (the issue's target is at most ~1.2), the same after subtracting the
process's RSS before converting (Python, torch, diffusers, transformers), and the wall time.
"""

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from factories.original_release import original_dit_shapes  # noqa: E402
from factories.parity import COMPONENTS_DIR  # noqa: E402

DIM, FFN_DIM, NUM_HEADS = 1536, 8960, 12  # T2V-1.3B's block
T5_VOCAB, T5_WIDTH, T5_HEADS, T5_FFN, T5_LAYERS = 256384, 2048, 32, 5120, 4  # 1.45 GB in bfloat16

_CHILD = """
import json, sys, time
import wan_diffusers.conversion.convert as convert  # the imports a conversion needs, before measuring
import transformers, diffusers
def status_kib(field):
    return int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1])
baseline = status_kib("VmRSS")
start = time.perf_counter()
convert.convert_release(sys.argv[1], sys.argv[2], dtype=None if sys.argv[3] == "none" else sys.argv[3])
seconds = time.perf_counter() - start
print(json.dumps({"baseline_kib": baseline, "peak_kib": status_kib("VmHWM"), "seconds": seconds}))
"""


def build_synthetic_release(folder: Path, dit_gb: float) -> int:
    """Write the synthetic release; returns the bytes of its weight files."""
    folder.mkdir(parents=True)
    block_bytes = 4 * sum(
        math.prod(s)
        for k, s in original_dit_shapes(dim=DIM, ffn_dim=FFN_DIM, num_layers=1).items()
        if k.startswith("blocks.0.")
    )
    num_layers = max(1, round(dit_gb * 1e9 / block_bytes))
    config = {
        "_class_name": "WanModel",
        "_diffusers_version": "0.30.0",
        "dim": DIM,
        "eps": 1e-06,
        "ffn_dim": FFN_DIM,
        "freq_dim": 256,
        "in_dim": 16,
        "model_type": "t2v",
        "num_heads": NUM_HEADS,
        "num_layers": num_layers,
        "out_dim": 16,
        "text_len": 512,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    generator = torch.Generator().manual_seed(0)
    shapes = original_dit_shapes(dim=DIM, ffn_dim=FFN_DIM, num_layers=num_layers, text_dim=T5_WIDTH)
    dit = {key: torch.empty(shape).uniform_(-0.02, 0.02, generator=generator) for key, shape in shapes.items()}
    save_file(dit, folder / "diffusion_pytorch_model.safetensors")
    del dit

    t5 = {"token_embedding.weight": (T5_VOCAB, T5_WIDTH), "norm.weight": (T5_WIDTH,)}
    for i in range(T5_LAYERS):
        t5 |= {f"blocks.{i}.attn.{p}.weight": (T5_WIDTH, T5_WIDTH) for p in "qkvo"}
        t5 |= {f"blocks.{i}.norm1.weight": (T5_WIDTH,), f"blocks.{i}.norm2.weight": (T5_WIDTH,)}
        t5 |= {f"blocks.{i}.ffn.gate.0.weight": (T5_FFN, T5_WIDTH), f"blocks.{i}.ffn.fc1.weight": (T5_FFN, T5_WIDTH)}
        t5 |= {
            f"blocks.{i}.ffn.fc2.weight": (T5_WIDTH, T5_FFN),
            f"blocks.{i}.pos_embedding.embedding.weight": (32, T5_HEADS),
        }
    state_dict = {
        key: torch.empty(shape, dtype=torch.bfloat16).uniform_(-0.02, 0.02, generator=generator)
        for key, shape in t5.items()
    }
    torch.save(state_dict, folder / "models_t5_umt5-xxl-enc-bf16.pth")
    del state_dict

    shutil.copyfile(COMPONENTS_DIR / "Wan2.1_VAE.pth", folder / "Wan2.1_VAE.pth")
    shutil.copytree(COMPONENTS_DIR / "google", folder / "google")
    return sum(path.stat().st_size for path in folder.iterdir() if path.suffix in (".safetensors", ".pth"))


def measure(release: Path, output: Path, dtype: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(release), str(output), dtype], capture_output=True, text=True, check=True
    )
    shutil.rmtree(output)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dit-gb", type=float, default=3.0, help="size of the synthetic DiT in GB (10^9 bytes)")
    parser.add_argument(
        "--dtypes", nargs="+", default=["none", "bfloat16", "float32"], help="output dtypes to measure"
    )
    parser.add_argument("--keep", type=Path, help="build the release in this folder and keep it")
    args = parser.parse_args()

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="wan-conversion-memory-"))
    release = workdir / "release"
    try:
        size = (
            build_synthetic_release(release, args.dit_gb)
            if not release.exists()
            else sum(path.stat().st_size for path in release.iterdir() if path.suffix in (".safetensors", ".pth"))
        )
        print(f"synthetic release: {size / 1e9:.2f} GB of weights ({release})")
        print("| output dtype | peak RSS | peak / checkpoint | (peak - baseline) / checkpoint | time |")
        print("|---|---|---|---|---|")
        for dtype in args.dtypes:
            run = measure(release, workdir / f"repo-{dtype}", dtype)
            peak, baseline = run["peak_kib"] * 1024, run["baseline_kib"] * 1024
            print(
                f"| {'as stored' if dtype == 'none' else dtype} | {peak / 1e9:.2f} GB | {peak / size:.2f} | "
                f"{(peak - baseline) / size:.2f} | {run['seconds']:.1f} s |"
            )
    finally:
        if args.keep is None:
            shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
