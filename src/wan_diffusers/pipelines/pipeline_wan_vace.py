"""All-in-one video creation and editing (VACE): `WanVACEPipeline`."""

import numbers
from collections.abc import Callable
from typing import Any

import PIL.Image
import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.schedulers import FlowMatchEulerDiscreteScheduler
from transformers import AutoTokenizer, UMT5EncoderModel

from ..models.autoencoder_kl_wan import AutoencoderKLWan
from ..models.transformer_wan import TEXT_CONTEXT_LENGTH
from ..models.transformer_wan_vace import WanVACETransformer3DModel
from .pipeline_base import WanPipelineBase
from .pipeline_output import WanPipelineOutput
from .vace_inputs import (
    mask_to_tensor,
    reference_image_list,
    reference_on_canvas,
    resize_to_cover,
    vace_context,
    video_to_tensor,
)


class WanVACEPipeline(WanPipelineBase):
    r"""
    All-in-one video creation and editing with Wan2.1-VACE (1.3B, 14B): text-to-video, reference-to-video, control
    videos, masked inpainting and outpainting, extension from first or last frames, and their combinations.

    A call takes a source or control `video`, a `mask` (1 = generate, 0 = keep) and `reference_images`; what is
    left out defaults as in the original (no video: all zeros with an all-ones mask; a video without mask: an
    all-ones mask). The conditioning is built exactly as the original `WanVace` builds it (see
    `wan_diffusers.pipelines.vace_inputs`). Compared with diffusers' `WanVACEPipeline`: several reference images
    keep their order (diffusers reverses it), frames of another size are resized and centre-cropped as the original
    does, prompt lists and `num_videos_per_prompt > 1` work (every video shares the conditioning), `negative_prompt`
    defaults to the original's, and `use_original_sampling()` reproduces the original sampler.

    Args:
        tokenizer ([`~transformers.AutoTokenizer`]):
            The umT5 tokenizer.
        text_encoder ([`~transformers.UMT5EncoderModel`]):
            The umT5-XXL encoder.
        vae ([`AutoencoderKLWan`]):
            The Wan 2.1 video VAE.
        scheduler ([`~diffusers.SchedulerMixin`]):
            A flow-matching scheduler (see `WanPipeline`).
        transformer ([`WanVACETransformer3DModel`]):
            The VACE diffusion transformer; in a two-expert pipeline the high-noise expert.
        transformer_2 ([`WanVACETransformer3DModel`], *optional*):
            The low-noise expert of a two-expert VACE model (the Wan 2.2 VACE-Fun layout), as in `WanPipeline`.
        boundary_ratio (`float`, *optional*):
            The boundary timestep of the two experts as a fraction of the training timesteps; stored in the
            pipeline's config.
    """

    task = "vace"
    # Under model offload the active expert alone sits on the accelerator (see `WanPipeline`).
    model_cpu_offload_seq = "text_encoder->transformer->transformer_2->vae"
    _optional_components = ["transformer", "transformer_2"]

    def __init__(
        self,
        tokenizer: AutoTokenizer,
        text_encoder: UMT5EncoderModel,
        vae: AutoencoderKLWan,
        scheduler: FlowMatchEulerDiscreteScheduler,
        transformer: WanVACETransformer3DModel | None = None,
        transformer_2: WanVACETransformer3DModel | None = None,
        boundary_ratio: float | None = None,
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
        self.register_to_config(boundary_ratio=boundary_ratio)
        self._init_video_processor()

    def check_vace_inputs(self, video, mask, reference_images, height, width, num_frames):
        """Check and preprocess the VACE sources, before any model runs.

        Returns (frames [3, F, H, W] in [-1, 1], mask [1, F, H, W] in [0, 1], references: a list of [3, 1, H, W],
        height, width, num_frames).
        """
        frames = video_to_tensor(video, "video") if video is not None else None
        mask = mask_to_tensor(mask, "mask") if mask is not None else None
        if frames is not None and mask is not None and frames.shape[1:] != mask.shape[1:]:
            raise ValueError(
                "`mask` must have the frame count and size of `video` ([frames, height, width]), got "
                f"{list(mask.shape[1:])} for `mask` and {list(frames.shape[1:])} for `video`"
            )
        source = frames if frames is not None else mask
        if (height is None) != (width is None):
            raise ValueError(f"Pass both `height` and `width`, or neither, got height={height} and width={width}")
        if height is None:
            if source is None:
                height, width = 480, 832
            else:  # the source's own size, rounded down to what the VAE and the patch size accept
                multiple = self.vae_scale_factor_spatial * self._dit.config.patch_size[1]
                height, width = source.shape[2] // multiple * multiple, source.shape[3] // multiple * multiple
        if num_frames is None:
            num_frames = 81 if source is None else source.shape[1]
        elif source is not None and source.shape[1] != num_frames:
            name = "video" if frames is not None else "mask"
            raise ValueError(
                f"`num_frames` ({num_frames}) must match the {source.shape[1]} frames of `{name}`; leave it out to "
                "use the frame count of the video"
            )
        self.check_video_inputs(height, width, num_frames)

        frames = (
            torch.zeros(3, num_frames, height, width) if frames is None else resize_to_cover(frames, height, width)
        )
        mask = torch.ones(1, num_frames, height, width) if mask is None else resize_to_cover(mask, height, width)
        references = [
            reference_on_canvas(image, height, width, f"reference_images[{index}]")
            for index, image in enumerate(reference_image_list(reference_images, "reference_images"))
        ]
        return frames, mask.clamp(0, 1), references, height, width, num_frames

    def check_conditioning_scale(self, conditioning_scale) -> torch.Tensor:
        """`conditioning_scale` as a float32 tensor with one value per hint layer (`transformer.config.vace_layers`)."""
        num_hints = len(self._dit.config.vace_layers)
        expected = f"a number or a list / 1-D tensor of {num_hints} numbers (one per VACE layer)"
        if isinstance(conditioning_scale, torch.Tensor):
            scale = conditioning_scale.detach().to("cpu", torch.float32)
        elif _is_number(conditioning_scale):
            scale = torch.tensor(float(conditioning_scale))
        elif isinstance(conditioning_scale, (list, tuple)) and all(_is_number(value) for value in conditioning_scale):
            scale = torch.tensor([float(value) for value in conditioning_scale])
        else:
            raise ValueError(f"`conditioning_scale` must be {expected}, got {type(conditioning_scale).__name__}")
        if scale.ndim == 0:
            scale = scale.expand(num_hints)
        if scale.shape != (num_hints,):
            raise ValueError(f"`conditioning_scale` must be {expected}, got shape {list(scale.shape)}")
        return scale

    def prepare_vace_context(self, frames, mask, references) -> torch.Tensor:
        """The DiT's control input [1, vace_in_channels, n_ref + T, h, w] (z0 from the VAE, m0 from the mask)."""
        expected_channels = 2 * self.vae.config.z_dim + self.vae_scale_factor_spatial**2
        if expected_channels != self._dit.config.vace_in_channels:
            raise ValueError(
                f"The transformer takes {self._dit.config.vace_in_channels} control channels, but this VAE "
                f"gives {expected_channels} (2 x {self.vae.config.z_dim} latent + "
                f"{self.vae_scale_factor_spatial}^2 mask channels)"
            )
        context = vace_context(
            self.encode_video,
            frames,
            mask,
            references,
            spatial_scale=self.vae_scale_factor_spatial,
            temporal_scale=self.vae_scale_factor_temporal,
        )
        return context[None]

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        video: list[PIL.Image.Image] | Any | None = None,
        mask: list[PIL.Image.Image] | Any | None = None,
        reference_images: PIL.Image.Image | list[PIL.Image.Image] | Any | None = None,
        conditioning_scale: float | list[float] | torch.Tensor = 1.0,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
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
        Generate or edit a video under a prompt, a source or control video, a mask and reference images.

        Args:
            prompt (`str` or `list[str]`, *optional*):
                The prompt or prompts. Pass `prompt_embeds` instead to skip the text encoder.
            negative_prompt (`str` or `list[str]`, *optional*):
                What to steer away from, used when `guidance_scale > 1`. `None` selects the original Wan2.1 default
                negative prompt of the task (diffusers uses `""`); pass `""` for an empty one.
            video (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`, *optional*):
                Source or control frames: a list of PIL images / numpy arrays [H, W, 3] / tensors [3, H, W], or a numpy
                array [F, H, W, 3] or tensor [F, 3, H, W] (values in [0, 1], or uint8). With a mask, the unmasked parts
                are kept and the masked parts regenerated; without one, the whole video is a control signal (depth,
                pose, flow, grayscale, line drawings...). Resized to cover `height` x `width` and centre-cropped when
                its size differs. Left out: all zeros (plain generation).
            mask (same forms as `video`, one channel read, *optional*):
                Per-pixel, per-frame mask in [0, 1] (uint8 / 255): 1 (white) = generate, 0 (black) = keep; the frame
                split uses `mask > 0.5`, the model also sees the raw values. Must match `video`'s frame count and size.
                Left out: all ones.
            reference_images (`PIL.Image.Image` or a list of images, *optional*):
                Subjects or backgrounds to appear in the video (a PIL image, numpy array [H, W, 3] or tensor [3, H, W]
                each), in this order (diffusers reverses two or more); each is fitted into a white canvas of the video
                size.
            conditioning_scale (`float`, `list[float]` or `torch.Tensor`, defaults to `1.0`):
                Strength of the control hints: one number (the original's `context_scale`) or one per entry of
                `transformer.config.vace_layers`.
            height (`int`, *optional*):
                Video height in pixels, a multiple of 16. Defaults to the video's (or mask's) height rounded down to a
                multiple of 16, or 480.
            width (`int`, *optional*):
                Video width in pixels, a multiple of 16; defaults likewise, or 832.
            num_frames (`int`, *optional*):
                Number of frames, of the form 4n + 1. Defaults to the video's (or mask's) frame count, or 81.
            num_inference_steps (`int`, defaults to `50`):
                Denoising steps.
            guidance_scale (`float`, defaults to `5.0`):
                Classifier-free guidance scale; guidance (a second DiT call per step) is on when it is above 1.
            guidance_scale_2 (`float`, *optional*):
                Two-expert pipelines (Wan 2.2 A14B): the guidance of the low-noise expert `transformer_2`, while
                `guidance_scale` is the high-noise expert's (`transformer`); `None` uses `guidance_scale`. The
                original's defaults, as (guidance_scale, guidance_scale_2): T2V-A14B (4.0, 3.0), I2V-A14B (3.5, 3.5).
            num_videos_per_prompt (`int`, defaults to `1`):
                Videos generated for each prompt (all with the same conditioning).
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Random generator(s) for the start noise; a list needs one generator per video.
            latents (`torch.Tensor`, *optional*):
                Start noise [B, 16, n_ref + (num_frames - 1) / 4 + 1, height / 8, width / 8] instead of drawing it (one
                latent frame per reference image in front, as in the original).
            prompt_embeds (`torch.Tensor`, *optional*):
                Text embeddings [B, L <= 512, text_dim] instead of `prompt` (zero-padded to 512 rows by the model).
            negative_prompt_embeds (`torch.Tensor`, *optional*):
                Negative text embeddings [B, L', text_dim] instead of `negative_prompt`; L' may differ from L.
            output_type (`str`, defaults to `"np"`):
                `"np"`, `"pil"`, `"pt"` or `"latent"`. The decoded video leaves out the reference frames; the latents
                keep them (the original's final latents).
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
            >>> from diffusers.utils import export_to_video, load_image, load_video
            >>> from wan_diffusers import WanVACEPipeline

            >>> pipe = WanVACEPipeline.from_pretrained("Wan-AI/Wan2.1-VACE-1.3B-diffusers", torch_dtype=torch.bfloat16)
            >>> pipe.vae.to(torch.float32)
            >>> pipe.use_original_sampling("unipc", shift=16.0)  # the original generate.py's VACE setting
            >>> pipe.enable_model_cpu_offload()

            >>> # reference-to-video with two references (kept in this order, as the original does)
            >>> video = pipe(
            ...     "A man in a red jacket walks his dog along the beach at sunset.",
            ...     reference_images=[load_image("man.png"), load_image("dog.png")],
            ...     height=480,
            ...     width=832,
            ...     num_frames=81,
            ... ).frames[0]
            >>> export_to_video(video, "r2v.mp4", fps=16)

            >>> # control: any preprocessed control video (depth, pose, edges, grayscale...) as `video`
            >>> video = pipe("A robot dancing in a neon city.", video=load_video("pose.mp4")[:81]).frames[0]

            >>> # masked editing: white (1) = regenerate, black (0) = keep
            >>> video = pipe("A cat on the sofa.", video=load_video("room.mp4")[:81], mask=load_video("mask.mp4")[:81])
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
        frames, mask, references, height, width, num_frames = self.check_vace_inputs(
            video, mask, reference_images, height, width, num_frames
        )
        hint_scales = self.check_conditioning_scale(conditioning_scale)
        self.check_sampling_inputs(
            num_inference_steps, sigmas, guidance_scale, num_videos_per_prompt, batch_size, generator, output_type
        )
        num_videos = batch_size * num_videos_per_prompt
        num_references = len(references)
        shape = list(self.latent_shape(num_videos, self._dit.config.in_channels, height, width, num_frames))
        shape[2] += num_references  # one latent frame per reference image, in front
        self.check_latents(latents, tuple(shape))
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

        # 3. the control input (VAE latents of the inactive / reactive frames and the references, mask channels)
        control = self.prepare_vace_context(frames, mask, references).to(device)
        transformer_kwargs = {
            "control_hidden_states": control.expand(num_videos, -1, -1, -1, -1),
            "control_hidden_states_scale": hint_scales.to(device),
        }

        # 4. timesteps and start noise
        timesteps = self.set_timesteps(num_inference_steps, sigmas, device)
        latents = self.prepare_latents(tuple(shape), device, generator, latents)

        # 5. denoising loop
        latents = self.denoise(
            latents,
            timesteps,
            prompt_embeds,
            negative_prompt_embeds,
            transformer_kwargs=transformer_kwargs,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )

        # 6. decode without the reference frames (the latents keep them)
        if output_type != "latent":
            latents = latents[:, :, num_references:]
        return self.finish(self.decode_latents(latents, output_type), return_dict)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
