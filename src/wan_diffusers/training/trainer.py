"""`train`: LoRA or full fine-tuning of a Wan DiT with accelerate, from a folder of captioned videos or images.

One process or many: run it directly for one device, or under `accelerate launch --config_file CONFIG` for DDP, FSDP
or DeepSpeed (the config chooses; this code only uses `Accelerator.prepare`, `accumulate`, `get_state_dict` and
`save_state` / `load_state`, which all of them support). Mixed precision is accelerate's (`--mixed-precision`).

Steps: (1) read and check the data, (2) cache latents and prompt features once (main process), (3) train with the
flow-matching objective (`training.objective`), saving checkpoints every `checkpoint_every` steps and rendering
validation videos every `validate_every` steps, (4) save the result: a LoRA in diffusers' and the original format, or
the full transformer in the Hub format.
"""

import csv
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data import (
    Bucket,
    BucketBatchSampler,
    CachedDataset,
    LatentCache,
    choose_bucket,
    collate,
    discover,
    read_frames,
    resize_crop,
)
from .objective import WEIGHTINGS, FlowMatchingObjective

logger = logging.getLogger(__name__)

TASKS = ("t2v", "i2v", "vace")
LOG_FORMATS = ("csv", "tensorboard")


@dataclass
class TrainingConfig:
    """Everything a run needs; `wan-diffusers train --help` documents each field under its flag name."""

    model: str
    data: str
    output: str
    task: str = "t2v"
    transformer: str = "transformer"  # or "transformer_2", the Wan 2.2 low-noise expert
    lora_rank: int | None = 16  # None: full fine-tuning
    lora_alpha: float | None = None
    lora_targets: tuple[str, ...] = ()
    steps: int = 1000
    batch_size: int = 1
    gradient_accumulation: int = 1
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    buckets: tuple[str, ...] = ("480x832x81",)
    frame_stride: int = 1
    shift: float = 5.0
    weighting: str = "bell"
    timestep_range: tuple[float, float] = (0.0, 1.0)  # of sigma: (0.9, 1.0) trains the high-noise end only
    caption_dropout: float = 0.0
    null_prompt: str | None = None  # None: the task's default negative prompt, what guidance contrasts with
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    resume: bool = False
    validate_every: int = 0
    validation_prompts: tuple[str, ...] = ()
    validation_steps: int = 20
    validation_guidance: float = 5.0
    log: str = "csv"
    seed: int = 0
    cache_dir: str | None = None
    cache_only: bool = False  # build the cache and stop (to prepare data before training, or on another machine)
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        """Raise a clear error for a bad setting, before any model is loaded."""
        if self.task not in TASKS:
            raise ValueError(f"`--task` must be one of {TASKS}, got {self.task!r}")
        if self.transformer not in ("transformer", "transformer_2"):
            raise ValueError(f"`--transformer` must be transformer or transformer_2, got {self.transformer!r}")
        if self.lora_rank is not None and self.lora_rank < 1:
            raise ValueError(f"`--lora-rank` must be at least 1 (or use --full), got {self.lora_rank}")
        for name in ("steps", "batch_size", "gradient_accumulation", "frame_stride", "validation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"`--{name.replace('_', '-')}` must be at least 1, got {getattr(self, name)}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"`--mixed-precision` must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"`--weighting` must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.log not in LOG_FORMATS:
            raise ValueError(f"`--log` must be one of {LOG_FORMATS}, got {self.log!r}")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(f"`--caption-dropout` must be in [0, 1), got {self.caption_dropout}")
        low, high = self.timestep_range
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"`--timestep-range` must be two fractions 0 <= low < high <= 1, got {low} {high}")
        for text in self.buckets:
            bucket = Bucket.parse(text)
            if bucket.height % 16 or bucket.width % 16 or (bucket.num_frames - 1) % 4:
                raise ValueError(
                    f"`--buckets` entry {text} must have height and width divisible by 16 and 1 + 4k frames "
                    "(such as 480x832x81)"
                )
        if not Path(self.data).is_dir():
            raise FileNotFoundError(f"`--data` must be a folder of videos or images with captions, got {self.data}")


# -- the models ----------------------------------------------------------------------------------------------------


