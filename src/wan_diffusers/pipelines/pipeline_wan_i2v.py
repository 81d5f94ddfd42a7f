"""Image-to-video and first-last-frame-to-video: `WanImageToVideoPipeline`."""

from collections.abc import Callable
from typing import Any

import PIL.Image
import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.schedulers import FlowMatchEulerDiscreteScheduler
from diffusers.utils.torch_utils import get_module_execution_device
from transformers import AutoTokenizer, CLIPVisionModelWithProjection, UMT5EncoderModel
from transformers.image_processing_utils import BaseImageProcessor

from ..models.autoencoder_kl_wan import AutoencoderKLWan
from ..models.transformer_wan import TEXT_CONTEXT_LENGTH, WanTransformer3DModel
from ..tasks import default_variant
from .experts import wan22_variant_of
from .image_processing import (
    best_output_size,
    clip_pixel_values,
    condition_mask,
    cover_and_crop_lanczos,
    fit_to_size,
    image_to_tensor,
    resize_bicubic,
    size_from_max_area,
)
from .pipeline_base import WanPipelineBase
from .pipeline_output import WanPipelineOutput


class WanImageToVideoPipeline(WanPipelineBase):
    r"""
    Image-to-video (Wan2.1-I2V-14B-480P / -720P, Wan2.2-I2V-A14B, Wan2.2-TI2V-5B) and first-last-frame-to-video
    (Wan2.1-FLF2V-14B-720P) generation.

    Wan2.2-I2V-A14B has no CLIP branch and two experts (`transformer_2`, `boundary_ratio`, `guidance_scale_2`, as in
    `WanPipeline`). Wan2.2-TI2V-5B (`expand_timesteps=True`) conditions on the image as `WanTI2V.i2v` does: the
    size from `max_area` by the original's `best_output_size` (multiples of 32), a LANCZOS resize that covers it and a
    centre crop, the image encoded as one latent frame that replaces latent frame 0 before the loop and after every
    step (diffusers blends it into the DiT input and the final latents only), timestep 0 on its tokens.

    The conditioning follows the original code, not diffusers' `WanImageToVideoPipeline`: without `height` and
    `width` the size comes from `max_area` and the image's aspect ratio by the original rule; the condition frames
    are resized with torch's bicubic interpolation; CLIP sees the whole image squashed to its input size (no crop);
    FLF2V works for any `num_frames` of the form 4n + 1 (the original only for 81); `num_videos_per_prompt > 1`
    works (diffusers repeats the image tokens per prompt only and fails).

    Args:
        tokenizer ([`~transformers.AutoTokenizer`]):
            The umT5 tokenizer.
        text_encoder ([`~transformers.UMT5EncoderModel`]):
            The umT5-XXL encoder.
        vae ([`AutoencoderKLWan`]):
            The Wan 2.1 video VAE.
        scheduler ([`~diffusers.SchedulerMixin`]):
            A flow-matching scheduler (see `WanPipeline`).
        transformer ([`WanTransformer3DModel`]):
            An I2V or FLF2V diffusion transformer (36 input channels; CLIP image tokens in Wan 2.1), the high-noise
            expert of Wan2.2-I2V-A14B, or TI2V-5B's (48 input channels).
        image_encoder ([`~transformers.CLIPVisionModelWithProjection`], *optional*):
            The CLIP vision tower; its penultimate hidden state is what the DiT attends to. Not needed when every
            call passes `image_embeds`.
        image_processor ([`~transformers.CLIPImageProcessor`], *optional*):
            Kept for Hub-format compatibility and not used: the image is prepared as the original does (see
            `wan_diffusers.pipelines.image_processing`), at the encoder's `config.image_size`.
        transformer_2 ([`WanTransformer3DModel`], *optional*):
            Wan2.2-I2V-A14B: the low-noise expert, for the steps below the boundary.
        boundary_ratio (`float`, *optional*):
            Wan2.2-I2V-A14B: the boundary timestep as a fraction of the training timesteps (0.9); stored in the
            pipeline's config.
        expand_timesteps (`bool`, defaults to `False`):
            Wan2.2-TI2V-5B: one timestep per token and the image as latent frame 0; stored in the pipeline's config.
    """

    # Under model offload the active expert alone sits on the accelerator (see `WanPipeline`).
    model_cpu_offload_seq = "text_encoder->image_encoder->transformer->transformer_2->vae"
    _optional_components = ["transformer", "transformer_2", "image_encoder", "image_processor"]

    def __init__(
        self,
        tokenizer: AutoTokenizer,
        text_encoder: UMT5EncoderModel,
        vae: AutoencoderKLWan,
        scheduler: FlowMatchEulerDiscreteScheduler,
        transformer: WanTransformer3DModel | None = None,
        image_encoder: CLIPVisionModelWithProjection = None,
        image_processor: BaseImageProcessor = None,
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
            image_encoder=image_encoder,
            image_processor=image_processor,
            transformer_2=transformer_2,
        )
        self.register_to_config(boundary_ratio=boundary_ratio, expand_timesteps=expand_timesteps)
        self._init_video_processor()

    @property
    def task(self) -> str:
        """`"flf2v"` for a model with the first-last-frame position table, else `"i2v"` (picks the negative prompt)."""
        is_flf2v = self._dit is not None and self._dit.config.pos_embed_seq_len is not None
        return "flf2v" if is_flf2v else "i2v"

    def encode_image(self, images: list[torch.Tensor], device: torch.device | None = None) -> torch.Tensor:
        """CLIP tokens [N, T, image_dim] (penultimate hidden state) of images [3, H, W] in [-1, 1]."""
        device = device or self._execution_device
        encoder_device = get_module_execution_device(self.image_encoder)
        pixel_values = clip_pixel_values(images, self.image_encoder.config.image_size)
        outputs = self.image_encoder(
            pixel_values=pixel_values.to(encoder_device, self.image_encoder.dtype), output_hidden_states=True
        )
        return outputs.hidden_states[-2].to(device)

    def check_image_inputs(self, image, last_image, image_embeds, height, width, max_area, num_frames):
        """Check the image arguments; returns the images as tensors in [-1, 1] and the video (height, width)."""
        if image is None:
            raise ValueError(
                "`image` is required: the first frame, as a PIL.Image.Image, a numpy array or a torch.Tensor"
            )
        if isinstance(image, list):
            raise ValueError("`image` must be a single image (one first frame for every prompt), got a list")
        images = [image_to_tensor(image, "image")]
        is_flf2v = self.task == "flf2v"
        if last_image is not None:
            if not is_flf2v:
                raise ValueError(
                    "`last_image` needs a first-last-frame model (Wan2.1-FLF2V, with `pos_embed_seq_len` in its "
                    "transformer config); this transformer has no FLF2V position embedding"
                )
            # a last frame of another size is scaled to cover the first frame's and centre-cropped to it
            images.append(fit_to_size(image_to_tensor(last_image, "last_image"), *images[0].shape[1:]))
        elif is_flf2v:
            raise ValueError("This is a first-last-frame (FLF2V) model: pass the last frame as `last_image`")
        if is_flf2v and isinstance(num_frames, int) and num_frames < 5:
            raise ValueError(f"`num_frames` must be at least 5 with `last_image`, got {num_frames}")

        image_dim = self._dit.config.image_dim
        if image_embeds is not None and image_dim is None:
            raise ValueError(
                "`image_embeds` were given, but this transformer takes no CLIP image tokens (Wan 2.2 has no CLIP "
                "branch): leave `image_embeds` out"
            )
        if image_embeds is not None:
            expected = f"[{len(images)}, tokens, {image_dim}]"
            if not isinstance(image_embeds, torch.Tensor) or image_embeds.ndim != 3:
                raise ValueError(f"`image_embeds` must be a tensor {expected}, got {type(image_embeds).__name__}")
            if image_embeds.shape[0] != len(images) or image_embeds.shape[2] != image_dim:
                raise ValueError(f"`image_embeds` must have shape {expected}, got {list(image_embeds.shape)}")
        elif image_dim is not None and self.image_encoder is None:
            raise ValueError("This pipeline has no `image_encoder`: pass the CLIP tokens as `image_embeds`")

        if (height is None) != (width is None):
            raise ValueError(
                f"Pass both `height` and `width`, or neither (the size then follows `max_area`), got height={height} "
                f"and width={width}"
            )
        if height is None:
            if not isinstance(max_area, (int, float)) or max_area < 1:
                raise ValueError(f"`max_area` must be a positive number of pixels, got {max_area!r}")
            patch = self._dit.config.patch_size[1]
            if self.config.expand_timesteps:
                height, width = best_output_size(*images[0].shape[1:], max_area, self.vae_scale_factor_spatial * patch)
            else:
                height, width = size_from_max_area(
                    *images[0].shape[1:], max_area, self.vae_scale_factor_spatial, patch
                )
        return images, height, width

    def prepare_condition(self, images: list[torch.Tensor], height: int, width: int, num_frames: int) -> torch.Tensor:
        """The condition [1, 4 + z_dim, latent frames, height / 8, width / 8]: mask channels, then the VAE latent of
        the video whose first (and, for FLF2V, last) frame is the resized image and whose other frames are zero."""
        frames = [resize_bicubic(image, height, width) for image in images]  # float32, on the CPU, as the original
        video = torch.zeros(1, 3, num_frames, height, width)
        video[0, :, 0] = frames[0]
        if len(frames) == 2:
            video[0, :, -1] = frames[1]
        latent = self.encode_video(video)
        mask = condition_mask(
            num_frames, latent.shape[3], latent.shape[4], len(frames) == 2, self.vae_scale_factor_temporal
        )
        return torch.cat([mask[None].to(latent), latent], dim=1)

    def prepare_image_latent(self, image: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Wan 2.2 TI2V: the normalised latent [1, z_dim, 1, height / 16, width / 16] of the image, scaled with LANCZOS
        to cover the video size, centre-cropped and encoded as a one-frame video (`WanTI2V.i2v`)."""
        frame = cover_and_crop_lanczos(image, height, width)
        return self.encode_video(frame[None, :, None])

    @torch.no_grad()
    def __call__(
        self,
        image: PIL.Image.Image | torch.Tensor | None = None,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int = 81,
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        guidance_scale_2: float | None = None,
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        last_image: PIL.Image.Image | torch.Tensor | None = None,
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
        max_area: int | None = None,
    ) -> WanPipelineOutput | tuple:
        r"""
        Generate videos that start from an image (and, for FLF2V, end on another).

        Args:
            image (`PIL.Image.Image`, `np.ndarray` or `torch.Tensor`, required):
                The first frame: a PIL image, a numpy array [H, W, 3] (uint8, or float in [0, 1]) or a tensor [3, H, W]
                (uint8, or float in [0, 1]). One image conditions every prompt of the call.
            prompt (`str` or `list[str]`, *optional*):
                The prompt or prompts. Pass `prompt_embeds` instead to skip the text encoder.
            negative_prompt (`str` or `list[str]`, *optional*):
                What to steer away from, used when `guidance_scale > 1`. `None` selects the original Wan2.1 default
                negative prompt of the task (diffusers uses `""`); pass `""` for an empty one.
            height (`int`, *optional*):
                Video height in pixels, a multiple of 16; give it together with `width`, or leave both out to use
                `max_area`.
            width (`int`, *optional*):
                Video width in pixels, a multiple of 16.
            num_frames (`int`, defaults to `81`):
                Number of frames, of the form 4n + 1 (at least 5 with `last_image`); other values raise a ValueError.
            num_inference_steps (`int`, defaults to `50`):
                Denoising steps (the original uses 40 for I2V and 50 for FLF2V).
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
            image_embeds (`torch.Tensor`, *optional*):
                CLIP tokens [1, 257, image_dim] ([2, 257, image_dim] for FLF2V: first then last frame) instead of
                running the image encoder; shared by every video of the call.
            last_image (`PIL.Image.Image`, `np.ndarray` or `torch.Tensor`, *optional*):
                The last frame, for first-last-frame models (FLF2V). It is resized to the video size like `image` (the
                original centre-crops a differently sized last frame without resizing it).
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
            max_area (`int`, *optional*):
                Pixel budget when `height` and `width` are not given: the size follows the image's aspect ratio by the
                original rule. Defaults to the original's for the model (`wan_diffusers.tasks`): 480 * 832 for Wan 2.1
                I2V (pass 720 * 1280 for the 720P model), 720 * 1280 for FLF2V and I2V-A14B, 704 * 1280 for TI2V-5B.

        Examples:
            ```py
            >>> import torch
            >>> from diffusers.utils import export_to_video, load_image
            >>> from wan_diffusers import WanImageToVideoPipeline

            >>> pipe = WanImageToVideoPipeline.from_pretrained(
            ...     "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", torch_dtype=torch.bfloat16
            ... )
            >>> pipe.vae.to(torch.float32)
            >>> pipe.use_original_sampling("unipc", shift=3.0)  # the original's 480P setting
            >>> pipe.enable_model_cpu_offload()

            >>> image = load_image(
            ...     "https://huggingface.co/datasets/huggingface/documentation-images/resolve/main/diffusers/astronaut.jpg"
            ... )
            >>> video = pipe(
            ...     image,
            ...     "An astronaut hatching from an egg, on the surface of the moon.",
            ...     max_area=480 * 832,  # the size follows the image's aspect ratio, as in the original
            ...     num_frames=81,
            ...     num_inference_steps=40,
            ...     guidance_scale=5.0,
            ... ).frames[0]
            >>> export_to_video(video, "i2v.mp4", fps=16)

            >>> # First-last-frame-to-video with Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers: pass `last_image=...` too.
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
        if max_area is None:
            max_area = (wan22_variant_of(self) or default_variant(self.task)).max_area
        images, height, width = self.check_image_inputs(
            image, last_image, image_embeds, height, width, max_area, num_frames
        )
        self.check_video_inputs(height, width, num_frames)
        self.check_sampling_inputs(
            num_inference_steps, sigmas, guidance_scale, num_videos_per_prompt, batch_size, generator, output_type
        )
        num_videos = batch_size * num_videos_per_prompt
        shape = self.latent_shape(num_videos, self.vae.config.z_dim, height, width, num_frames)
        self.check_latents(latents, shape)
        self._start_call(guidance_scale, attention_kwargs, guidance_scale_2)
        device = self._execution_device

        # 2. encode the prompts and the image(s)
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
        transformer_kwargs = {}
        if self._dit.config.image_dim is not None:
            if image_embeds is None:
                image_embeds = self.encode_image(images, device)
            # one set of image tokens per video; FLF2V keeps each video's first and last frame adjacent
            image_embeds = image_embeds.to(device=device, dtype=self._dit.dtype).repeat(num_videos, 1, 1)
            transformer_kwargs["encoder_hidden_states_image"] = image_embeds

        # 3. timesteps, start noise and the condition: mask + latent of the known frames, or (TI2V) the image's
        # latent as frame 0
        timesteps = self.set_timesteps(num_inference_steps, sigmas, device)
        latents = self.prepare_latents(shape, device, generator, latents)
        condition = image_latent = None
        if self.config.expand_timesteps:
            image_latent = self.prepare_image_latent(images[0], height, width).to(device)
        else:
            condition = self.prepare_condition(images, height, width, num_frames).to(device)
            condition = condition.expand(num_videos, -1, -1, -1, -1)

        # 4. denoising loop
        latents = self.denoise(
            latents,
            timesteps,
            prompt_embeds,
            negative_prompt_embeds,
            condition=condition,
            transformer_kwargs=transformer_kwargs,
            image_latent=image_latent,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )

        # 5. decode
        return self.finish(self.decode_latents(latents, output_type), return_dict)
