"""Reproduce the tiny shapes model shipped in `wan_diffusers/assets/tiny_shapes/` (seeded, CPU, about 75 minutes on
two cores: the VAE stages use every core, the trainer's runs one thread).

    python scripts/train_tiny_shapes.py --work runs/tiny_shapes

Stages, each skipped when its output exists in `--work` (so an interrupted run resumes; the trainer itself resumes
from its newest checkpoint, and more `--dit-steps` or `--lora-steps` continue a finished run):
1. `vae_images/`, `vae_clips/`, `vae/`: a tiny `AutoencoderKLWan` trained by `training.vae.train_vae` on
   `shapes.codec_clip` clips (several shapes of free colours: the VAE is a codec), single frames then 9-frame clips,
   with the latent mean and standard deviation of the grammar's clips;
2. `vae_decoder/`: its decoder fine-tuned alone (same latent space), what the shipped pipeline decodes with;
3. `base/`: the pipeline before DiT training: shapes tokenizer, frozen random umT5, `vae/`, a fresh DiT;
4. `data/`: the training clips, mp4 + metadata.csv, for the 48 combinations not held out
   (`training.shapes.held_out_combinations`);
5. `dit/`: `wan-diffusers train --full` (the DiT from scratch) on `data/`; `final/`: the pipeline with it;
6. `lora_data/`, `lora/`: cyan clips (a colour the model never saw) plus a replay of the base combinations, and
   `wan-diffusers train --lora-rank 8` of `final/` on them;
7. ship: `final/` to `--output` and the LoRA to `--lora-output` (the package's assets).

`report.jsonl` in `--work` gets each stage's time and losses. benchmarks/RESULTS.md has the figures of the shipped
run.
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from wan_diffusers.training import shapes, tiny

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
logger = logging.getLogger("train_tiny_shapes")


# The VAE's two runs of `train_vae` (each a one-cycle schedule), on `shapes.codec_clip` clips:
# (folder, frames per clip, clips per step, peak learning rate). Single frames first teach the spatial path at a
# ninth of a clip's cost; 9-frame clips then teach the causal time path (the first frame, then two 4-frame chunks,
# the second with a full cache like every later chunk of a 17-frame video).
VAE_PHASES = (("vae_images", 1, 16, 2e-3), ("vae_clips", 9, 4, 1e-3))


def vae_stage(work: Path, args) -> None:
    """`vae_images/`, `vae_clips/`, then `vae/`: the trained VAE with the latent mean and standard deviation of the
    grammar's clips, what the DiT will see."""
    from wan_diffusers import AutoencoderKLWan
    from wan_diffusers.training.vae import latent_statistics, train_vae

    previous = None
    for (name, num_frames, batch_size, learning_rate), steps in zip(
        VAE_PHASES, (args.vae_image_steps, args.vae_clip_steps)
    ):
        folder = work / name
        if not folder.exists():
            vae = tiny.shapes_vae(seed=args.seed) if previous is None else AutoencoderKLWan.from_pretrained(previous)
            start = time.time()
            losses = train_vae(
                vae, shapes.codec_clip, steps=steps, num_frames=num_frames, batch_size=batch_size,
                learning_rate=learning_rate, seed=args.seed,
            )  # fmt: skip
            _save(vae, folder)
            _report(work, stage=name, steps=steps, seconds=round(time.time() - start),
                    first_loss=float(np.mean(losses[:20])), last_loss=float(np.mean(losses[-20:])))  # fmt: skip
        previous = folder
    if not (work / "vae").exists():
        vae = AutoencoderKLWan.from_pretrained(previous)
        rng = np.random.default_rng(args.seed + 10)
        clips = [
            shapes.render_clip(shapes.random_clip_spec(*combination, rng)) for combination in shapes.all_combinations()
        ]
        mean, std = latent_statistics(
            vae, torch.stack([torch.from_numpy(clip).permute(3, 0, 1, 2) * 2 - 1 for clip in clips])
        )
        vae.register_to_config(latents_mean=mean, latents_std=std)
        _save(vae, work / "vae")


