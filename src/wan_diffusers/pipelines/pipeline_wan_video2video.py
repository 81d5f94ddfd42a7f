"""Video-to-video (SDEdit): `WanVideoToVideoPipeline`."""

from collections.abc import Callable
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.schedulers import FlowMatchEulerDiscreteScheduler
from transformers import AutoTokenizer, UMT5EncoderModel

from ..models.autoencoder_kl_wan import AutoencoderKLWan
from ..models.transformer_wan import TEXT_CONTEXT_LENGTH, WanTransformer3DModel
from .checks import check_pixel_values
from .pipeline_base import WanPipelineBase
from .pipeline_output import WanPipelineOutput

VIDEO_TYPES = (
    "a list of PIL images or numpy arrays [H, W, 3], a numpy array [F, H, W, 3] or a torch.Tensor [F, 3, H, W] "
    "(values in [0, 1] or uint8), or a batch of those"
)


class WanVideoToVideoPipeline(WanPipelineBase):
    r"""
    Video-to-video generation (SDEdit) with the Wan 2.1 text-to-video models.

    The input video is encoded, noised to the sigma where sampling starts (set by `strength`) and denoised under the
    prompt. Compared with diffusers' `WanVideoToVideoPipeline`: the frame count comes from the video (4n + 1
    frames, else a ValueError), `num_videos_per_prompt` works, one video can condition several prompts, the
    denoising calls run under cache contexts like the other pipelines, `latents` is the noise to mix in (diffusers
    uses it as an already noised start and skips the video), and `negative_prompt=None` uses the original T2V
    default negative prompt.

    Args:
        tokenizer ([`~transformers.AutoTokenizer`]):
            The umT5 tokenizer.
        text_encoder ([`~transformers.UMT5EncoderModel`]):
            The umT5-XXL encoder.
        transformer ([`WanTransformer3DModel`]):
            A text-to-video diffusion transformer.
        vae ([`AutoencoderKLWan`]):
            The Wan 2.1 video VAE.
        scheduler ([`~diffusers.SchedulerMixin`]):
            A flow-matching scheduler (see `WanPipeline`).
    """

    task = "v2v"
    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _optional_components = []

    def __init__(
        self,
        tokenizer: AutoTokenizer,
        text_encoder: UMT5EncoderModel,
        transformer: WanTransformer3DModel,
        vae: AutoencoderKLWan,
        scheduler: FlowMatchEulerDiscreteScheduler,
    ):
        super().__init__()
        self.register_modules(
            tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae, scheduler=scheduler
        )
        self._init_video_processor()

    def check_video(self, video, height, width, batch_size) -> tuple[torch.Tensor, int, int]:
        """Check the input video and preprocess it; returns [N, 3, F, height, width] in [-1, 1] and the size."""
        if video is None:
            raise ValueError(f"`video` is required: {VIDEO_TYPES}")
        check_pixel_values("video", video)
        try:
            frame_height, frame_width = _frame_size(video)
        except (TypeError, IndexError, AttributeError) as error:
            raise ValueError(f"`video` must be {VIDEO_TYPES}, got {type(video).__name__}") from error
        if (height is None) != (width is None):
            raise ValueError(f"Pass both `height` and `width`, or neither, got height={height} and width={width}")
        if height is None:
            # the video's own size, rounded down to what the VAE and the patch size accept
            multiple = self.vae_scale_factor_spatial * self.transformer.config.patch_size[1]
            height, width = frame_height // multiple * multiple, frame_width // multiple * multiple
        self.check_video_inputs(height, width, 1)
        try:
            pixels = self.video_processor.preprocess_video(video, height=height, width=width)
        except ValueError as error:
            raise ValueError(f"`video` must be {VIDEO_TYPES}: {error}") from error
        num_frames = pixels.shape[2]
        self.check_video_inputs(height, width, num_frames)
        if pixels.shape[0] not in (1, batch_size):
            raise ValueError(
                f"`video` must hold one video, or one per prompt ({batch_size}), got a batch of {pixels.shape[0]}"
            )
        return pixels, height, width

    @torch.no_grad()
    def __call__(
        self,
        video: list[PIL.Image.Image] | np.ndarray | torch.Tensor | None = None,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        timesteps: list[int] | None = None,
        guidance_scale: float = 5.0,
        strength: float = 0.8,
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
        Regenerate a video under a prompt, keeping its layout and motion to a degree set by `strength`.

        Args:
            video (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`, required):
                The input video with 4n + 1 frames: a list of PIL images or numpy arrays [H, W, 3], a numpy array [F,
                H, W, 3] or a tensor [F, 3, H, W] (values in [0, 1], or uint8), or a batch with one per prompt.
            prompt (`str` or `list[str]`, *optional*):
                The prompt or prompts. Pass `prompt_embeds` instead to skip the text encoder.
            negative_prompt (`str` or `list[str]`, *optional*):
                What to steer away from, used when `guidance_scale > 1`. `None` selects the original Wan2.1 default
                negative prompt of the task (diffusers uses `""`); pass `""` for an empty one.
            height (`int`, *optional*):
                Output height in pixels, a multiple of 16; the video is resized to it. Defaults to the video's own
                height rounded down to a multiple of 16.
            width (`int`, *optional*):
                Output width in pixels, a multiple of 16; defaults to the video's width rounded down likewise.
            num_inference_steps (`int`, defaults to `50`):
                Steps of the full schedule; `strength` of them are run.
            timesteps (`list[int]`, *optional*):
                Custom timesteps of the full schedule, for schedulers that accept them.
            guidance_scale (`float`, defaults to `5.0`):
                Classifier-free guidance scale; guidance (a second DiT call per step) is on when it is above 1.
            strength (`float`, defaults to `0.8`):
                In (0, 1]: the part of the schedule that is run. 1 starts from pure noise (the video only sets the
                size); small values stay close to the input. `strength * num_inference_steps` must be at least 1.
            num_videos_per_prompt (`int`, defaults to `1`):
                Videos generated for each prompt.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Random generator(s) for the start noise; a list needs one generator per video.
            latents (`torch.Tensor`, *optional*):
                The noise [B, 16, (F - 1) / 4 + 1, height / 8, width / 8] mixed into the video latents, instead of
                drawing it.
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
                Custom sigmas of the full schedule, before the scheduler's shift, instead of `num_inference_steps`.

        Examples:
            ```py
            >>> import torch
            >>> from diffusers.utils import export_to_video, load_video
            >>> from wan_diffusers import WanVideoToVideoPipeline

            >>> pipe = WanVideoToVideoPipeline.from_pretrained(
            ...     "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", torch_dtype=torch.bfloat16
            ... )
            >>> pipe.vae.to(torch.float32)
            >>> pipe.enable_model_cpu_offload()

            >>> video = load_video("input.mp4")[:81]  # 4n + 1 frames
            >>> output = pipe(
            ...     video=video,
            ...     prompt="A robot dancing in the rain, cinematic lighting.",
            ...     height=480,
            ...     width=832,
            ...     strength=0.7,
            ...     guidance_scale=5.0,
            ... ).frames[0]
            >>> export_to_video(output, "v2v.mp4", fps=16)
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
        pixels, height, width = self.check_video(video, height, width, batch_size)
        self.check_sampling_inputs(
            num_inference_steps, sigmas, guidance_scale, num_videos_per_prompt, batch_size, generator, output_type
        )
        if timesteps is not None and sigmas is not None:
            raise ValueError("Pass at most one of `timesteps` and `sigmas`, got both")
        if not isinstance(strength, (int, float)) or not 0 < strength <= 1:
            raise ValueError(f"`strength` must be in (0, 1], got {strength!r}")
        custom_schedule = timesteps if timesteps is not None else sigmas
        full_steps = len(custom_schedule) if custom_schedule is not None else num_inference_steps
        steps_to_run = min(int(full_steps * strength), full_steps)
        if steps_to_run < 1:
            raise ValueError(
                f"`strength` x steps must be at least 1 step, got {strength} x {full_steps}: raise `strength` or "
                "`num_inference_steps`"
            )
        num_videos = batch_size * num_videos_per_prompt
        shape = self.latent_shape(num_videos, self.transformer.config.in_channels, height, width, pixels.shape[2])
        self.check_latents(latents, shape)
        self._start_call(guidance_scale, attention_kwargs)
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

        # 3. timesteps: the last `strength` part of the full schedule
        if timesteps is not None:
            self.scheduler.set_timesteps(timesteps=timesteps, device=device)
            all_timesteps = self.scheduler.timesteps
        else:
            all_timesteps = self.set_timesteps(num_inference_steps, sigmas, device)
        begin_index = (len(all_timesteps) - steps_to_run) * self.scheduler.order
        timesteps = all_timesteps[begin_index:]

        # 4. start latents: the video latents noised to the first sigma that is run, x = s * noise + (1 - s) * x0
        video_latents = torch.cat([self.encode_video(clip[None]) for clip in pixels]).to(device)
        repeats = num_videos // video_latents.shape[0]
        video_latents = video_latents.repeat_interleave(repeats, dim=0)
        noise = self.prepare_latents(shape, device, generator, latents)
        sigma = self.scheduler.sigmas[begin_index].to(device=device, dtype=noise.dtype)
        latents = sigma * noise + (1.0 - sigma) * video_latents

        # 5. denoising loop
        latents = self.denoise(
            latents,
            timesteps,
            prompt_embeds,
            negative_prompt_embeds,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            begin_index=begin_index,
        )

        # 6. decode
        return self.finish(self.decode_latents(latents, output_type), return_dict)


def _frame_size(video) -> tuple[int, int]:
    """(height, width) of the first frame of any accepted video form."""
    if isinstance(video, (np.ndarray, torch.Tensor)):
        if video.ndim == 5:  # a batch
            video = video[0]
        if isinstance(video, np.ndarray):
            return int(video.shape[1]), int(video.shape[2])  # [F, H, W, C]
        return int(video.shape[2]), int(video.shape[3])  # [F, C, H, W]
    frame = video[0]
    if isinstance(frame, list):  # a batch of lists
        frame = frame[0]
    if isinstance(frame, PIL.Image.Image):
        return frame.height, frame.width
    if isinstance(frame, np.ndarray):
        return int(frame.shape[0]), int(frame.shape[1])
    if isinstance(frame, torch.Tensor):
        return int(frame.shape[-2]), int(frame.shape[-1])
    raise TypeError(type(frame).__name__)
