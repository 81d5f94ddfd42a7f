"""What every Wan pipeline shares: loading, prompt encoding, input checks, latents, the denoising loop, decoding.

`WanPipeline`, `WanImageToVideoPipeline`, `WanVideoToVideoPipeline` and `WanVACEPipeline` subclass `WanPipelineBase`
and only add what their task needs (a condition tensor, image tokens, a start latent, control hints). The pieces are
methods so a subclass calls them in its own `__call__`, in the numbered order diffusers' pipelines use.
"""

import importlib
import inspect
import json
import os
import textwrap
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import accelerate.hooks
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.loaders import WanLoraLoaderMixin
from diffusers.utils import logging, replace_example_docstring
from diffusers.utils.torch_utils import get_module_execution_device, randn_tensor
from diffusers.video_processor import VideoProcessor

from ..memory.guard import check_call_memory
from ..memory.planner import VRAMBudgetMixin
from ..tasks import wan22_variant
from .checks import check_finite_number, check_finite_tensor, check_generator, check_result, check_sigmas
from .experts import check_expert_inputs, high_noise_steps, put_image_frame, token_timestep_scale
from .pipeline_output import WanPipelineOutput
from .sampling import original_scheduler, scheduler_shift
from .text import DEFAULT_NEGATIVE_PROMPTS, clean_prompt

logger = logging.get_logger(__name__)

# diffusers' Wan classes that official Hub repos name in `model_index.json`, and the module of ours that replaces
# each. `from_pretrained` builds ours for those components (see `WanPipelineBase.from_pretrained`).
_OWN_CLASS_MODULES = {
    "WanTransformer3DModel": "wan_diffusers.models.transformer_wan",
    "WanVACETransformer3DModel": "wan_diffusers.models.transformer_wan_vace",
    "AutoencoderKLWan": "wan_diffusers.models.autoencoder_kl_wan",
}
# `from_pretrained` arguments that only matter for fetching a Hub repo.
_DOWNLOAD_KWARGS = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision", "variant")
# `from_pretrained` arguments forwarded to every model we load ourselves.
# The DiT inputs with one row per video: a batched guidance call repeats them.
_PER_VIDEO_INPUTS = ("hidden_states", "timestep", "encoder_hidden_states_image", "control_hidden_states")
_MODEL_LOADING_KWARGS = ("variant", "use_safetensors", "low_cpu_mem_usage")

OUTPUT_TYPES = ("np", "pil", "pt", "latent")

# The `__call__` arguments the pipelines share, documented once: `document_call` writes each pipeline's `Args:`
# section from these and its own entries, in signature order, with the defaults read from the signature.
CALL_ARGUMENTS = {
    "prompt": (
        "`str` or `list[str]`",
        "The prompt or prompts. Pass `prompt_embeds` instead to skip the text encoder.",
    ),
    "negative_prompt": (
        "`str` or `list[str]`",
        "What to steer away from, used when `guidance_scale > 1`. `None` selects the original Wan2.1 default "
        'negative prompt of the task (diffusers uses `""`); pass `""` for an empty one.',
    ),
    "num_inference_steps": ("`int`", "Denoising steps."),
    "guidance_scale": (
        "`float`",
        "Classifier-free guidance scale; guidance (a second DiT call per step) is on when it is above 1.",
    ),
    "guidance_scale_2": (
        "`float`",
        "Two-expert pipelines (Wan 2.2 A14B): the guidance of the low-noise expert `transformer_2`, while "
        "`guidance_scale` is the high-noise expert's (`transformer`); `None` uses `guidance_scale`. The original's "
        "defaults, as (guidance_scale, guidance_scale_2): T2V-A14B (4.0, 3.0), I2V-A14B (3.5, 3.5).",
    ),
    "num_videos_per_prompt": ("`int`", "Videos generated for each prompt."),
    "generator": (
        "`torch.Generator` or `list[torch.Generator]`",
        "Random generator(s) for the start noise; a list needs one generator per video.",
    ),
    "latents": (
        "`torch.Tensor`",
        "Start noise [B, 16, (num_frames - 1) / 4 + 1, height / 8, width / 8] instead of drawing it.",
    ),
    "prompt_embeds": (
        "`torch.Tensor`",
        "Text embeddings [B, L <= 512, text_dim] instead of `prompt` (zero-padded to 512 rows by the model).",
    ),
    "negative_prompt_embeds": (
        "`torch.Tensor`",
        "Negative text embeddings [B, L', text_dim] instead of `negative_prompt`; L' may differ from L.",
    ),
    "output_type": ("`str`", '`"np"`, `"pil"`, `"pt"` or `"latent"` (the normalised latents, not decoded).'),
    "return_dict": ("`bool`", "Return a [`WanPipelineOutput`] instead of a tuple."),
    "attention_kwargs": ("`dict`", 'Passed to the transformer, e.g. `{"scale": 0.8}` for LoRA adapters.'),
    "callback_on_step_end": (
        "`Callable`, `PipelineCallback` or `MultiPipelineCallbacks`",
        "Called after every step as `callback_on_step_end(pipe, step, timestep, callback_kwargs)`; the tensors of "
        "the returned dict (`latents`, `prompt_embeds`, `negative_prompt_embeds`) replace the current ones.",
    ),
    "callback_on_step_end_tensor_inputs": (
        "`list[str]`",
        "Which tensors `callback_kwargs` holds, from `pipe._callback_tensor_inputs`.",
    ),
    "max_sequence_length": ("`int`", "Tokens per prompt, at most 512."),
    "sigmas": (
        "`list[float]`",
        "Custom sigmas in (0, 1], before the scheduler's shift, instead of `num_inference_steps`.",
    ),
}