def vae_decoder_stage(work: Path, args) -> None:
    """`vae_decoder/`: `vae/` with its decoder fine-tuned alone (`train_vae(train_encoder=False)`) for sharper edges.
    The latent space stays exactly the same, so the DiT trains on `vae/`'s latents meanwhile, and the shipped
    pipeline decodes with this one."""
    from wan_diffusers import AutoencoderKLWan
    from wan_diffusers.training.vae import train_vae

    folder = work / "vae_decoder"
    if folder.exists():
        return
    vae = AutoencoderKLWan.from_pretrained(work / "vae")
    start = time.time()
    losses = train_vae(
        vae, shapes.codec_clip, steps=args.vae_decoder_steps, num_frames=9, batch_size=4, learning_rate=5e-4,
        train_encoder=False, seed=args.seed,
    )  # fmt: skip
    _save(vae, folder)
    _report(work, stage="vae_decoder", steps=args.vae_decoder_steps, seconds=round(time.time() - start),
            first_loss=float(np.mean(losses[:20])), last_loss=float(np.mean(losses[-20:])))  # fmt: skip


def _save(model, folder: Path) -> None:
    model.save_pretrained(folder.with_suffix(".partial"))
    folder.with_suffix(".partial").rename(folder)


def _report(work: Path, **figures) -> None:
    """One line of `report.jsonl` (and the log): what a stage did and how long it took."""
    logger.info("%s", figures)
    with open(work / "report.jsonl", "a") as handle:
        handle.write(json.dumps(figures) + "\n")


def base_stage(work: Path, args) -> None:
    """The pipeline the DiT is trained from: tokenizer, frozen text encoder, trained VAE, fresh DiT, scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from wan_diffusers import AutoencoderKLWan, WanPipeline

    folder = work / "base"
    if folder.exists():
        return
    tokenizer = tiny.shapes_tokenizer()
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=tiny.shapes_text_encoder(len(tokenizer), seed=args.seed),
        vae=AutoencoderKLWan.from_pretrained(work / "vae"),
        transformer=tiny.shapes_transformer(seed=args.seed),
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=tiny.SHIFT),
    )
    pipe.save_pretrained(folder.with_suffix(".partial"))
    folder.with_suffix(".partial").rename(folder)


def data_stage(work: Path, args) -> None:
    if not (work / "data").exists():
        shapes.write_shapes_dataset(work / "data", shapes.training_combinations(), args.clips, seed=args.seed)


def dit_stage(work: Path, args) -> None:
    """`wan-diffusers train`: full training of the fresh DiT on `data/`. Run again with more `--dit-steps`, it
    continues from the last checkpoint."""
    if _trained_steps(work / "dit") == args.dit_steps:
        return
    prompts = [shapes.caption(*shapes.training_combinations()[0]), shapes.caption(*shapes.held_out_combinations()[0])]
    _train(work, "dit", work / "base", work / "data", [
        "--full", "--steps", str(args.dit_steps), "--learning-rate", "1e-3", "--warmup-steps", "200",
        "--validate-every", "500", "--validation-prompts", *prompts,
    ])  # fmt: skip


def _trained_steps(output: Path) -> int | None:
    """The step count of the finished run in `output`: its newest checkpoint (the trainer saves one at the last step)
    once the result is written; None before."""
    if not (output / "transformer").exists() and not (output / "lora").exists():
        return None
    from wan_diffusers.training.trainer import completed_checkpoints

    saved = completed_checkpoints(output / "checkpoints")
    return saved[-1][0] if saved else None


def lora_data_stage(work: Path, args) -> None:
    """The LoRA's task: a new colour, cyan, on every shape and direction, plus a replay of the base combinations so
    that the adapter adds cyan without forgetting the rest. Cached with the base model's encoders right away."""
    folder = work / "lora_data"
    if not folder.exists():
        replay = shapes.training_combinations()
        cyan = shapes.all_combinations(colours=("cyan",))
        shapes.write_shapes_dataset(work / "lora_data_cyan", cyan, args.lora_clips, seed=args.seed + 2)
        shapes.write_shapes_dataset(work / "lora_data_replay", replay, 2, seed=args.seed + 3)
        _merge_datasets([work / "lora_data_cyan", work / "lora_data_replay"], folder)
    _train(work, "lora_cache", work / "base", folder, ["--cache-only", "--cache-dir", str(work / "lora_cache")])


def lora_stage(work: Path, args) -> None:
    """A rank-8 LoRA on the trained DiT (`wan-diffusers train`), from the cache `lora_data_stage` made."""
    if _trained_steps(work / "lora") == args.lora_steps:
        return
    prompts = [shapes.caption("cyan", "square", "right"), shapes.caption("red", "circle", "down")]
    _train(work, "lora", work / "final", work / "lora_data", [
        "--lora-rank", "8", "--steps", str(args.lora_steps), "--learning-rate", "1e-3", "--warmup-steps", "20",
        "--cache-dir", str(work / "lora_cache"), "--validate-every", str(args.lora_steps),
        "--validation-prompts", *prompts,
    ])  # fmt: skip


