"""Tiny components for tests, built in code after a fixed seed: the one place tests get models from.

- `parity`: paths and loaders for the original Wan2.1 reference data in `tests/fixtures/wan21_parity/`.
- `transformer`: tiny `WanTransformer3DModel` configs (T2V, I2V, FLF2V) and inputs.
- `vae`: tiny `AutoencoderKLWan`s (diffusers' test layout and the parity fixture's), the fixture's converted VAE, the
  same weights in diffusers' built-in class, and test videos and latents.
- `original_release`: tiny release folders in the original Wan 2.1 layout (every released layout: single-file and
  sharded DiTs, VAE/T5/CLIP `.pth`, tokenizer folders) for the conversion tests, and original DiT key shapes.
- `vace`: tiny `WanVACETransformer3DModel` config and inputs, the VACE parity DiT and its reference cases, tiny and
  parity `WanVACEPipeline`s and the fixture's VACE sources in the pipeline's input forms.
- `encoders`: the fixtures' tiny umT5 tokenizer, tiny random umT5 / CLIP vision encoders, and the fixtures' original
  T5 and CLIP checkpoints converted.
- `pipelines`: tiny pipelines for every task (t2v, i2v, flf2v, v2v), the arguments of a fast call, test images and
  videos, and pipelines holding the parity fixtures' converted models.
"""