def document_call(example: str, **arguments: tuple[str, ...]):
    """Decorator for a pipeline's `__call__`: fills its empty `Args:` section and its `Examples:` section.

    Each argument of the signature is documented by its entry in `arguments` (`name=(type, description)`, or
    `(type, description, qualifier)` to replace the default shown, e.g. "required") or else in `CALL_ARGUMENTS`; its
    default is read from the signature, so the documentation cannot drift from the code. An argument documented
    nowhere, or an entry for an argument the signature lacks, is an error at import.
    """

    def decorate(function):
        parameters = [p for name, p in inspect.signature(function).parameters.items() if name != "self"]
        unknown = set(arguments) - {p.name for p in parameters}
        missing = [p.name for p in parameters if p.name not in arguments and p.name not in CALL_ARGUMENTS]
        if unknown or missing:
            raise TypeError(
                f"{function.__qualname__}: undocumented {missing}, documented but absent {sorted(unknown)}"
            )
        lines = []
        for parameter in parameters:
            kind, text, *qualifier = arguments.get(parameter.name) or CALL_ARGUMENTS[parameter.name]
            if not qualifier:
                default = parameter.default
                qualifier = ["*optional*" if default is None else f"defaults to `{_default_text(default)}`"]
            lines.append(f"            {parameter.name} ({kind}, {qualifier[0]}):")
            lines += textwrap.wrap(text, 119, initial_indent=" " * 16, subsequent_indent=" " * 16)
        function.__doc__ = function.__doc__.replace("        Args:\n", "        Args:\n" + "\n".join(lines) + "\n", 1)
        return replace_example_docstring(example)(function)

    return decorate


def _default_text(value) -> str:
    return json.dumps(value) if isinstance(value, (str, list)) else repr(value)


