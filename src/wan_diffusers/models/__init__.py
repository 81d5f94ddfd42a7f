"""Wan 2.1 models: the diffusion transformer (plain and VACE) and the causal video VAE."""
