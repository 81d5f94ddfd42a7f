"""Text-to-video: `WanPipeline`."""

from collections.abc import Callable
from typing import Any

import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.schedulers import FlowMatchEulerDiscreteScheduler
from transformers import AutoTokenizer, UMT5EncoderModel

from ..models.autoencoder_kl_wan import AutoencoderKLWan
from ..models.transformer_wan import TEXT_CONTEXT_LENGTH, WanTransformer3DModel
from .pipeline_base import WanPipelineBase
from .pipeline_output import WanPipelineOutput


class WanPipeline(WanPipelineBase):
    r"""
    Text-to-video generation with Wan 2.1 (T2V-1.3B, T2V-14B) and Wan 2.2 (T2V-A14B, TI2V-5B).

    Wan 2.2 T2V-A14B is two experts: `transformer` (high noise) runs the steps whose timestep is at least
    `boundary_ratio * 1000`, `transformer_2` (low noise) the rest, each with its own guidance (`guidance_scale`,
    `guidance_scale_2`). TI2V-5B (`expand_timesteps=True`) gives the DiT one timestep per token. See
    `wan_diffusers.pipelines.experts`.

    Differences from diffusers' `WanPipeline`, all towards the original Wan2.1 code: `negative_prompt=None` uses the
    original's default negative prompt; prompts are always cleaned with ftfy; `encode_prompt` defaults to 512 tokens;
    `num_frames` that is not 4n + 1 is an error rather than silently rounded; `prompt_embeds` are repeated for
    `num_videos_per_prompt`; `use_original_sampling()` reproduces the original solvers step for step.

    Args:
        tokenizer ([`~transformers.AutoTokenizer`]):
            The umT5 tokenizer (`google/umt5-xxl`).
        text_encoder ([`~transformers.UMT5EncoderModel`]):
            The umT5-XXL encoder.
        vae ([`AutoencoderKLWan`]):
            The Wan 2.1 video VAE.
        scheduler ([`~diffusers.SchedulerMixin`]):
            A flow-matching scheduler: `FlowMatchEulerDiscreteScheduler`, diffusers' UniPC / DPM-Solver++ with
            `use_flow_sigmas=True`, or the original's (see `use_original_sampling`).
        transformer ([`WanTransformer3DModel`]):
            The diffusion transformer; in a two-expert pipeline the high-noise expert.
        transformer_2 ([`WanTransformer3DModel`], *optional*):
            Wan 2.2 A14B: the low-noise expert, for the steps below the boundary.
        boundary_ratio (`float`, *optional*):
            Wan 2.2 A14B: the boundary timestep as a fraction of the training timesteps (0.875 for T2V-A14B); stored in
            the pipeline's config. `None`: `transformer` runs every step.
        expand_timesteps (`bool`, defaults to `False`):
            Wan 2.2 TI2V-5B: one timestep per token; stored in the pipeline's config.
    """

    task = "t2v"
    # Under model offload the active expert alone sits on the accelerator: calling `transformer_2` offloads
    # `transformer`, the step before it in this sequence.
    model_cpu_offload_seq = "text_encoder->transformer->transformer_2->vae"
    _optional_components = ["transformer", "transformer_2"]

    def __init__(
        self,
        tokenizer: AutoTokenizer,
        text_encoder: UMT5EncoderModel,
        vae: AutoencoderKLWan,
        scheduler: FlowMatchEulerDiscreteScheduler,
        transformer: WanTransformer3DModel | None = None,
        transformer_2: WanTransformer3DModel | None = None,
        boundary_ratio: float | None = None,
        expand_timesteps: bool = False,
    ):
        super().__init__()
        self.register_modules(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            vae=vae,
            scheduler=scheduler,
            transformer=transformer,
            transformer_2=transformer_2,
        )
        self.register_to_config(boundary_ratio=boundary_ratio, expand_timesteps=expand_timesteps)
        self._init_video_processor()

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        height: int = 480,
        width: int = 832,
        num_frames: int = 81,
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        guidance_scale_2: float | None = None,
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable[[Any, int, int, dict], dict]
        | PipelineCallback
        | MultiPipelineCallbacks
        | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 (diffusers' signature)
        max_sequence_length: int = TEXT_CONTEXT_LENGTH,
        sigmas: list[float] | None = None,
    ) -> WanPipelineOutput | tuple:
        r"""
        Generate videos from text.

        Args:
            prompt (`str` or `list[str]`, *optional*):
                The prompt or prompts. Pass `prompt_embeds` instead to skip the text encoder.
            negative_prompt (`str` or `list[str]`, *optional*):
                What to steer away from, used when `guidance_scale > 1`. `None` selects the original Wan2.1 default
                negative prompt of the task (diffusers uses `""`); pass `""` for an empty one.
            height (`int`, defaults to `480`):
                Video height in pixels, a multiple of 16.
            width (`int`, defaults to `832`):
                Video width in pixels, a multiple of 16.
            num_frames (`int`, defaults to `81`):
                Number of frames, of the form 4n + 1 (81 frames are 5 s at 16 fps); other values raise a ValueError.
            num_inference_steps (`int`, defaults to `50`):
                Denoising steps.
            guidance_scale (`float`, defaults to `5.0`):
                Classifier-free guidance scale; guidance (a second DiT call per step) is on when it is above 1.
            guidance_scale_2 (`float`, *optional*):
                Two-expert pipelines (Wan 2.2 A14B): the guidance of the low-noise expert `transformer_2`, while
                `guidance_scale` is the high-noise expert's (`transformer`); `None` uses `guidance_scale`. The
                original's defaults, as (guidance_scale, guidance_scale_2): T2V-A14B (4.0, 3.0), I2V-A14B (3.5, 3.5).
            num_videos_per_prompt (`int`, defaults to `1`):
                Videos generated for each prompt.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Random generator(s) for the start noise; a list needs one generator per video.
            latents (`torch.Tensor`, *optional*):
                Start noise [B, 16, (num_frames - 1) / 4 + 1, height / 8, width / 8] instead of drawing it.
            prompt_embeds (`torch.Tensor`, *optional*):
                Text embeddings [B, L <= 512, text_dim] instead of `prompt` (zero-padded to 512 rows by the model).
            negative_prompt_embeds (`torch.Tensor`, *optional*):
                Negative text embeddings [B, L', text_dim] instead of `negative_prompt`; L' may differ from L.
            output_type (`str`, defaults to `"np"`):
                `"np"`, `"pil"`, `"pt"` or `"latent"` (the normalised latents, not decoded).
            return_dict (`bool`, defaults to `True`):
                Return a [`WanPipelineOutput`] instead of a tuple.
            attention_kwargs (`dict`, *optional*):
                Passed to the transformer, e.g. `{"scale": 0.8}` for LoRA adapters.
            callback_on_step_end (`Callable`, `PipelineCallback` or `MultiPipelineCallbacks`, *optional*):
                Called after every step as `callback_on_step_end(pipe, step, timestep, callback_kwargs)`; the tensors
                of the returned dict (`latents`, `prompt_embeds`, `negative_prompt_embeds`) replace the current ones.
            callback_on_step_end_tensor_inputs (`list[str]`, defaults to `["latents"]`):
                Which tensors `callback_kwargs` holds, from `pipe._callback_tensor_inputs`.
            max_sequence_length (`int`, defaults to `512`):
                Tokens per prompt, at most 512.
            sigmas (`list[float]`, *optional*):
                Custom sigmas in (0, 1], before the scheduler's shift, instead of `num_inference_steps`.

        Examples:
            ```py
            >>> import torch
            >>> from diffusers.utils import export_to_video
            >>> from wan_diffusers import WanPipeline

            >>> pipe = WanPipeline.from_pretrained("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", torch_dtype=torch.bfloat16)
            >>> pipe.vae.to(torch.float32)
            >>> pipe.use_original_sampling("unipc", shift=5.0)  # sample exactly like the original generate.py
            >>> pipe.enable_model_cpu_offload()

            >>> video = pipe(
            ...     "A cat walks on the grass, realistic style.",
            ...     height=480,
            ...     width=832,
            ...     num_frames=81,
            ...     guidance_scale=5.0,
            ...     generator=torch.Generator().manual_seed(0),
            ... ).frames[0]
            >>> export_to_video(video, "t2v.mp4", fps=16)
            ```

        Returns:
            [`WanPipelineOutput`] or `tuple`: the videos in `frames`, or `(frames,)` when `return_dict` is `False`.
        """
        # 1. check inputs
        batch_size = self.check_prompt_inputs(
            prompt,
            negative_prompt,
            prompt_embeds,
            negative_prompt_embeds,
            max_sequence_length,
            callback_on_step_end_tensor_inputs,
        )
        self.check_expert_inputs(guidance_scale_2)
        self.check_video_inputs(height, width, num_frames)
        self.check_sampling_inputs(
            num_inference_steps, sigmas, guidance_scale, num_videos_per_prompt, batch_size, generator, output_type
        )
        shape = self.latent_shape(
            batch_size * num_videos_per_prompt, self._dit.config.in_channels, height, width, num_frames
        )
        self.check_latents(latents, shape)
        self._start_call(guidance_scale, attention_kwargs, guidance_scale_2)
        device = self._execution_device

        # 2. encode the prompts
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt=prompt,
            negative_prompt=negative_prompt,
            do_classifier_free_guidance=self.do_classifier_free_guidance,
            num_videos_per_prompt=num_videos_per_prompt,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            max_sequence_length=max_sequence_length,
            device=device,
        )

        # 3. timesteps and start noise
        timesteps = self.set_timesteps(num_inference_steps, sigmas, device)
        latents = self.prepare_latents(shape, device, generator, latents)

        # 4. denoising loop
        latents = self.denoise(
            latents,
            timesteps,
            prompt_embeds,
            negative_prompt_embeds,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )

        # 5. decode
        return self.finish(self.decode_latents(latents, output_type), return_dict)