class WanPipelineBase(DiffusionPipeline, WanLoraLoaderMixin, VRAMBudgetMixin):
    """Shared machinery of the Wan pipelines. Subclasses set `task` (for the default negative prompt) and build on
    the methods below; see `WanPipeline.__call__` for the order they are called in."""

    task = "t2v"
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]
    # The original model's text context length: the DiT zero-pads every text embedding to this many rows.
    text_sequence_length = 512

    def _init_video_processor(self):
        self.vae_scale_factor_temporal = self.vae.config.scale_factor_temporal if getattr(self, "vae", None) else 4
        self.vae_scale_factor_spatial = self.vae.config.scale_factor_spatial if getattr(self, "vae", None) else 8
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_scale_factor_spatial)
        self._text_encoder_on_cpu = False

    # ------------------------------------------------------------------------------------------------------------
    # Loading

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load a pipeline folder or Hub repo, building this package's classes for the Wan models.

        Official Diffusers-format repos (`Wan-AI/Wan2.1-*-Diffusers`) name `["diffusers", "WanTransformer3DModel"]`
        and `["diffusers", "AutoencoderKLWan"]` in `model_index.json`; a plain `DiffusionPipeline.from_pretrained`
        would build diffusers' classes from them. Here those components are loaded with `wan_diffusers`'
        classes (same config and weight format) and handed to diffusers' loader, which loads the rest as usual.
        `torch_dtype` (a dtype or a `{component: dtype, "default": dtype}` dict), `variant`, `use_safetensors`,
        `low_cpu_mem_usage` and a pipeline `quantization_config` apply to them as to any other component.
        """
        folder = str(pretrained_model_name_or_path)
        if not os.path.isdir(folder):
            download_kwargs = {key: kwargs[key] for key in _DOWNLOAD_KWARGS if key in kwargs}
            folder = cls.download(folder, **download_kwargs)
        model_index = cls.load_config(folder)
        expected_modules, _ = cls._get_signature_keys(cls)
        for name in expected_modules:
            entry = model_index.get(name)
            if name in kwargs or not isinstance(entry, (list, tuple)) or len(entry) != 2:
                continue
            library, class_name = entry
            if library == "diffusers" and class_name in _OWN_CLASS_MODULES:
                own_class = getattr(importlib.import_module(_OWN_CLASS_MODULES[class_name]), class_name)
                kwargs[name] = own_class.from_pretrained(folder, subfolder=name, **_model_loading_kwargs(name, kwargs))
        return super().from_pretrained(folder, **kwargs)

    # ------------------------------------------------------------------------------------------------------------
    # Sampling like the original

    def use_original_sampling(self, solver: str = "unipc", shift: float | None = None) -> None:
        """Sample exactly like the original `generate.py --sample_solver {solver} --sample_shift {shift}`.

        Replaces `self.scheduler` with diffusers' UniPC or DPM-Solver++ set up with the original sigma schedule
        (`wan_diffusers.pipelines.sampling`); `--sample_steps` is `num_inference_steps` of the call. `shift` defaults
        to the current scheduler's shift; for a Wan 2.2 pipeline (two experts, or per-token timesteps) to the
        original's for that model (12 for T2V-A14B, 5 for I2V-A14B and TI2V-5B: official Diffusers repos of the A14B
        models carry 3.0). With the original's inputs, the final latents then match the original within float32
        rounding; the A14B experts switch at the same step as in the original.

        Example: `pipe.use_original_sampling("unipc", shift=5.0)`.
        """
        variant = self._wan22_variant()
        if shift is None and variant is not None:
            shift = variant.shift
        if shift is None:
            shift = scheduler_shift(self.scheduler)
            if shift is None:
                raise ValueError(
                    f"`shift` is required: the current scheduler ({type(self.scheduler).__name__}) has no flow shift"
                )
        self.scheduler = original_scheduler(solver, shift)

    # ------------------------------------------------------------------------------------------------------------
    # Speed: both guidance branches in one DiT call

    def enable_batched_guidance(self) -> None:
        """Run the conditional and unconditional DiT calls of each step as one call on a batch of twice the size.

        The result is the same (each sample is computed on its own); what changes is speed and memory. One call
        launches every kernel and reads every weight once per step instead of twice, which pays on an accelerator
        when the two calls are small or launch-bound; it needs the DiT's activations for twice the batch at once.
        On a 2-core CPU it was within noise of two calls (`benchmarks/bench_step.py`, RESULTS.md) at twice the DiT's
        activation memory, so the two calls stay separate by default.
        diffusers' cache hooks (FirstBlockCache, MagCache) then see one context, "cond_uncond".
        """
        self._batched_guidance = True

    def disable_batched_guidance(self) -> None:
        """Go back to two DiT calls per guided step (the default): conditional, then unconditional."""
        self._batched_guidance = False

    # ------------------------------------------------------------------------------------------------------------
    # Memory: the text encoder can stay on the CPU while everything else runs on the accelerator

    def keep_text_encoder_on_cpu(self, enabled: bool = True) -> None:
        """Run the text encoder on the CPU (the original's `--t5_cpu`), whatever `.to()` or offloading does.

        The UMT5-XXL encoder is 5.7 B parameters (11 GB in bf16) and runs once per prompt, so keeping it in system
        RAM costs a few seconds per video and saves that much accelerator memory. The prompt embeddings are moved to
        the execution device after encoding. Call it before or after `enable_model_cpu_offload()` /
        `enable_sequential_cpu_offload()` / `.to("cuda")`.
        """
        self._text_encoder_on_cpu = enabled
        if enabled and self.text_encoder is not None:
            self._detach_text_encoder()

    def _detach_text_encoder(self):
        # removing accelerate's hooks restores offloaded weights to where they were before the hooks
        accelerate.hooks.remove_hook_from_module(self.text_encoder, recurse=True)
        self.text_encoder.to("cpu")

    @contextmanager
    def _text_encoder_hidden(self):
        """While active, diffusers' placement methods (`.to()`, offloading) do not see the text encoder, if it is
        kept on the CPU: it never visits the accelerator (11 GB in bf16) and gets no hooks."""
        text_encoder = self.__dict__.get("text_encoder")
        if not getattr(self, "_text_encoder_on_cpu", False) or text_encoder is None:
            yield
            return
        self.__dict__["text_encoder"] = None
        try:
            yield
        finally:
            self.__dict__["text_encoder"] = text_encoder

    def to(self, *args, **kwargs):
        with self._text_encoder_hidden():
            super().to(*args, **kwargs)
        dtype = kwargs.get("dtype") or next((arg for arg in args if isinstance(arg, torch.dtype)), None)
        if getattr(self, "_text_encoder_on_cpu", False) and self.text_encoder is not None and dtype is not None:
            self.text_encoder.to(dtype=dtype)
        return self

    def enable_model_cpu_offload(self, gpu_id: int | None = None, device: torch.device | str | None = None):
        with self._text_encoder_hidden():
            super().enable_model_cpu_offload(gpu_id=gpu_id, device=device)

    def enable_sequential_cpu_offload(self, gpu_id: int | None = None, device: torch.device | str | None = None):
        with self._text_encoder_hidden():
            super().enable_sequential_cpu_offload(gpu_id=gpu_id, device=device)

    @property
    def _execution_device(self):
        if not getattr(self, "_text_encoder_on_cpu", False):
            return super()._execution_device
        for name, component in self.components.items():
            if name != "text_encoder" and isinstance(component, torch.nn.Module):
                return get_module_execution_device(component)
        return torch.device("cpu")

    # ------------------------------------------------------------------------------------------------------------
    # Properties read by callbacks and cache hooks (same names as diffusers' pipelines)

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def guidance_scale_2(self) -> float | None:
        """The low-noise expert's guidance in a two-expert pipeline (Wan 2.2 A14B); `None` elsewhere."""
        return getattr(self, "_guidance_scale_2", None)

    @property
    def do_classifier_free_guidance(self) -> bool:
        # With two experts, guidance runs when either expert's scale asks for it (diffusers reads only the first).
        return self._guidance_scale > 1.0 or (self.guidance_scale_2 or 0.0) > 1.0

    def _wan22_variant(self):
        """The Wan 2.2 record of `wan_diffusers.tasks` this pipeline runs (two experts, or per-token timesteps)."""
        config = self.config
        two_experts = config.get("boundary_ratio") is not None
        per_token = bool(config.get("expand_timesteps"))
        if not (two_experts or per_token):
            return None
        return wan22_variant(self.task, two_experts=two_experts, per_token_timesteps=per_token)

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
    # Prompt encoding

    def _get_t5_prompt_embeds(
        self,
        prompt: str | list[str],
        num_videos_per_prompt: int = 1,
        max_sequence_length: int = 512,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """UMT5 features [B * num_videos_per_prompt, max_sequence_length, C], zero after each prompt's last token.

        The original trims each output to its length and the DiT zero-pads it again to 512 rows; zeroing the padded
        positions here is the same thing.
        """
        device = device or self._execution_device
        dtype = dtype or self.text_encoder.dtype
        prompt = [prompt] if isinstance(prompt, str) else prompt
        text_inputs = self.tokenizer(
            [clean_prompt(text) for text in prompt],
            padding="max_length",
            max_length=max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        encoder_device = get_module_execution_device(self.text_encoder)
        attention_mask = text_inputs.attention_mask.to(encoder_device)
        hidden_states = self.text_encoder(
            input_ids=text_inputs.input_ids.to(encoder_device), attention_mask=attention_mask
        ).last_hidden_state
        hidden_states = hidden_states.masked_fill(~attention_mask.bool()[..., None], 0.0)
        return hidden_states.to(device=device, dtype=dtype).repeat_interleave(num_videos_per_prompt, dim=0)

    def encode_prompt(
        self,
        prompt: str | list[str] | None,
        negative_prompt: str | list[str] | None = None,
        do_classifier_free_guidance: bool = True,
        num_videos_per_prompt: int = 1,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        max_sequence_length: int = 512,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        r"""
        Encode the prompt and, with classifier-free guidance, the negative prompt.

        Args:
            prompt (`str` or `list[str]`, *optional*):
                The prompt(s). Cleaned as the original does (ftfy, HTML entities, whitespace) before tokenising.
            negative_prompt (`str` or `list[str]`, *optional*):
                The negative prompt(s). `None` selects the original's default negative prompt of this task (diffusers
                uses `""`); pass `""` for an empty one.
            do_classifier_free_guidance (`bool`, defaults to `True`):
                Whether to encode the negative prompt as well.
            num_videos_per_prompt (`int`, defaults to 1):
                Copies of each embedding, one per video generated for the prompt.
            prompt_embeds (`torch.Tensor`, *optional*):
                Precomputed prompt embeddings [B, L, C] instead of `prompt`; repeated `num_videos_per_prompt` times.
            negative_prompt_embeds (`torch.Tensor`, *optional*):
                Precomputed negative embeddings [B, L', C] instead of `negative_prompt`.
            max_sequence_length (`int`, defaults to 512):
                Tokens per prompt, at most 512 (the original's text length; diffusers' `encode_prompt` defaults to
                226, which the I2V model cannot use).
            device (`torch.device`, *optional*):
                Where the embeddings go; the execution device by default.
            dtype (`torch.dtype`, *optional*):
                Their dtype; the text encoder's by default.

        Returns:
            `(prompt_embeds, negative_prompt_embeds)`; the second is `None` without classifier-free guidance.
        """
        device = device or self._execution_device
        if prompt_embeds is None:
            prompt_embeds = self._get_t5_prompt_embeds(
                prompt, num_videos_per_prompt, max_sequence_length, device, dtype
            )
        else:
            prompt_embeds = prompt_embeds.to(device=device, dtype=dtype or prompt_embeds.dtype)
            prompt_embeds = prompt_embeds.repeat_interleave(num_videos_per_prompt, dim=0)
        if not do_classifier_free_guidance:
            return prompt_embeds, None

        if negative_prompt_embeds is None:
            batch_size = prompt_embeds.shape[0] // num_videos_per_prompt
            if negative_prompt is None:
                variant = self._wan22_variant()
                negative_prompt = DEFAULT_NEGATIVE_PROMPTS[self.task] if variant is None else variant.negative_prompt
            if isinstance(negative_prompt, str):
                negative_prompt = [negative_prompt] * batch_size
            negative_prompt_embeds = self._get_t5_prompt_embeds(
                negative_prompt, num_videos_per_prompt, max_sequence_length, device, dtype
            )
        else:
            negative_prompt_embeds = negative_prompt_embeds.to(
                device=device, dtype=dtype or negative_prompt_embeds.dtype
            )
            negative_prompt_embeds = negative_prompt_embeds.repeat_interleave(num_videos_per_prompt, dim=0)
        return prompt_embeds, negative_prompt_embeds

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

    def latent_shape(self, batch_size: int, num_channels: int, height: int, width: int, num_frames: int) -> tuple:
        """[B, C, (num_frames - 1) / 4 + 1, height / 8, width / 8]."""
        return (
            batch_size,
            num_channels,
            (num_frames - 1) // self.vae_scale_factor_temporal + 1,
            height // self.vae_scale_factor_spatial,
            width // self.vae_scale_factor_spatial,
        )

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

    def prepare_latents(self, shape: tuple, device, generator, latents: torch.Tensor | None = None) -> torch.Tensor:
        """Start noise, float32 (the original keeps latents and the solver in float32 whatever the DiT runs in)."""
        if latents is not None:
            return latents.to(device=device, dtype=torch.float32)
        return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)

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
        if getattr(self, "_batched_guidance", False):
            both = self._predict(
                transformer,
                "cond_uncond",
                _stack_text(prompt_embeds, negative_prompt_embeds),
                cache_kwargs,
                _doubled(call),
            )
            noise_cond, noise_uncond = both.chunk(2)
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

    def normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE posterior -> model space: `(z - mean) * (1 / std)`, per channel, as the original `WanVAE.encode`."""
        mean, inv_std = self._latent_statistics(latents)
        return (latents - mean) * inv_std

    def denormalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Model space -> VAE latents: `z / (1 / std) + mean`, as the original `WanVAE.decode` writes it."""
        mean, inv_std = self._latent_statistics(latents)
        return latents / inv_std + mean

    def _latent_statistics(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(self.vae.config.latents_mean, dtype=torch.float32).view(shape)
        inv_std = 1.0 / torch.tensor(self.vae.config.latents_std, dtype=torch.float32).view(shape)
        return mean.to(latents.device, latents.dtype), inv_std.to(latents.device, latents.dtype)

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """Pixels [B, 3, F, H, W] in [-1, 1] -> normalised latents (the posterior mode, float32)."""
        vae_device = get_module_execution_device(self.vae)
        posterior = self.vae.encode(video.to(device=vae_device, dtype=self.vae.dtype)).latent_dist
        return self.normalize_latents(posterior.mode().float())

    def decode_latents(self, latents: torch.Tensor, output_type: str):
        """Normalised latents -> frames in the requested `output_type` (`latent` returns them unchanged)."""
        if output_type == "latent":
            return latents
        vae_device = get_module_execution_device(self.vae)
        latents = self.denormalize_latents(latents.to(device=vae_device, dtype=self.vae.dtype))
        video = self.vae.decode(latents, return_dict=False)[0]
        return self.video_processor.postprocess_video(video, output_type=output_type)

    def finish(self, video, return_dict: bool):
        self.maybe_free_model_hooks()
        if not return_dict:
            return (video,)
        return WanPipelineOutput(frames=video)


def _stack_text(prompt_embeds: torch.Tensor, negative_prompt_embeds: torch.Tensor) -> torch.Tensor:
    """The two text embeddings as one batch, the shorter zero-padded to the longer: the DiT zero-pads every text
    embedding to 512 rows anyway, so the padding changes nothing."""
    length = max(prompt_embeds.shape[1], negative_prompt_embeds.shape[1])
    padded = [F.pad(embeds, (0, 0, 0, length - embeds.shape[1])) for embeds in (prompt_embeds, negative_prompt_embeds)]
    return torch.cat(padded)


def _doubled(call: dict) -> dict:
    """The DiT inputs of one call, each batched tensor repeated so that the batch holds every video twice."""
    return {name: torch.cat([value, value]) if name in _PER_VIDEO_INPUTS else value for name, value in call.items()}


def _check_text(name: str, value) -> int:
    if isinstance(value, str):
        return 1
    if isinstance(value, list) and value and all(isinstance(text, str) for text in value):
        return len(value)
    raise ValueError(f"`{name}` must be a string or a non-empty list of strings, got {type(value).__name__}")


def _model_loading_kwargs(name: str, kwargs: dict) -> dict:
    """The `from_pretrained` arguments of a pipeline that apply to its component `name`."""
    loading = {key: kwargs[key] for key in _MODEL_LOADING_KWARGS if key in kwargs}
    dtype = kwargs.get("torch_dtype", kwargs.get("dtype"))
    if isinstance(dtype, dict):
        dtype = dtype.get(name, dtype.get("default", torch.float32))
    if dtype is not None:
        loading["torch_dtype"] = dtype
    quantization_config = kwargs.get("quantization_config")
    if quantization_config is not None and hasattr(quantization_config, "_resolve_quant_config"):
        resolved = quantization_config._resolve_quant_config(is_diffusers=True, module_name=name)
        if resolved is not None:
            loading["quantization_config"] = resolved
    return loading