def load_pipeline(config: TrainingConfig):
    """The task's pipeline from `--model`, float32 on the CPU (the encoders run there once, for the cache)."""
    from ..pipelines.pipeline_wan import WanPipeline
    from ..pipelines.pipeline_wan_i2v import WanImageToVideoPipeline
    from ..pipelines.pipeline_wan_vace import WanVACEPipeline

    pipeline_class = {"t2v": WanPipeline, "i2v": WanImageToVideoPipeline, "vace": WanVACEPipeline}[config.task]
    pipe = pipeline_class.from_pretrained(config.model, dtype=torch.float32)
    if getattr(pipe, config.transformer, None) is None:
        raise ValueError(f"`--transformer` {config.transformer}: the model at {config.model} has none")
    return pipe


def model_inputs(pipe, task: str, video: torch.Tensor, caption: str) -> dict[str, torch.Tensor]:
    """What one sample contributes to the cache: `latents` (normalised, [C, F, h, w]), `prompt_embeds` ([L, D], its
    own tokens only) and, per task, its conditions: I2V the first frame's `condition` and CLIP `image_embeds`, VACE a
    `control` input that shows the first frame and asks for the rest (the pipeline's image-to-video use of VACE)."""
    with torch.no_grad():
        latents = pipe.encode_video(video[None])[0]
        inputs = {"latents": latents, "prompt_embeds": prompt_features(pipe, caption)}
        num_frames, height, width = video.shape[1:]
        first = video[:, 0]
        if task == "i2v":
            inputs["condition"] = pipe.prepare_condition([first], height, width, num_frames)[0]
            inputs["image_embeds"] = pipe.encode_image([first])[0]
        elif task == "vace":
            frames = torch.zeros_like(video)  # [3, F, H, W]
            frames[:, 0] = first
            mask = torch.ones(1, num_frames, height, width)
            mask[:, 0] = 0.0  # 0: keep (the given first frame), 1: generate
            inputs["control"] = pipe.prepare_vace_context(frames, mask, [])[0]
    return inputs


def null_prompt_embeds(pipe, config: TrainingConfig) -> torch.Tensor:
    """The prompt features caption dropout swaps in: by default the task's default negative prompt, which is what
    classifier-free guidance contrasts with at inference in this package."""
    from ..pipelines.text import DEFAULT_NEGATIVE_PROMPTS

    text = DEFAULT_NEGATIVE_PROMPTS[config.task] if config.null_prompt is None else config.null_prompt
    return prompt_features(pipe, text)


@torch.no_grad()
def prompt_features(pipe, text: str) -> torch.Tensor:
    """The pipeline's umT5 features of `text` [L, D], cut after its last token (the DiT zero-pads them back to 512
    rows, as the pipeline's own zeroed padding)."""
    from ..pipelines.text import clean_prompt

    embeds = pipe._get_t5_prompt_embeds(text, device=torch.device("cpu"))[0]
    length = len(pipe.tokenizer(clean_prompt(text), truncation=True, max_length=embeds.shape[0]).input_ids)
    return embeds[: max(1, length)]


# -- the cache -----------------------------------------------------------------------------------------------------


