"""The `wan-diffusers train` command line: flags for `TrainingConfig`, and `run_train`.

For several devices or processes run it under accelerate, which picks DDP, FSDP or DeepSpeed from its config:

    accelerate launch --config_file fsdp.yaml -m wan_diffusers.cli train --model ... --data ... --output ...
"""

import argparse
import logging

from .objective import WEIGHTINGS
from .trainer import LOG_FORMATS, TASKS, TrainingConfig

logger = logging.getLogger(__name__)


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the training options to `parser` (returned for chaining)."""
    add = parser.add_argument
    add("--model", required=True, help="a Hub-format Wan pipeline: a Hub id or a local folder")
    add("--data", required=True, help="a folder of videos or images with captions (metadata.csv / .jsonl or NAME.txt)")
    add("--output", required=True, help="output folder: lora/ or transformer/, checkpoints/, loss.csv, validation/")
    add("--task", choices=TASKS, default="t2v", help="which pipeline and conditioning to train (default t2v)")
    add(
        "--transformer",
        choices=("transformer", "transformer_2"),
        default="transformer",
        help="which DiT to train: transformer_2 is the Wan 2.2 low-noise expert (default transformer)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--lora-rank", type=int, default=16, help="train a LoRA of this rank (default 16)")
    mode.add_argument("--full", action="store_true", help="full fine-tuning of every DiT weight instead of a LoRA")
    add("--lora-alpha", type=float, default=None, help="LoRA alpha (default: the rank, i.e. scale 1)")
    add(
        "--lora-targets",
        nargs="+",
        default=(),
        metavar="NAME",
        help="module names a LoRA adapts (default: attention q/k/v/out, image k/v and feed-forward linears)",
    )
    add("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    add("--batch-size", type=int, default=1, help="samples per process and step (default 1)")
    add("--gradient-accumulation", type=int, default=1, help="batches per optimizer step (default 1)")
    add("--learning-rate", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    add("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    add("--warmup-steps", type=int, default=0, help="linear learning-rate warm-up (default 0)")
    add("--max-grad-norm", type=float, default=1.0, help="gradient clipping norm, 0 for none (default 1)")
    add("--mixed-precision", choices=("no", "fp16", "bf16"), default="no", help="accelerate's autocast (default no)")
    add("--gradient-checkpointing", action="store_true", help="recompute block activations in the backward pass")
    add(
        "--buckets",
        nargs="+",
        default=["480x832x81"],
        metavar="HxWxF",
        help="sizes samples are cropped to: each goes to the closest aspect ratio among the longest it fills "
        "(default 480x832x81)",
    )
    add("--frame-stride", type=int, default=1, help="take every N-th source frame (default 1)")
    add("--shift", type=float, default=5.0, help="timestep shift of the training schedule (default 5, as Wan)")
    add("--weighting", choices=WEIGHTINGS, default="bell", help="loss weight over timesteps (default bell)")
    add(
        "--timestep-range",
        nargs=2,
        type=float,
        default=(0.0, 1.0),
        metavar=("LOW", "HIGH"),
        help="train only on sigmas in [LOW, HIGH], e.g. a Wan 2.2 expert's side of its boundary (default 0 1)",
    )
    add(
        "--caption-dropout",
        type=float,
        default=0.0,
        help="probability of replacing a caption by the null prompt, for classifier-free guidance (default 0)",
    )
    add("--null-prompt", default=None, help="the prompt caption dropout uses (default: the task's negative prompt)")
    add("--checkpoint-every", type=int, default=500, help="save a resumable checkpoint every N steps (default 500)")
    add("--keep-checkpoints", type=int, default=2, help="how many checkpoints to keep (default 2)")
    add("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    add("--validate-every", type=int, default=0, help="render the validation prompts every N steps (default never)")
    add("--validation-prompts", nargs="+", default=(), metavar="PROMPT", help="prompts for validation videos")
    add("--validation-steps", type=int, default=20, help="sampling steps of validation videos (default 20)")
    add("--log", choices=LOG_FORMATS, default="csv", help="loss log: loss.csv or TensorBoard (default csv)")
    add("--cache-dir", default=None, help="where cached latents go (default OUTPUT/cache)")
    add("--cache-only", action="store_true", help="cache latents and prompt features, then stop without training")
    add("--seed", type=int, default=0, help="seed of data order, noise and timesteps (default 0)")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    return TrainingConfig(
        model=args.model,
        data=args.data,
        output=args.output,
        task=args.task,
        transformer=args.transformer,
        lora_rank=None if args.full else args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_targets=tuple(args.lora_targets),
        steps=args.steps,
        batch_size=args.batch_size,
        gradient_accumulation=args.gradient_accumulation,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        max_grad_norm=args.max_grad_norm,
        mixed_precision=args.mixed_precision,
        gradient_checkpointing=args.gradient_checkpointing,
        buckets=tuple(args.buckets),
        frame_stride=args.frame_stride,
        shift=args.shift,
        weighting=args.weighting,
        timestep_range=tuple(args.timestep_range),
        caption_dropout=args.caption_dropout,
        null_prompt=args.null_prompt,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        resume=args.resume,
        validate_every=args.validate_every,
        validation_prompts=tuple(args.validation_prompts),
        validation_steps=args.validation_steps,
        log=args.log,
        cache_dir=args.cache_dir,
        cache_only=args.cache_only,
        seed=args.seed,
    )


def run_train(args: argparse.Namespace) -> int:
    """Run training from parsed arguments. Returns the exit status: 1 with a message for bad settings."""
    from .trainer import train

    config = config_from_args(args)
    try:
        config.check()
    except (ValueError, FileNotFoundError) as error:
        logger.error(f"error: {error}")
        return 1
    output = train(config)
    logger.info(f"Wrote {output}")
    return 0
