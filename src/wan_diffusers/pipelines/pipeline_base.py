"""The base of every Wan pipeline: the input checks and the denoising loop.

`WanPipeline`, `WanImageToVideoPipeline`, `WanVideoToVideoPipeline` and `WanVACEPipeline` subclass `WanPipelineBase`
and only add what their task needs (a condition tensor, image tokens, a start latent, control hints); each calls the
pieces in its own `__call__`, in the numbered order diffusers' pipelines use. The rest of what they share lives with
its concept: loading with this package's model classes (`loading.py`), prompt encoding and keeping the text encoder
on the CPU (`text.py`), the original's samplers (`sampling.py`), latents, the VAE and the output (`video_latents.py`),
Wan 2.2's experts (`experts.py`).
"""

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.hooks.faster_cache import _FASTER_CACHE_DENOISER_HOOK
from diffusers.loaders import WanLoraLoaderMixin
from diffusers.utils import logging

from ..memory.guard import check_call_memory
from ..memory.planner import VRAMBudgetMixin
from ..models.transformer_wan import TEXT_CONTEXT_LENGTH
from .checks import check_finite_number, check_finite_tensor, check_generator, check_result, check_sigmas
from .experts import check_expert_inputs, high_noise_steps, put_image_frame, token_timestep_scale
from .loading import WanModelClassesMixin
from .sampling import OriginalSamplingMixin
from .text import WanTextEncodingMixin
from .video_latents import WanVideoLatentsMixin

logger = logging.get_logger(__name__)

# The DiT inputs with one row per video: a batched guidance call repeats them.
_PER_VIDEO_INPUTS = ("hidden_states", "timestep", "encoder_hidden_states_image", "control_hidden_states")

OUTPUT_TYPES = ("np", "pil", "pt", "latent")