def build_cache(pipe, config: TrainingConfig, output: Path) -> tuple[LatentCache, list[str], list[str]]:
    """Encode every usable sample once (skipping those already cached); list the bad ones in `bad_samples.txt`."""
    from tqdm.auto import tqdm

    items, bad = discover(config.data)
    buckets = [Bucket.parse(text) for text in config.buckets]
    longest = max(bucket.num_frames for bucket in buckets)
    cache = LatentCache(config.cache_dir or output / "cache", encoders_fingerprint(pipe, config.task))
    keys, key_buckets = [], []
    for item in tqdm(items, desc="caching latents"):
        cached = [
            bucket for bucket in buckets if cache.path(cache.key(item, f"{bucket}|{config.frame_stride}")).exists()
        ]
        if len(cached) == 1:  # encoded before (a resumed run, another run with the same encoders): skip decoding
            keys.append(cache.key(item, f"{cached[0]}|{config.frame_stride}"))
            key_buckets.append(str(cached[0]))
            continue
        try:
            frames = read_frames_best(item.path, buckets, longest, config.frame_stride)
            bucket = choose_bucket(frames, buckets, len(frames))
            if bucket is None:
                raise ValueError(
                    f"too few frames ({len(frames)}; the shortest bucket needs {min(b.num_frames for b in buckets)})"
                )
            key = cache.key(item, f"{bucket}|{config.frame_stride}")
            if not cache.path(key).exists():
                video = resize_crop(frames[: bucket.num_frames], bucket.height, bucket.width)
                inputs = model_inputs(pipe, config.task, video, item.caption)
                cache.save(key, inputs, {"source": str(item.path), "caption": item.caption, "bucket": str(bucket)})
            keys.append(key)
            key_buckets.append(str(bucket))
        except Exception as error:  # a bad file must never stop the run: list it and go on
            reason = " ".join(f"{type(error).__name__}: {error}".split())  # one line per sample
            bad.append((str(item.path.name), reason))
    null = null_prompt_embeds(pipe, config)
    cache.save("null_prompt", {"prompt_embeds": null}, {"caption": config.null_prompt or "(default negative prompt)"})
    with open(output / "bad_samples.txt", "w") as handle:
        handle.writelines(f"{name}\t{reason}\n" for name, reason in bad)
    if bad:
        logger.warning("%d bad samples skipped, listed in %s", len(bad), output / "bad_samples.txt")
    if not keys:
        raise ValueError(f"`--data` {config.data}: no usable sample (see {output / 'bad_samples.txt'})")
    (output / "cache_index.json").write_text(json.dumps({"keys": keys, "buckets": key_buckets}))
    return cache, keys, key_buckets


def encoders_fingerprint(pipe, task: str) -> str:
    """What the cached values depend on: the task, the configs and weights (a sample of each tensor) of the text and
    image encoders and of the VAE's encoder half. A cache is shared by runs of models with the same encoders (a base
    model and its fine-tunes, also with a fine-tuned VAE decoder) and never reused with others."""
    import hashlib

    digest = hashlib.sha1(f"{task}|{len(pipe.tokenizer)}".encode())
    for name in ("vae", "text_encoder", "image_encoder"):
        component = getattr(pipe, name, None)
        if component is None:
            continue
        config = component.config.to_dict() if hasattr(component.config, "to_dict") else dict(component.config)
        config = {key: value for key, value in config.items() if not key.startswith("_")}  # paths, versions
        digest.update(json.dumps(config, sort_keys=True, default=str).encode())
        for key, tensor in component.state_dict().items():
            if name != "vae" or key.startswith(("encoder.", "quant_conv.")):
                digest.update(tensor.detach().flatten()[:16].float().numpy().tobytes())
    return digest.hexdigest()[:16]


def read_frames_best(path: Path, buckets: list[Bucket], longest: int, frame_stride: int) -> np.ndarray:
    """The frames for the longest bucket the file has enough frames for (an image gives its one frame)."""
    for num_frames in sorted({bucket.num_frames for bucket in buckets}, reverse=True):
        try:
            return read_frames(path, num_frames, frame_stride)
        except ValueError as error:
            if "too few frames" not in str(error) or num_frames == min(b.num_frames for b in buckets):
                raise
    raise AssertionError("unreachable")


# -- logging -------------------------------------------------------------------------------------------------------


class LossLog:
    """Appends `step,loss,learning_rate,seconds` rows to `loss.csv`, or writes TensorBoard scalars."""

    def __init__(self, output: Path, kind: str):
        self.kind = kind
        if kind == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(output / "tensorboard"))
        else:
            self.path = output / "loss.csv"
            if not self.path.exists():
                self.path.write_text("step,loss,learning_rate,seconds\n")

    def write(self, step: int, loss: float, learning_rate: float, seconds: float) -> None:
        if self.kind == "tensorboard":
            self.writer.add_scalar("loss", loss, step)
            self.writer.add_scalar("learning_rate", learning_rate, step)
        else:
            with open(self.path, "a", newline="") as handle:
                csv.writer(handle).writerow([step, f"{loss:.6f}", f"{learning_rate:.3e}", f"{seconds:.1f}"])


# -- the run -------------------------------------------------------------------------------------------------------


