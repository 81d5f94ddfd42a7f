"""Tiny `AutoencoderKLWan`s with random weights, the same weights in diffusers' built-in class, and test videos.

- `PARITY_VAE_CONFIG`: the VAE of the parity fixtures (`components/Wan2.1_VAE.pth`): the released layout (4 stages,
  2 residual blocks each, temporal downsampling in stages 2 and 3) at base width 3 instead of 96.
- `TINY_VAE_CONFIG`: diffusers' own test VAE (one residual block per stage, all stages 3 wide); the fastest model.
- `WIDE_VAE_CONFIG`: the released layout at base width 32: the activations between the latents and the video have
  multiples of 32 channels, as in the released VAE (96, 192, 384), so SiLU never takes PyTorch's scalar path for
  the elements past the last multiple of the SIMD width, and frame-by-frame results can be compared bit for bit.
- `tiny_vae(**overrides)`: a model of `TINY_VAE_CONFIG` (plus overrides) with random weights from a fixed seed.
- `parity_vae()`: the fixture checkpoint converted with our key map.
- `diffusers_twin(vae)`: diffusers' built-in `AutoencoderKLWan` with the same config and weights (the oracle).
- `random_video(...)`, `random_latents(...)`: inputs from a fixed seed.
- `largest_intermediates(vae, height, width)`: the largest tensor each call creates, for 5 and 13 frames.

Wan 2.2 (`is_residual`, `patch_size` 2, z_dim 48):
- `WAN22_PARITY_VAE_CONFIG`: the VAE of the Wan 2.2 fixtures (`tests/fixtures/wan22_parity/tiny-ti2v-5b/
  Wan2.2_VAE.pth`): the released layout at encoder width 3 and decoder width 4 (released 160 and 256).
- `WAN22_TINY_VAE_CONFIG`: the same with diffusers' test sizes (one residual block per stage, all stages as wide).
- `WAN22_WIDE_VAE_CONFIG`: the released layout at widths 32 (no SiLU tail, as `WIDE_VAE_CONFIG`).
- `wan22_parity_vae()`, `wan22_vae_references()`: the fixture checkpoint converted with our key map, and the
  original's inputs and outputs.
"""

from pathlib import Path

import torch
from diffusers import AutoencoderKLWan as DiffusersAutoencoderKLWan
from safetensors.torch import load_file

from wan_diffusers.models.autoencoder_kl_wan import WAN22_LATENTS_MEAN, WAN22_LATENTS_STD, AutoencoderKLWan
from wan_diffusers.pipelines.demo import VAE_CONFIG

from factories.parity import original_component_state_dict
from testing_utils import LargestIntermediate

TINY_VAE_CONFIG = VAE_CONFIG  # the demo's (wan_diffusers/pipelines/demo.py)
PARITY_VAE_CONFIG = {**TINY_VAE_CONFIG, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2}
WIDE_VAE_CONFIG = {**PARITY_VAE_CONFIG, "base_dim": 32}

WAN22_PARITY_VAE_CONFIG = {
    **PARITY_VAE_CONFIG,
    "decoder_base_dim": 4,
    "z_dim": 48,
    "latents_mean": list(WAN22_LATENTS_MEAN),
    "latents_std": list(WAN22_LATENTS_STD),
    "is_residual": True,
    "in_channels": 12,
    "out_channels": 12,
    "patch_size": 2,
    "scale_factor_spatial": 16,
}
WAN22_TINY_VAE_CONFIG = {**WAN22_PARITY_VAE_CONFIG, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1}
WAN22_WIDE_VAE_CONFIG = {**WAN22_PARITY_VAE_CONFIG, "base_dim": 32, "decoder_base_dim": 32}
WAN22_FIXTURE_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "wan22_parity" / "tiny-ti2v-5b"


def tiny_vae(seed: int = 0, **overrides) -> AutoencoderKLWan:
    """Random weights: PyTorch's default initialisation, and RMS-norm gains drawn around 1 (1 + 0.1 N(0, 1)) so that a
    gain applied to the wrong layer changes the output. Outputs stay mostly inside (-1, 1), so the clamp of decoded
    videos does not hide differences."""
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(**{**TINY_VAE_CONFIG, **overrides})
    with torch.no_grad():
        for name, parameter in vae.named_parameters():
            if name.endswith("gamma"):
                parameter.copy_(1 + 0.1 * torch.randn_like(parameter))
    return vae.eval()


def parity_vae() -> AutoencoderKLWan:
    """The parity fixtures' VAE (`components/Wan2.1_VAE.pth`, original key names), loaded as users load one file
    (`from_single_file`: the converter's key map and config inference)."""
    return AutoencoderKLWan.from_single_file(original_component_state_dict("Wan2.1_VAE.pth"))


def wan22_parity_vae() -> AutoencoderKLWan:
    """The Wan 2.2 fixtures' VAE (`Wan2.2_VAE.pth`, original key names), loaded by `from_single_file`."""
    return AutoencoderKLWan.from_single_file(
        torch.load(WAN22_FIXTURE_DIR / "Wan2.2_VAE.pth", map_location="cpu", weights_only=True)
    )


def wan22_vae_references() -> dict[str, torch.Tensor]:
    """The original's VAE inputs and outputs (`vae.encode.<case>.input` / `.output`, `vae.decode.<case>...`)."""
    references = load_file(WAN22_FIXTURE_DIR / "reference_components.safetensors")
    return {key: value for key, value in references.items() if key.startswith("vae.")}


def diffusers_twin(vae: AutoencoderKLWan) -> DiffusersAutoencoderKLWan:
    """diffusers' built-in VAE with `vae`'s config and weights (loaded strictly: the key layouts must agree)."""
    twin = DiffusersAutoencoderKLWan.from_config(vae.config)
    twin.load_state_dict(vae.state_dict(), strict=True)
    return twin.eval()


def random_video(batch: int = 1, frames: int = 9, height: int = 16, width: int = 16, seed: int = 0) -> torch.Tensor:
    """A video [batch, 3, frames, height, width] uniform in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, height, width, generator=generator) * 2 - 1


def random_latents(
    batch: int = 1, frames: int = 3, height: int = 2, width: int = 2, seed: int = 0, channels: int = 16
) -> torch.Tensor:
    """Un-normalised latents [batch, channels, frames, height, width]: standard normal."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, frames, height, width, generator=generator)


def largest_intermediates(vae: AutoencoderKLWan, height: int, width: int) -> dict[tuple[str, int], int]:
    """The number of values of the largest tensor created while decoding 2 and 4 latent frames, and while encoding 5
    and 13 frames of height x width, the inputs and outputs excluded: `{("decode" | "encode", latent frames): size}`."""
    factor, largest = vae.spatial_compression_ratio, {}
    for latent_frames in (2, 4):
        latents = random_latents(1, latent_frames, height // factor, width // factor, channels=vae.z_dim)
        with LargestIntermediate() as recorder:
            video = vae.decode(latents).sample
        largest["decode", latent_frames] = recorder.largest_except(latents, video)
        video = random_video(1, 1 + 4 * (latent_frames - 1), height, width)
        with LargestIntermediate() as recorder:
            moments = vae.encode(video).latent_dist.parameters
        largest["encode", latent_frames] = recorder.largest_except(video, moments)
    return largest
