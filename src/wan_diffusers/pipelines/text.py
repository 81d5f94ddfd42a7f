"""The text side of the Wan pipelines: prompt cleaning, the original default negative prompts, prompt encoding, and
keeping the text encoder on the CPU.

Cleaning is the original tokenizer wrapper's `clean='whitespace'` (`HuggingfaceTokenizer._clean`, `basic_clean` and
`whitespace_clean` in `wan/modules/tokenizers.py`): `ftfy.fix_text`, then
`html.unescape` twice, then every run of whitespace becomes one space and the ends are stripped. `ftfy` is a hard
dependency here: diffusers skips it when it is not installed, and then a prompt with full-width punctuation
tokenises differently (`，` stays instead of becoming `,`).
"""

import html
from contextlib import contextmanager

import ftfy
import regex
import torch
from diffusers.utils.torch_utils import get_module_execution_device

from ..hooks.text_encoder_on_cpu import apply_text_encoder_on_cpu, is_kept_on_cpu, remove_text_encoder_on_cpu
from ..models.transformer_wan import TEXT_CONTEXT_LENGTH
from ..tasks import TASK_NAMES, default_variant
from .experts import wan22_variant_of

# The negative prompt the original uses for each task when none is given (`n_prompt=""`): that of the task's default
# variant (`wan_diffusers.tasks`; every variant of a task has the same one).
DEFAULT_NEGATIVE_PROMPTS = {task: default_variant(task).negative_prompt for task in TASK_NAMES}

_WHITESPACE = regex.compile(r"\s+")


def clean_prompt(text: str) -> str:
    """Normalise a prompt exactly as the original does before tokenising it."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip()


class WanTextEncodingMixin:
    """`encode_prompt` and `keep_text_encoder_on_cpu` for the Wan pipelines."""

    def _get_t5_prompt_embeds(
        self,
        prompt: str | list[str],
        num_videos_per_prompt: int = 1,
        max_sequence_length: int = TEXT_CONTEXT_LENGTH,
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
        max_sequence_length: int = TEXT_CONTEXT_LENGTH,
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
                variant = wan22_variant_of(self)
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
    # Keeping the text encoder on the CPU while everything else runs on the accelerator

    def keep_text_encoder_on_cpu(self, enabled: bool = True) -> None:
        """Run the text encoder on the CPU (the original's `--t5_cpu`), whatever `.to()` or offloading does.

        The UMT5-XXL encoder is 5.7 B parameters (11 GB in bf16) and runs once per prompt, so keeping it in system
        RAM costs a few seconds per video and saves that much accelerator memory. The prompt embeddings are moved to
        the execution device after encoding. Call it before or after `enable_model_cpu_offload()` /
        `enable_sequential_cpu_offload()` / `.to("cuda")`.

        The text encoder gets the `text_encoder_on_cpu` hook (`wan_diffusers.hooks.text_encoder_on_cpu`), which
        takes it back to the CPU and sends its inputs there; the pipeline's placement methods leave it out.
        """
        if self.text_encoder is None:
            return
        if enabled:
            apply_text_encoder_on_cpu(self.text_encoder)
        else:
            remove_text_encoder_on_cpu(self.text_encoder)

    # The smallest honest alternative to a hook alone: a diffusers `ModelHook` acts inside a module's forward, while
    # `.to()` and both offload modes place modules from the pipeline, outside any forward; `.to("cuda")` would move
    # the 11 GB to the accelerator before any hook could run. So these three run diffusers' own method with a text
    # encoder kept on the CPU unregistered for its duration (`register_modules`, which keeps the config in step),
    # and `_exclude_from_cpu_offload` names it so that diffusers' `_execution_device` looks past it to the
    # accelerator the other components run on.

    @property
    def _exclude_from_cpu_offload(self) -> list[str]:
        return ["text_encoder"] if is_kept_on_cpu(self.text_encoder) else []

    @contextmanager
    def _placing_without_kept_text_encoder(self):
        text_encoder = self.text_encoder
        if not is_kept_on_cpu(text_encoder):
            yield
            return
        self.register_modules(text_encoder=None)
        try:
            yield
        finally:
            self.register_modules(text_encoder=text_encoder)

    def to(self, *args, **kwargs):
        with self._placing_without_kept_text_encoder():
            super().to(*args, **kwargs)
        dtype = kwargs.get("dtype") or next((arg for arg in args if isinstance(arg, torch.dtype)), None)
        if dtype is not None and is_kept_on_cpu(self.text_encoder):
            self.text_encoder.to(dtype=dtype)
        return self

    def enable_model_cpu_offload(self, gpu_id: int | None = None, device: torch.device | str | None = None):
        with self._placing_without_kept_text_encoder():
            super().enable_model_cpu_offload(gpu_id=gpu_id, device=device)

    def enable_sequential_cpu_offload(self, gpu_id: int | None = None, device: torch.device | str | None = None):
        with self._placing_without_kept_text_encoder():
            super().enable_sequential_cpu_offload(gpu_id=gpu_id, device=device)
