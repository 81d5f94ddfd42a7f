"""Convert one original checkpoint into one `from_pretrained` folder, validated before any tensor data is read.

`ComponentConversion` is built in two steps:

1. Plan (on construction, headers only). The original keys and shapes go through the key map as meta tensors:
   every original key must match exactly one rule (`rename_state_dict`), the result must have exactly the keys and
   shapes of the target model built on the meta device (`check_state_dict`, which lists every offending key), and
   the model itself must accept it (`load_state_dict(strict=True, assign=True)` on the meta device). Any error is
   raised here, before anything is written.
2. Write (`write`). The output tensors are written in the model's own order, one at a time, each read from its
   original file, renamed by the same rules and cast; see `checkpoint_io` for the memory behaviour.

Tied parameters (transformers' `encoder.embed_tokens` is `shared`) are written once, under the first name, as
`save_pretrained` does.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint_io import PlannedTensor, TensorReader, plan_shards, write_shards
from .rules import ConversionError, Rule, check_state_dict, rename_state_dict


@dataclass
class ComponentConversion:
    """One component of the output repo (`transformer/`, `vae/`, `text_encoder/`, `image_encoder/`).

    Args:
        folder: subfolder name in the repo (also the component name in `model_index.json`).
        library, class_name: what `model_index.json` records for it.
        what: the component's name in error messages ("DiT", "VAE", "T5 encoder", "CLIP").
        reader: the original tensors.
        rules: the key map.
        model: the target model, built on the meta device from the converted config.
        save_config: writes the config file(s) of the folder.
        weights_name: `diffusion_pytorch_model` (diffusers) or `model` (transformers).
        dtype: the stored dtype of floating-point tensors; None keeps each tensor's original dtype.
        keep_in_fp32: module names (as in `_keep_in_fp32_modules`) whose tensors stay float32 when `dtype` is a
            half type.
    """

    folder: str
    library: str
    class_name: str
    what: str
    reader: TensorReader
    rules: Sequence[Rule]
    model: torch.nn.Module
    save_config: Callable[[Path], None]
    weights_name: str
    dtype: torch.dtype | None = None
    keep_in_fp32: Sequence[str] = ()
    tensors: list[PlannedTensor] = field(init=False)
    _source: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self):
        infos = self.reader.infos
        meta = {key: torch.empty(info.shape, dtype=info.dtype, device="meta") for key, info in infos.items()}
        converted = rename_state_dict(meta, self.rules, what=self.what)

        # The model's tensors, each under the first of its names (tied parameters share one tensor).
        model_tensors = self.model.state_dict(keep_vars=True)
        first_name: dict[int, str] = {}
        aliases: dict[str, str] = {}
        for name, tensor in model_tensors.items():
            aliases[name] = first_name.setdefault(id(tensor), name)
        expected = {name: tuple(t.shape) for name, t in model_tensors.items() if aliases[name] == name}
        check_state_dict(converted, expected, what=self.what)
        for name in expected:  # model weights are floating-point; an integer one means a damaged or another file
            if not converted[name].dtype.is_floating_point:
                dtype = str(converted[name].dtype).removeprefix("torch.")
                raise ConversionError(
                    f"The {self.what} checkpoint holds `{name}` as {dtype}; Wan weights are floating-point, so the "
                    "file is damaged or not a Wan checkpoint"
                )
        self.model.load_state_dict(
            {name: converted[aliases[name]] for name in model_tensors}, strict=True, assign=True
        )

        self._source = {}
        for key in infos:
            for new_key in rename_state_dict({key: meta[key]}, self.rules, what=self.what):
                self._source[new_key] = key
        self.tensors = [
            PlannedTensor(name, expected[name], self._stored_dtype(name, converted[name].dtype)) for name in expected
        ]

    @property
    def num_parameters(self) -> int:
        return sum(math.prod(tensor.shape) for tensor in self.tensors)

    @property
    def nbytes(self) -> int:
        return sum(tensor.nbytes for tensor in self.tensors)

    def write(self, folder: Path, *, max_shard_size: int) -> list[Path]:
        """Write the config and the weights into `folder` (created), shard by shard, tensor by tensor."""
        folder.mkdir(parents=True)
        self.save_config(folder)
        planned = {tensor.key: tensor for tensor in self.tensors}
        pending: dict[str, torch.Tensor] = {}  # outputs of a split original tensor, waiting for their turn

        def fetch(key: str) -> torch.Tensor:
            if key not in pending:
                source = self._source[key]
                pending.update(rename_state_dict({source: self.reader.get(source)}, self.rules, what=self.what))
            return pending.pop(key).to(planned[key].dtype)

        try:
            return write_shards(folder, self.weights_name, plan_shards(self.tensors, max_shard_size), fetch)
        finally:
            self.reader.close()

    def _stored_dtype(self, name: str, dtype: torch.dtype) -> torch.dtype:
        if self.dtype is None or not dtype.is_floating_point:
            return dtype
        if self.dtype in (torch.float16, torch.bfloat16) and any(m in name.split(".") for m in self.keep_in_fp32):
            return torch.float32
        return self.dtype


def meta_model(build: Callable[[], torch.nn.Module], *, what: str) -> torch.nn.Module:
    """Build a model on the meta device (no memory for weights); config errors become clear `ConversionError`s."""
    try:
        with torch.device("meta"):
            return build()
    except (ValueError, TypeError) as error:
        raise ConversionError(f"The configuration derived for the {what} is invalid: {error}") from error
