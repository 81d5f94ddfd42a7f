"""The VAE side of the Wan pipelines: latent shapes and start noise, the latent normalisation, encoding and decoding."""

from contextlib import contextmanager

import torch
from diffusers.utils.torch_utils import get_module_execution_device, randn_tensor
from diffusers.video_processor import VideoProcessor

from .pipeline_output import WanPipelineOutput


class WanVideoLatentsMixin:
    """Latents of the Wan pipelines: [B, C, (F - 1) / 4 + 1, H / 8, W / 8] (the VAE's strides), float32, normalised
    per channel with the VAE's `latents_mean` / `latents_std` as the original does."""

    def _init_video_processor(self):
        """Called by each pipeline's `__init__` once the VAE is registered."""
        self.vae_scale_factor_temporal = self.vae.config.scale_factor_temporal if self.vae is not None else 4
        self.vae_scale_factor_spatial = self.vae.config.scale_factor_spatial if self.vae is not None else 8
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_scale_factor_spatial)

    def latent_shape(self, batch_size: int, num_channels: int, height: int, width: int, num_frames: int) -> tuple:
        """[B, C, (num_frames - 1) / 4 + 1, height / 8, width / 8]."""
        return (
            batch_size,
            num_channels,
            (num_frames - 1) // self.vae_scale_factor_temporal + 1,
            height // self.vae_scale_factor_spatial,
            width // self.vae_scale_factor_spatial,
        )

    def prepare_latents(self, shape: tuple, device, generator, latents: torch.Tensor | None = None) -> torch.Tensor:
        """Start noise, float32 (the original keeps latents and the solver in float32 whatever the DiT runs in)."""
        if latents is not None:
            return latents.to(device=device, dtype=torch.float32)
        return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)

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
        with self._decoding_progress(latents):
            video = self.vae.decode(latents, return_dict=False)[0]
        return self.video_processor.postprocess_video(video, output_type=output_type)

    @contextmanager
    def _decoding_progress(self, latents: torch.Tensor):
        """A progress bar over the VAE's decoder calls (one per latent frame, per tile and batch slice): decoding
        480 x 832 x 81 takes minutes on a CPU, and would otherwise run silent after the last denoising step."""
        total = latents.shape[2]
        tiles = getattr(self.vae, "_spatial_tiles", None)
        if getattr(self.vae, "use_slicing", False):
            total *= latents.shape[0]
        if tiles is not None and getattr(self.vae, "use_tiling", False):
            total *= len(tiles(tuple(latents.shape[3:]), decoding=True))
        decoder = getattr(self.vae, "decoder", None)
        if decoder is None:
            yield
            return
        with self.progress_bar(total=total) as progress:
            progress.set_description("Decoding")
            hook = decoder.register_forward_hook(lambda *_: progress.update())
            try:
                yield
            finally:
                hook.remove()

    def finish(self, video, return_dict: bool):
        self.maybe_free_model_hooks()
        if not return_dict:
            return (video,)
        return WanPipelineOutput(frames=video)
