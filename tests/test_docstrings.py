"""Docstrings document exactly the arguments of what they describe, in signature order: the pipelines' `__call__`,
`__init__` (the class docstring) and `encode_prompt`; the models' `forward` (the VAE's `encode`, `decode` and
`enable_tiling` too) and `__init__`."""

import inspect
import re

import pytest

from wan_diffusers import (
    AutoencoderKLWan,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
    WanVACEPipeline,
    WanVACETransformer3DModel,
    WanVideoToVideoPipeline,
)

PIPELINES = (WanPipeline, WanImageToVideoPipeline, WanVideoToVideoPipeline, WanVACEPipeline)
MODEL_METHODS = (
    WanTransformer3DModel.forward,
    WanVACETransformer3DModel.forward,
    AutoencoderKLWan.forward,
    AutoencoderKLWan.encode,
    AutoencoderKLWan.decode,
    AutoencoderKLWan.enable_tiling,
)


def documented_arguments(docstring: str) -> list[str]:
    """The names of the `Args:` section, in order (entries indented 8 to 12 spaces)."""
    section = re.split(r"\n\s*(?:Examples|Returns):", docstring.split("Args:", 1)[1])[0]
    return re.findall(r"^\s{8,12}(\w+) \(", section, flags=re.M)


def parameters(function) -> list[str]:
    return [name for name in inspect.signature(function).parameters if name != "self"]


@pytest.mark.parametrize("cls", PIPELINES, ids=lambda cls: cls.__name__)
def test_pipeline_docstrings_document_exactly_the_arguments(cls):
    for function, docstring in ((cls.__call__, cls.__call__.__doc__), (cls.__init__, cls.__doc__)):
        assert documented_arguments(docstring) == parameters(function), function.__qualname__
    assert documented_arguments(cls.encode_prompt.__doc__) == parameters(cls.encode_prompt)
    examples = cls.__call__.__doc__.split("Examples:", 1)[1]
    assert ">>> pipe = " in examples and f"from wan_diffusers import {cls.__name__}" in examples


@pytest.mark.parametrize("function", MODEL_METHODS, ids=lambda function: function.__qualname__)
def test_model_docstrings_document_exactly_the_arguments(function):
    assert documented_arguments(function.__doc__) == parameters(function), function.__qualname__


def test_model_class_docstrings_document_exactly_the_config_arguments():
    for cls in (WanTransformer3DModel, AutoencoderKLWan):
        assert documented_arguments(cls.__doc__) == parameters(cls.__init__), cls.__name__
    # VACE documents what it adds to WanTransformer3DModel's arguments
    added = [
        name
        for name in parameters(WanVACETransformer3DModel.__init__)
        if name not in parameters(WanTransformer3DModel.__init__)
    ]
    assert documented_arguments(WanVACETransformer3DModel.__doc__) == added
