"""Training a (small) `AutoencoderKLWan` from scratch, and measuring its latent statistics.

The objective is the usual one for a KL autoencoder: L1 + MSE reconstruction of the posterior sample's decoding
(content pixels weighted up, see `foreground_weight`) from the posterior mode plus `latent_noise`, and a small KL term
towards N(0, 1) that keeps the latent scale sane. Clips are cropped at random: the VAE is convolutional, so crops teach it what whole frames need at a
fraction of the cost, and a 1 + 4k-frame crop in time exercises both the first-frame path and the causal cache of
later chunks.
"""

import logging
import time
from collections.abc import Callable

import numpy as np
import torch

logger = logging.getLogger(__name__)


def _random_crop(video: torch.Tensor, crop: int | None, rng: np.random.Generator) -> torch.Tensor:
    """`video` [C, F, H, W] in [-1, 1] -> [C, F, crop, crop], the window mostly centred near a pixel of content."""
    if crop is None or crop >= min(video.shape[-2:]):
        return video
    content = video.amax(dim=(0, 1)) > -0.5  # [H, W]: brighter than the black background (-1)
    ys, xs = torch.nonzero(content, as_tuple=True)
    height, width = video.shape[-2:]
    if len(ys) and rng.random() < 0.8:  # mostly around the content, sometimes anywhere (background, edges)
        index = rng.integers(len(ys))
        top = int(np.clip(ys[index].item() - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, height - crop))
        left = int(np.clip(xs[index].item() - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, width - crop))
    else:
        top, left = int(rng.integers(0, height - crop + 1)), int(rng.integers(0, width - crop + 1))
    return video[:, :, top : top + crop, left : left + crop]


def train_vae(
    vae,
    sample_video: Callable[[np.random.Generator], np.ndarray],
    steps: int,
    batch_size: int = 4,
    num_frames: int = 9,
    crop: int | None = 32,
    learning_rate: float = 1e-3,
    kl_weight: float = 1e-4,
    foreground_weight: float = 4.0,
    latent_noise: float = 0.05,
    train_encoder: bool = True,
    seed: int = 0,
    log_every: int = 50,
) -> list[float]:
    """Train `vae` in place on videos drawn by `sample_video(rng)` (frames [F, H, W, 3] in [0, 1]); returns the losses.

    `num_frames` (1 + 4k) frames are taken from the start of each video and `crop` x `crop` windows from its frames.
    """
    from tqdm.auto import tqdm

    if (num_frames - 1) % vae.config.scale_factor_temporal:
        raise ValueError(f"`num_frames` must be 1 + {vae.config.scale_factor_temporal}k, got {num_frames}")
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    # `train_encoder=False` fine-tunes the decoder alone: the latent space stays exactly the same, so models trained
    # on the latents (and cached latents) remain valid, as with Stable Diffusion's fine-tuned VAE decoders
    encoder_modules = (vae.encoder, vae.quant_conv)
    for module in encoder_modules:
        module.requires_grad_(train_encoder)
    parameters = [parameter for parameter in vae.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.05)
    vae.train()
    losses, content_errors, start = [], [], time.time()
    for step in (progress := tqdm(range(steps), desc="VAE")):
        videos = []
        for _ in range(batch_size):
            frames = torch.from_numpy(sample_video(rng)[:num_frames]).permute(3, 0, 1, 2)  # [3, F, H, W]
            videos.append(_random_crop(frames * 2 - 1, crop, rng))
        video = torch.stack(videos)
        with torch.set_grad_enabled(train_encoder):
            posterior = vae.encode(video).latent_dist
        # the posterior mode plus a little noise, not a posterior sample: at initialisation the sample's noise (std 1)
        # drowns the means (std ~0.2), and the decoder learns nothing for hundreds of steps; the pipelines encode
        # with the mode, and the noise keeps the decoder tolerant of the DiT's imperfect latents
        latents = posterior.mode()
        latents = latents + latent_noise * torch.randn(latents.shape, generator=generator)
        reconstruction = _decode_unclamped(vae, latents)
        error = reconstruction - video
        # pixels of content (brighter than the black background) weigh `1 + foreground_weight`: on mostly empty
        # frames this skips the long plateau where the decoder only draws background
        weight = 1 + foreground_weight * (video.amax(dim=1, keepdim=True) > -0.5).float()
        reconstruction_loss = (weight * (error.abs() + error.pow(2))).mean() / weight.mean()
        loss = reconstruction_loss + kl_weight * posterior.kl().mean() / video[0].numel()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        content = (weight > 1).expand_as(error)
        content_errors.append(error.detach().abs()[content].mean().item() if content.any() else 0.0)
        progress.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", content_l1=f"{np.mean(content_errors[-20:]):.3f}")
        if log_every and (step + 1) % log_every == 0:
            logger.info(
                "VAE step %d/%d loss %.4f (%.0f s)", step + 1, steps, np.mean(losses[-log_every:]), time.time() - start
            )
    vae.eval()
    vae.requires_grad_(True)
    return losses


def _decode_unclamped(vae, latents: torch.Tensor) -> torch.Tensor:
    """`vae.decode` without its final clamp to [-1, 1]: the clamp has no gradient outside that range, so a decoder
    that overshoots towards the black background (-1) everywhere would get no signal to draw the shapes back."""
    if vae.use_tiling or vae.use_slicing:
        raise ValueError("train the VAE with tiling and slicing disabled")
    latents = vae.post_quant_conv(latents)
    batch, _, latent_frames, height, width = latents.shape
    tiles = vae._spatial_tiles((height, width), decoding=True)
    frames = 1 + vae.temporal_compression_ratio * (latent_frames - 1)
    video = latents.new_zeros((batch, vae.config.out_channels, frames, *vae._sample_size(height, width)))
    vae._decode_into(latents, video, tiles)
    return video


@torch.no_grad()
def latent_statistics(vae, videos: torch.Tensor, batch_size: int = 8) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of the posterior means of `videos` [N, 3, F, H, W] in [-1, 1]: the
    `latents_mean` / `latents_std` a pipeline normalises latents with."""
    latents = torch.cat([vae.encode(chunk).latent_dist.mode() for chunk in videos.split(batch_size)])
    dims = (0, 2, 3, 4)
    return latents.mean(dim=dims).tolist(), latents.std(dim=dims).tolist()