class WanPipelineBase(
    WanModelClassesMixin,
    WanTextEncodingMixin,
    OriginalSamplingMixin,
    WanVideoLatentsMixin,
    DiffusionPipeline,
    WanLoraLoaderMixin,
    VRAMBudgetMixin,
):
    """Shared machinery of the Wan pipelines. Subclasses set `task` (for the default negative prompt) and build on
    the methods below; see `WanPipeline.__call__` for the order they are called in."""

    task = "t2v"
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]
    # The original model's text context length: the DiT zero-pads every text embedding to this many rows.
    text_sequence_length = TEXT_CONTEXT_LENGTH

    def __init__(self):
        super().__init__()
        # call-independent state; the VAE-derived part is set by `_init_video_processor` once the VAE is registered
        self._batched_guidance = False
        # the state of a call (`_start_call`), read by the properties below, callbacks and cache hooks
        self._guidance_scale = 1.0
        self._guidance_scale_2 = None
        self._attention_kwargs = None
        self._current_timestep = None
        self._interrupt = False
        self._num_timesteps = 0

    # ------------------------------------------------------------------------------------------------------------
    # Speed: both guidance branches in one DiT call

    def enable_batched_guidance(self) -> None:
        """Run the conditional and unconditional DiT calls of each step as one call on a batch of twice the size.

        The result is the same (each sample is computed on its own); what changes is speed and memory. One call
        launches every kernel and reads every weight once per step instead of twice, which pays on an accelerator
        when the two calls are small or launch-bound; it needs the DiT's activations for twice the batch at once.
        On a 2-core CPU it was within noise of two calls (`benchmarks/bench_step.py`, RESULTS.md) at twice the DiT's
        activation memory, so the two calls stay separate by default.
        The batch is `[uncond, cond]`, diffusers' order, which FasterCache relies on (on its skip steps it runs the
        second half alone and approximates the first); the other cache hooks (FirstBlockCache, MagCache, SeaCache)
        see one context, "cond_uncond".
        """
        self._batched_guidance = True

    def disable_batched_guidance(self) -> None:
        """Go back to two DiT calls per guided step (the default): conditional, then unconditional."""
        self._batched_guidance = False

    # ------------------------------------------------------------------------------------------------------------
    # Properties read by callbacks and cache hooks (same names as diffusers' pipelines)

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def guidance_scale_2(self) -> float | None:
        """The low-noise expert's guidance in a two-expert pipeline (Wan 2.2 A14B); `None` elsewhere."""
        return self._guidance_scale_2

    @property
    def do_classifier_free_guidance(self) -> bool:
        # With two experts, guidance runs when either expert's scale asks for it (diffusers reads only the first).
        return self._guidance_scale > 1.0 or (self.guidance_scale_2 or 0.0) > 1.0

    @property
    def _dit(self):
        """`transformer`, or `transformer_2` in a two-expert pipeline that holds only that one (for its config)."""
        transformer = getattr(self, "transformer", None)
        return transformer if transformer is not None else getattr(self, "transformer_2", None)

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def current_timestep(self):
        return self._current_timestep

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    @property
    def attention_kwargs(self) -> dict | None:
        return self._attention_kwargs

    # ------------------------------------------------------------------------------------------------------------
    # Input checks: every one raises a ValueError naming the argument before any model runs

    def check_prompt_inputs(
        self,
        prompt,
        negative_prompt,
        prompt_embeds,
        negative_prompt_embeds,
        max_sequence_length,
        callback_on_step_end_tensor_inputs,
    ) -> int:
        """Check the text inputs; returns the number of prompts."""
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError(
                "Pass exactly one of `prompt` and `prompt_embeds`, got "
                + ("both" if prompt is not None else "neither")
            )
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("Pass at most one of `negative_prompt` and `negative_prompt_embeds`, got both")
        if not isinstance(max_sequence_length, int) or not 1 <= max_sequence_length <= self.text_sequence_length:
            raise ValueError(
                f"`max_sequence_length` must be an integer from 1 to {self.text_sequence_length} (the model's text "
                f"length), got {max_sequence_length!r}"
            )
        if prompt is not None:
            batch_size = _check_text("prompt", prompt)
        else:
            batch_size = self._check_embeds("prompt_embeds", prompt_embeds)
        if negative_prompt is not None:
            negative_batch = _check_text("negative_prompt", negative_prompt)
            if isinstance(negative_prompt, list) and negative_batch != batch_size:
                raise ValueError(
                    f"`negative_prompt` must be a string or a list of {batch_size} strings (one per prompt), got a "
                    f"list of {negative_batch}"
                )
        if negative_prompt_embeds is not None:
            self._check_embeds("negative_prompt_embeds", negative_prompt_embeds)
            if prompt_embeds is not None and (
                negative_prompt_embeds.shape[0] != prompt_embeds.shape[0]
                or negative_prompt_embeds.shape[2] != prompt_embeds.shape[2]
            ):
                raise ValueError(
                    "`negative_prompt_embeds` must have the batch size and width of `prompt_embeds` (the sequence "
                    f"lengths may differ), got {list(negative_prompt_embeds.shape)} and {list(prompt_embeds.shape)}"
                )
            if negative_prompt_embeds.shape[0] != batch_size:
                raise ValueError(
                    f"`negative_prompt_embeds` must hold one embedding per prompt ({batch_size}), got "
                    f"{negative_prompt_embeds.shape[0]}"
                )
        if callback_on_step_end_tensor_inputs is not None:
            unknown = [name for name in callback_on_step_end_tensor_inputs if name not in self._callback_tensor_inputs]
            if unknown:
                raise ValueError(
                    f"`callback_on_step_end_tensor_inputs` must be names from {self._callback_tensor_inputs}, got "
                    f"{unknown}"
                )
        return batch_size

    def _check_embeds(self, name: str, embeds) -> int:
        text_dim = self._dit.config.text_dim if self._dit is not None else None
        if not isinstance(embeds, torch.Tensor) or embeds.ndim != 3:
            got = list(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
            raise ValueError(f"`{name}` must be a tensor [batch, sequence, {text_dim or 'text_dim'}], got {got}")
        if text_dim is not None and embeds.shape[2] != text_dim:
            raise ValueError(
                f"`{name}` must have the text width of the transformer ({text_dim}) in its last dimension, got "
                f"{list(embeds.shape)}"
            )
        if not 1 <= embeds.shape[1] <= self.text_sequence_length:
            raise ValueError(
                f"`{name}` may have at most {self.text_sequence_length} tokens (the model's text length), got "
                f"{embeds.shape[1]}"
            )
        check_finite_tensor(name, embeds)
        return embeds.shape[0]

    def check_video_inputs(self, height, width, num_frames) -> None:
        """Check the video size: height and width divisible by 16, num_frames of the form 4n + 1."""
        multiple = self.vae_scale_factor_spatial * self._dit.config.patch_size[1]
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value < multiple or value % multiple:
                raise ValueError(
                    f"`{name}` must be a positive multiple of {multiple} (the VAE stride times the patch size), got "
                    f"{value!r}"
                )
        temporal = self.vae_scale_factor_temporal
        if not isinstance(num_frames, int) or num_frames < 1 or (num_frames - 1) % temporal:
            if isinstance(num_frames, int) and num_frames > 1:
                lower = (num_frames - 1) // temporal * temporal + 1
                hint = f"; the nearest valid values are {lower} and {lower + temporal}"
            else:
                hint = ""
            raise ValueError(
                f"`num_frames` must be of the form {temporal}n + 1 (1, 5, ..., 81), got {num_frames!r}{hint}"
            )
        # refuse what cannot fit on the device before anything is allocated (wan_diffusers/memory/guard.py)
        check_call_memory(self, height, width, num_frames)

    def check_sampling_inputs(
        self, num_inference_steps, sigmas, guidance_scale, num_videos_per_prompt, batch_size, generator, output_type
    ) -> None:
        """Check the steps, guidance, batch, generators and output type."""
        if sigmas is None and (not isinstance(num_inference_steps, int) or num_inference_steps < 1):
            raise ValueError(f"`num_inference_steps` must be a positive integer, got {num_inference_steps!r}")
        if sigmas is not None and len(sigmas) < 1:
            raise ValueError("`sigmas` must hold at least one value, got an empty list")
        if not isinstance(guidance_scale, (int, float)):
            raise ValueError(f"`guidance_scale` must be a number, got {guidance_scale!r}")
        if not isinstance(num_videos_per_prompt, int) or num_videos_per_prompt < 1:
            raise ValueError(f"`num_videos_per_prompt` must be a positive integer, got {num_videos_per_prompt!r}")
        if isinstance(generator, list) and len(generator) != batch_size * num_videos_per_prompt:
            raise ValueError(
                f"`generator` as a list must hold one generator per video: {batch_size} prompt(s) x "
                f"{num_videos_per_prompt} video(s) = {batch_size * num_videos_per_prompt}, got {len(generator)}"
            )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}")
        check_finite_number("guidance_scale", guidance_scale)
        check_sigmas(sigmas)
        check_generator(generator)

    def check_latents(self, latents, shape: tuple) -> None:
        if latents is not None and (not isinstance(latents, torch.Tensor) or tuple(latents.shape) != tuple(shape)):
            got = list(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"`latents` must be a tensor of shape {list(shape)} for these settings, got {got}")
        check_finite_tensor("latents", latents)

    # ------------------------------------------------------------------------------------------------------------
    # The steps of a call

    def check_expert_inputs(self, guidance_scale_2: float | None) -> None:
        """Check the two-expert setup (Wan 2.2 A14B: `transformer_2`, `boundary_ratio`) and `guidance_scale_2`."""
        check_expert_inputs(
            getattr(self.config, "boundary_ratio", None),
            getattr(self, "transformer", None),
            getattr(self, "transformer_2", None),
            guidance_scale_2,
        )

    def _start_call(
        self, guidance_scale: float, attention_kwargs: dict | None, guidance_scale_2: float | None = None
    ) -> None:
        self._guidance_scale = guidance_scale
        # diffusers: in a two-expert pipeline the low-noise expert takes `guidance_scale` unless told otherwise
        if guidance_scale_2 is None and getattr(self.config, "boundary_ratio", None) is not None:
            guidance_scale_2 = guidance_scale
        self._guidance_scale_2 = guidance_scale_2
        self._attention_kwargs = attention_kwargs
        self._current_timestep = None
        self._interrupt = False
        self._num_timesteps = 0
        self.check_cache_hooks()

    def check_cache_hooks(self) -> None:
        """diffusers' FasterCache approximates the unconditional half of one `[uncond, cond]` batch; two separate
        guidance calls of one video each would fail inside it (an IndexError), so say what to do instead."""
        if not self.do_classifier_free_guidance or self._batched_guidance:
            return
        for name in ("transformer", "transformer_2"):
            registry = getattr(getattr(self, name, None), "_diffusers_hook", None)
            if registry is not None and registry.get_hook(_FASTER_CACHE_DENOISER_HOOK) is not None:
                raise ValueError(
                    f"`{name}` has diffusers' FasterCache, which needs both guidance branches in one batch: call "
                    "`pipe.enable_batched_guidance()` first (or run with `guidance_scale` <= 1)"
                )

    def set_timesteps(self, num_inference_steps: int, sigmas: list[float] | None, device) -> torch.Tensor:
        """`scheduler.set_timesteps` with either a step count or custom (unshifted) sigmas; returns the timesteps."""
        if sigmas is not None:
            if "sigmas" not in inspect.signature(self.scheduler.set_timesteps).parameters:
                raise ValueError(
                    f"`sigmas` needs a scheduler that accepts custom sigmas; {type(self.scheduler).__name__} does not"
                )
            # a numpy array: diffusers' UniPC cannot shift a plain list
            self.scheduler.set_timesteps(sigmas=np.asarray(sigmas, dtype=np.float64), device=device)
        else:
            self.scheduler.set_timesteps(num_inference_steps, device=device)
        return self.scheduler.timesteps

    def denoise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        prompt_embeds: torch.Tensor,
        negative_prompt_embeds: torch.Tensor | None,
        condition: torch.Tensor | None = None,
        transformer_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        begin_index: int = 0,
        image_latent: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The sampling loop: one conditional and (with guidance) one unconditional DiT call per step, then a step.

        `condition` [B, C', F, H, W] is concatenated to the latents along channels (I2V: mask + condition latent);
        `transformer_kwargs` go to both calls (image tokens, VACE hints). The guided prediction is
        `uncond + g * (cond - uncond)` as in the original. By default the two calls run as separate batches, each
        under its own `cache_context`, so diffusers' cache hooks see "cond" and "uncond"; after
        `enable_batched_guidance()` they run as one batch of twice the size under the context "cond_uncond".

        Wan 2.2 (see `wan_diffusers.pipelines.experts`): with `transformer_2` and `boundary_ratio` each step runs the
        expert its timestep belongs to, with that expert's guidance; with `expand_timesteps` (TI2V-5B) the DiT gets
        one timestep per token, and `image_latent` [B or 1, C, 1, h, w] (image-to-video) is latent frame 0: its
        tokens get timestep 0 and it is put back into the latents before the loop and after every step.
        """
        transformer_kwargs = dict(transformer_kwargs or {})
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or []
        embeds = {"prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_prompt_embeds}

        self._num_timesteps = len(timesteps)
        self.scheduler.set_begin_index(begin_index)
        # read once: indexing a device tensor with float() in the loop would wait for the accelerator every step
        sigmas = self.scheduler.sigmas[begin_index:].tolist()
        experts = self._experts_per_step(timesteps)
        for name, value in embeds.items():
            if value is not None and experts:
                embeds[name] = value.to(experts[0][0].dtype)
        token_scale = None
        if getattr(self.config, "expand_timesteps", False):
            token_scale = token_timestep_scale(
                latents.shape, self._dit.config.patch_size, image_latent is not None, latents.device
            )
        if image_latent is not None:
            latents = put_image_frame(latents, image_latent)
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                self._current_timestep = t
                transformer, guidance_scale = experts[i]
                model_input = latents if condition is None else torch.cat([latents, condition], dim=1)
                model_input = model_input.to(transformer.dtype)
                if token_scale is None:
                    timestep = t.expand(latents.shape[0])
                else:
                    timestep = (token_scale * t).expand(latents.shape[0], -1)  # (B, tokens)
                call = dict(hidden_states=model_input, timestep=timestep, **transformer_kwargs)
                cache_kwargs = {"step_index": i, "sigma": sigmas[i], "num_inference_steps": len(timesteps)}
                noise_pred = self._guided_prediction(transformer, guidance_scale, call, embeds, cache_kwargs)

                latents = self.scheduler.step(noise_pred, t, latents, return_dict=False)[0]
                if image_latent is not None:
                    latents = put_image_frame(latents, image_latent)

                if callback_on_step_end is not None:
                    tensors = {"latents": latents, **embeds}
                    callback_kwargs = {name: tensors[name] for name in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                    latents = callback_outputs.pop("latents", latents)
                    for name in embeds:
                        embeds[name] = callback_outputs.pop(name, embeds[name])
                progress_bar.update()
        self._current_timestep = None
        if not self.interrupt:
            check_result(latents)
        return latents

    def _experts_per_step(self, timesteps: torch.Tensor) -> list[tuple[torch.nn.Module, float]]:
        """(DiT, guidance scale) of every step: `transformer` throughout, or in a two-expert pipeline the expert of
        each step's timestep (`experts.high_noise_steps`). Raises before the loop if a step needs a missing expert."""
        boundary_ratio = getattr(self.config, "boundary_ratio", None)
        if boundary_ratio is None:
            return [(self.transformer, self._guidance_scale)] * len(timesteps)
        values = timesteps.tolist()
        high_noise = high_noise_steps(values, boundary_ratio, self.scheduler.config.num_train_timesteps)
        experts = []
        for step, (value, is_high) in enumerate(zip(values, high_noise)):
            name = "transformer" if is_high else "transformer_2"
            if getattr(self, name, None) is None:
                raise ValueError(
                    f"Step {step} (timestep {value:g}) belongs to `{name}` by `boundary_ratio` {boundary_ratio}, but "
                    f"the pipeline has no `{name}`"
                )
            experts.append((getattr(self, name), self._guidance_scale if is_high else self._guidance_scale_2))
        return experts

    def _guided_prediction(
        self, transformer, guidance_scale: float, call: dict, embeds: dict, cache_kwargs: dict
    ) -> torch.Tensor:
        """The flow prediction of one step (float32): conditional, or guided `uncond + g * (cond - uncond)`."""
        prompt_embeds, negative_prompt_embeds = embeds["prompt_embeds"], embeds["negative_prompt_embeds"]
        if not self.do_classifier_free_guidance:
            return self._predict(transformer, "cond", prompt_embeds, cache_kwargs, call)
        if self._batched_guidance:
            both = self._predict(
                transformer,
                "cond_uncond",
                _stack_text(negative_prompt_embeds, prompt_embeds),
                cache_kwargs,
                _doubled(call),
            )
            noise_uncond, noise_cond = both.chunk(2)
        else:
            noise_cond = self._predict(transformer, "cond", prompt_embeds, cache_kwargs, call)
            noise_uncond = self._predict(transformer, "uncond", negative_prompt_embeds, cache_kwargs, call)
        return noise_uncond + guidance_scale * (noise_cond - noise_uncond)

    def _predict(self, transformer, name: str, encoder_hidden_states, cache_kwargs: dict, call: dict) -> torch.Tensor:
        """One DiT call under the cache context `name` ("cond" / "uncond"); the flow prediction in float32."""
        with transformer.cache_context(name, **cache_kwargs):
            output = transformer(
                encoder_hidden_states=encoder_hidden_states.to(transformer.dtype),
                attention_kwargs=self._attention_kwargs,
                return_dict=False,
                **call,
            )[0]
        return output.float()


def _stack_text(*embeddings: torch.Tensor) -> torch.Tensor:
    """Text embeddings as one batch, in the order given, the shorter zero-padded to the longest: the DiT zero-pads
    every text embedding to 512 rows anyway, so the padding changes nothing."""
    length = max(embeds.shape[1] for embeds in embeddings)
    return torch.cat([F.pad(embeds, (0, 0, 0, length - embeds.shape[1])) for embeds in embeddings])


def _doubled(call: dict) -> dict:
    """The DiT inputs of one call, each batched tensor repeated so that the batch holds every video twice."""
    return {name: torch.cat([value, value]) if name in _PER_VIDEO_INPUTS else value for name, value in call.items()}


def _check_text(name: str, value) -> int:
    if isinstance(value, str):
        return 1
    if isinstance(value, list) and value and all(isinstance(text, str) for text in value):
        return len(value)
    raise ValueError(f"`{name}` must be a string or a non-empty list of strings, got {type(value).__name__}")