def _merge_datasets(sources: list[Path], folder: Path) -> None:
    import csv
    import shutil

    partial = folder.with_name(folder.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    rows = []
    for source in sources:
        with open(source / "metadata.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                shutil.copy(source / row["file_name"], partial / row["file_name"])
                rows.append((row["file_name"], row["caption"]))
    with open(partial / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "caption"])
        writer.writerows(rows)
    partial.rename(folder)


def _train(work: Path, name: str, model: Path, data: Path, extra: list[str]) -> None:
    """`wan-diffusers train` in a subprocess (as a user would run it), one thread (as the shipped model was trained),
    shapes bucket and schedule."""
    command = [
        sys.executable, "-m", "wan_diffusers.cli", "train", "--model", str(model), "--data", str(data),
        "--output", str(work / name), "--batch-size", "8", "--buckets", f"{tiny.HEIGHT}x{tiny.WIDTH}x{tiny.NUM_FRAMES}",
        "--shift", str(tiny.SHIFT), "--weighting", "none", "--caption-dropout", "0.1", "--weight-decay", "0.0",
        "--checkpoint-every", "250", "--resume", "--seed", "0", *extra,
    ]  # fmt: skip
    logger.info("running %s", " ".join(command))
    start = time.time()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    _report(work, stage=name, seconds=round(time.time() - start), arguments=extra)


def final_stage(work: Path, args) -> None:
    """`final/`: the base pipeline with the trained DiT and the fine-tuned VAE decoder, in the Hub format (float32)."""
    from wan_diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel

    pipe = WanPipeline.from_pretrained(work / "base")
    pipe.register_modules(
        transformer=WanTransformer3DModel.from_pretrained(work / "dit" / "transformer"),
        vae=AutoencoderKLWan.from_pretrained(work / "vae_decoder"),
    )
    partial = work / "final.partial"
    pipe.save_pretrained(partial)
    _replace(partial, work / "final")


def ship_stage(work: Path, args) -> None:
    """Copy the pipeline to `--output` and the LoRA's two files to `--lora-output` (replacing what is there)."""
    import shutil

    for source, target in ((work / "final", args.output), (work / "lora" / "lora", args.lora_output)):
        partial = target.with_name(target.name + ".partial")
        shutil.copytree(source, partial)
        for config in partial.rglob("*.json"):  # the training machine's folders are nobody else's business
            values = json.loads(config.read_text())
            if values.pop("_name_or_path", None) is not None:
                config.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
        _replace(partial, target)
        logger.info("wrote %s", target)


def _replace(partial: Path, target: Path) -> None:
    """Put the complete folder `partial` in the place of `target`."""
    import shutil

    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/tiny_shapes"))
    parser.add_argument("--output", type=Path, default=Path("src/wan_diffusers/assets/tiny_shapes"))
    parser.add_argument("--lora-output", type=Path, default=Path("src/wan_diffusers/assets/tiny_shapes_cyan_lora"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-image-steps", type=int, default=1500)
    parser.add_argument("--vae-clip-steps", type=int, default=1200)
    parser.add_argument("--vae-decoder-steps", type=int, default=1500)
    parser.add_argument("--clips", type=int, default=20, help="training clips per combination")
    parser.add_argument("--dit-steps", type=int, default=10000)
    parser.add_argument("--lora-clips", type=int, default=8, help="cyan clips per combination for the LoRA")
    parser.add_argument("--lora-steps", type=int, default=600)
    parser.add_argument(
        "--stages",
        default="vae,vae_decoder,base,data,dit,final,lora_data,lora,ship",
        help="comma-separated stages to run",
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    stages = {
        "vae": vae_stage,
        "vae_decoder": vae_decoder_stage,
        "base": base_stage,
        "data": data_stage,
        "dit": dit_stage,
        "final": final_stage,
        "lora_data": lora_data_stage,
        "lora": lora_stage,
        "ship": ship_stage,
    }
    for name in args.stages.split(","):
        start = time.time()
        stages[name](args.work, args)
        logger.info("stage %s: %.0f s", name, time.time() - start)


if __name__ == "__main__":
    sys.exit(main())
