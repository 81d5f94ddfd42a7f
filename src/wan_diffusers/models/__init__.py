"""Wan 2.1 and 2.2 models: the diffusion transformer (plain and VACE) and the causal video VAE."""

from ..utils.diffusers_type_check import accept_our_classes_in_diffusers_pipelines

# The one thing done at import: one logging filter, so that diffusers' own pipelines take these models without
# claiming a type mismatch (utils/diffusers_type_check.py says why). It loads nothing and changes no behaviour.
accept_our_classes_in_diffusers_pipelines()