def train(config: TrainingConfig) -> Path:
    """Run `config`; returns the output folder (`lora/` or `transformer/` inside it, plus logs and checkpoints)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    config.check()
    output = Path(config.output)
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != launched:
        # e.g. an FSDP or multi-GPU config on a machine without GPUs: accelerate then gives every process a run of
        # its own, and they would overwrite each other's checkpoints
        raise RuntimeError(
            f"launched as {launched} processes, but accelerate set up {accelerator.num_processes} "
            f"({accelerator.distributed_type}); on CPUs use a config with `use_cpu: true` (DDP over gloo) and "
            "ACCELERATE_USE_CPU=true"
        )
    set_seed(config.seed)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        (output / "training_config.json").write_text(json.dumps(asdict(config), indent=1))
        environment = {
            "num_processes": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type),
            "mixed_precision": accelerator.mixed_precision,
            "device": str(accelerator.device),
        }
        (output / "environment.json").write_text(json.dumps(environment, indent=1))
        logger.info("training on %s", environment)

    # 1-2. the models, and the cache (built by the main process; the others wait and read its index)
    pipe = load_pipeline(config)
    if accelerator.is_main_process:
        build_cache(pipe, config, output)
    accelerator.wait_for_everyone()
    if config.cache_only:
        return output
    index = json.loads((output / "cache_index.json").read_text())
    cache = LatentCache(config.cache_dir or output / "cache", fingerprint="")
    dataset = CachedDataset(cache, index["keys"], index["buckets"])
    null_embeds = cache.load("null_prompt")["prompt_embeds"]
    sampler = BucketBatchSampler(dataset.buckets, config.batch_size, seed=config.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=0)

    transformer = getattr(pipe, config.transformer)
    transformer.requires_grad_(False)
    if config.lora_rank is not None:
        from .lora import DEFAULT_TARGETS, lora_config

        transformer.add_adapter(
            lora_config(config.lora_rank, config.lora_alpha, config.lora_targets or DEFAULT_TARGETS)
        )
    else:
        transformer.requires_grad_(True)
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    parameters = [parameter for parameter in transformer.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = max(1, config.warmup_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    model, optimizer, schedule = accelerator.prepare(transformer, optimizer, schedule)
    objective = FlowMatchingObjective(config.shift, config.weighting, sigma_range=config.timestep_range)

    # resume: the newest checkpoint restores model, optimizer, schedule and the step counter
    step = 0
    checkpoints = output / "checkpoints"
    if config.resume and checkpoints.exists():
        saved = completed_checkpoints(checkpoints)
        if saved:
            step, latest = saved[-1]
            accelerator.load_state(str(latest))
            logger.info("resumed from %s", latest)
    log = LossLog(output, config.log) if accelerator.is_main_process else None
    batches_per_epoch = len(sampler)
    progress = tqdm(total=config.steps, initial=step, desc="training", disable=not accelerator.is_main_process)
    start, losses = time.time(), []
    # 3. the loop: one optimizer step per `gradient_accumulation` batches; each process draws its own batches
    micro_step = step * config.gradient_accumulation
    while step < config.steps:
        epoch, skip = divmod(micro_step, batches_per_epoch)
        sampler.set_epoch(epoch * accelerator.num_processes + accelerator.process_index)
        for position, batch in enumerate(loader):
            if position < skip:
                continue
            generator = torch.Generator().manual_seed(
                (config.seed * 1_000_003 + micro_step) * accelerator.num_processes + accelerator.process_index
            )
            with accelerator.accumulate(model):
                loss = _loss(model, batch, objective, generator, null_embeds, config, accelerator.device)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
            micro_step += 1
            losses.append(accelerator.gather(loss.detach()[None]).mean().item())
            if not accelerator.sync_gradients:
                continue
            step += 1
            progress.update(1)
            mean_loss = float(np.mean(losses))
            losses = []
            progress.set_postfix(loss=f"{mean_loss:.4f}")
            if log is not None:
                log.write(step, mean_loss, schedule.get_last_lr()[0], time.time() - start)
            # the last step is saved too, so that `--resume` with more `--steps` continues the run exactly
            if config.checkpoint_every and (step % config.checkpoint_every == 0 or step == config.steps):
                _checkpoint(accelerator, checkpoints, step, config.keep_checkpoints)
            if config.validate_every and step % config.validate_every == 0 and accelerator.is_main_process:
                validate(pipe, config, output / "validation" / f"step-{step}")
                model.train()
            if step >= config.steps:
                break
    progress.close()

    # 4. the result
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(model)
        if config.lora_rank is not None:
            from .lora import save_lora

            folder = output / "lora"
            folder.mkdir(exist_ok=True)
            save_lora(final, folder, alpha=config.lora_alpha or config.lora_rank, state_dict=state_dict)
        else:
            partial = output / f"{config.transformer}.partial"
            final.save_pretrained(partial, state_dict=state_dict, safe_serialization=True)
            if (output / config.transformer).exists():
                shutil.rmtree(output / config.transformer)
            partial.rename(output / config.transformer)
        if config.validate_every and config.steps % config.validate_every:
            validate(pipe, config, output / "validation" / f"step-{config.steps}")
        logger.info("done: %d steps in %.0f s, output in %s", config.steps, time.time() - start, output)
    accelerator.end_training()
    return output


def _loss(model, batch, objective, generator, null_embeds, config, device) -> torch.Tensor:
    latents = batch["latents"].to(device)
    prompt_embeds = batch["prompt_embeds"]
    if config.caption_dropout:
        drop = torch.rand(latents.shape[0], generator=generator) < config.caption_dropout
        if drop.any():
            length = max(prompt_embeds.shape[1], null_embeds.shape[0])
            prompt_embeds = torch.nn.functional.pad(prompt_embeds, (0, 0, 0, length - prompt_embeds.shape[1]))
            null = torch.nn.functional.pad(null_embeds, (0, 0, 0, length - null_embeds.shape[0]))
            prompt_embeds = torch.where(drop[:, None, None], null[None], prompt_embeds)
    noisy, timesteps, target, weights = objective.sample(latents, generator)
    kwargs = {}
    if config.task == "i2v":
        noisy = torch.cat([noisy, batch["condition"].to(device)], dim=1)
        kwargs["encoder_hidden_states_image"] = batch["image_embeds"].to(device)
    elif config.task == "vace":
        kwargs["control_hidden_states"] = batch["control"].to(device)
    prediction = model(
        hidden_states=noisy,
        timestep=timesteps,
        encoder_hidden_states=prompt_embeds.to(device),
        return_dict=False,
        **kwargs,
    )[0]
    return objective.loss(prediction, target, weights)


def completed_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """The (step, path) of every complete `step-N` checkpoint in `folder`, oldest first; a `step-N.partial` left by an
    interrupted save is not one."""
    return sorted((int(path.name.split("-")[1]), path) for path in Path(folder).glob("step-*[0-9]"))


def _checkpoint(accelerator, folder: Path, step: int, keep: int) -> None:
    """`accelerator.save_state` into `step-N` (written under a temporary name), keeping the newest `keep`."""
    partial = folder / f"step-{step}.partial"
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        partial.rename(folder / f"step-{step}")
        for _, path in completed_checkpoints(folder)[:-keep]:
            shutil.rmtree(path)


@torch.no_grad()
def validate(pipe, config: TrainingConfig, folder: Path) -> None:
    """Render `validation_prompts` (seed `config.seed`, the first bucket's size) to mp4 files in `folder`."""
    from ..utils.video_io import export_to_mp4

    if not config.validation_prompts or config.task != "t2v":
        return  # I2V and VACE validation need an input image or video: render them with the pipeline instead
    bucket = Bucket.parse(config.buckets[0])
    folder.mkdir(parents=True, exist_ok=True)
    transformer = getattr(pipe, config.transformer)
    was_training = transformer.training
    transformer.eval()
    for number, prompt in enumerate(config.validation_prompts):
        video = pipe(
            prompt,
            height=bucket.height,
            width=bucket.width,
            num_frames=bucket.num_frames,
            num_inference_steps=config.validation_steps,
            guidance_scale=config.validation_guidance,
            generator=torch.Generator().manual_seed(config.seed),
            output_type="np",
        ).frames[0]
        export_to_mp4(video, folder / f"{number:02d}.mp4")
    transformer.train(was_training)
