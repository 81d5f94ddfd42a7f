"""Reading original checkpoint files lazily, and writing Hub-format safetensors shards one tensor at a time.

Memory is the point of this module. A converted 14B release is ~80 GB; holding it all (or one 5 GB shard twice, as
`safetensors.torch.save_file` does in versions before 0.6) is what makes conversions run out of RAM. Here:

- `TensorReader` reads only headers up front (shapes and dtypes, for planning and validation), then hands out one
  tensor at a time: from `.safetensors` files by plain reads into a buffer of that tensor's size; from `.pth` files
  (loaded with `weights_only=True` and `mmap=True`) through a memory map, one file at a time.
- `write_shards` writes each output file tensor by tensor (header first, then the bytes of each tensor straight
  from its buffer), so the only tensors alive are the ones being written.
"""

import json
import re
import struct
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .rules import ConversionError

# safetensors' dtype names
_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_TORCH_DTYPES = {name: dtype for dtype, name in _SAFETENSORS_DTYPES.items()}
_PTH_REMAP_BYTES = 2**30

_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})


def parse_size(size: int | str, *, argument: str = "max_shard_size") -> int:
    """Bytes from an int or a string like "5GB" (10^9 bytes, the Hub convention), "500MiB" or "1000000"."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(size))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _SIZE_UNITS:
            raise ValueError(f"`{argument}` must be a size like '5GB', '500MB' or '2GiB', got {size!r}")
        value = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if value <= 0:
        raise ValueError(f"`{argument}` must be positive, got {size!r}")
    return value


@dataclass(frozen=True)
class TensorInfo:
    """What the header of a checkpoint file says about one tensor (`data_offsets`: bytes after the header, for
    safetensors files)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    file: Path
    data_offsets: tuple[int, int] | None = None

    @property
    def nbytes(self) -> int:
        return _numel(self.shape) * _itemsize(self.dtype)


class TensorReader:
    """The tensors of one checkpoint, spread over one or several files, read one at a time.

    `infos` (key -> shape, dtype, file) is read from the file headers when the reader is created; tensor data is
    only read by `get`. A safetensors tensor is read with a plain file read into its own buffer (not through a
    memory map, whose pages would stay in the process's memory until the file is closed), so reading a whole
    checkpoint holds one tensor at a time. A `.pth` is memory-mapped, one file at a time, and mapped afresh after
    every ~1 GB read so that the pages of tensors already used are released.
    """

    def __init__(self, files: Sequence[Path], *, what: str):
        self.what = what
        self.files = [Path(file) for file in files]
        self.infos: dict[str, TensorInfo] = {}
        duplicated = []
        for file in self.files:
            for key, info in _read_header(file, what=what).items():
                if key in self.infos:
                    duplicated.append(f"{key} (in {self.infos[key].file.name} and {file.name})")
                self.infos[key] = info
        if duplicated:
            raise ConversionError(
                f"The {what} checkpoint stores some tensors twice:\n    " + "\n    ".join(duplicated)
            )
        self.close()

    def get(self, key: str) -> torch.Tensor:
        info = self.infos[key]
        try:
            if info.data_offsets is not None:
                tensor = _read_safetensors_tensor(info)
            else:
                # Re-map a `.pth` after every ~1 GB read: the pages of the tensors already converted are then
                # released with the old mapping instead of piling up to the size of the file.
                if self._pth_file != info.file or self._pth_bytes_read > _PTH_REMAP_BYTES:
                    self.close()
                    self._pth_tensors, self._pth_file = _load_pth(info.file, what=self.what), info.file
                tensor = self._pth_tensors[key]
                self._pth_bytes_read += info.nbytes
        except ConversionError:
            raise
        except Exception as error:  # a header that promised more data than the file holds
            raise ConversionError(
                f"Cannot read tensor {key!r} of the {self.what} from {info.file} ({type(error).__name__}: {error}); "
                "the file looks truncated or corrupted"
            ) from error
        if tuple(tensor.shape) != info.shape or tensor.dtype != info.dtype:
            raise ConversionError(
                f"Tensor {key!r} in {info.file} is {tuple(tensor.shape)} {tensor.dtype}, but its header says "
                f"{info.shape} {info.dtype}; the file is corrupted"
            )
        return tensor

    def close(self) -> None:
        self._pth_file, self._pth_tensors, self._pth_bytes_read = None, {}, 0

    def __enter__(self) -> "TensorReader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _read_header(file: Path, *, what: str) -> dict[str, TensorInfo]:
    if not file.is_file():
        raise ConversionError(f"The {what} file {file} does not exist")
    if file.suffix != ".safetensors":
        return {key: TensorInfo(tuple(t.shape), t.dtype, file) for key, t in _load_pth(file, what=what).items()}
    try:
        return _parse_safetensors_header(file)
    except Exception as error:
        raise ConversionError(
            f"{file} is not a readable safetensors file ({type(error).__name__}: {error}); it may be truncated "
            "or corrupted: download it again"
        ) from error


def _parse_safetensors_header(file: Path) -> dict[str, TensorInfo]:
    """The tensors a safetensors header describes, checked against the file as the safetensors library checks them
    (known dtypes, sizes matching shapes, data contiguous and exactly filling the file), without mapping the file:
    mapping a 60 GB file fails on machines that limit virtual memory, and reading needs no map."""
    with open(file, "rb") as handle:
        (header_size,) = struct.unpack("<Q", handle.read(8))
        if header_size > file.stat().st_size - 8:
            raise ValueError(f"header of {header_size} bytes in a file of {file.stat().st_size}")
        header = json.loads(handle.read(header_size))
    start, end, infos = 8 + header_size, 0, {}
    entries = sorted(
        ((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda item: item[1]["data_offsets"]
    )
    for key, entry in entries:
        shape, dtype, (begin, stop) = tuple(entry["shape"]), _TORCH_DTYPES[entry["dtype"]], entry["data_offsets"]
        if begin != end or stop - begin != _numel(shape) * _itemsize(dtype):
            raise ValueError(f"tensor {key!r}: data offsets {[begin, stop]} do not fit {entry['dtype']} {list(shape)}")
        infos[key] = TensorInfo(shape, dtype, file, (start + begin, start + stop))
        end = stop
    if start + end != file.stat().st_size:
        raise ValueError(f"the header describes {start + end} bytes, the file has {file.stat().st_size}")
    return infos


def _read_safetensors_tensor(info: TensorInfo) -> torch.Tensor:
    begin, end = info.data_offsets
    buffer = bytearray(end - begin)
    with open(info.file, "rb") as handle:
        handle.seek(begin)
        if handle.readinto(buffer) != len(buffer):
            raise ConversionError(f"{info.file} ends before the data its header describes; the file is truncated")
    if not buffer:
        return torch.empty(info.shape, dtype=info.dtype)
    return torch.frombuffer(buffer, dtype=info.dtype).reshape(info.shape)


def _load_pth(file: Path, *, what: str) -> dict[str, torch.Tensor]:
    """A `.pth` state dict, memory-mapped, read with `weights_only=True` (no arbitrary code from pickles)."""
    try:
        try:
            state_dict = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            # files written by torch < 1.6 (not a zip archive) cannot be memory-mapped
            state_dict = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ConversionError(
            f"{file} is not a readable PyTorch checkpoint ({type(error).__name__}: {error}); it may be truncated or "
            "corrupted (download it again), or contain more than tensors (only plain state dicts are read, with "
            "`weights_only=True`)"
        ) from error
    if not isinstance(state_dict, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state_dict.items()
    ):
        raise ConversionError(
            f"{file} must hold a flat state dict (parameter name -> tensor) as the Wan2.1 release files do, got a "
            f"{type(state_dict).__name__} with {'other entries' if isinstance(state_dict, dict) else 'no tensors'}"
        )
    return state_dict


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor of an output file: its final name, shape and dtype (known before any data is read)."""

    key: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return _numel(self.shape) * _itemsize(self.dtype)


def plan_shards(tensors: Iterable[PlannedTensor], max_shard_size: int) -> list[list[PlannedTensor]]:
    """Split tensors, in order, into shards of at most `max_shard_size` bytes (a larger tensor gets its own)."""
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor.nbytes > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return [shard for shard in shards if shard]


def shard_file_names(weights_name: str, num_shards: int) -> list[str]:
    """`model.safetensors`, or `model-00001-of-00003.safetensors`... as diffusers and transformers name them."""
    if num_shards == 1:
        return [f"{weights_name}.safetensors"]
    return [f"{weights_name}-{i:05d}-of-{num_shards:05d}.safetensors" for i in range(1, num_shards + 1)]


def write_shards(
    folder: Path,
    weights_name: str,
    shards: list[list[PlannedTensor]],
    fetch: Callable[[str], torch.Tensor],
) -> list[Path]:
    """Write `shards` as safetensors files (plus an index json when there are several); returns the files.

    `fetch(key)` must return the tensor planned under `key`; it is called once per tensor, in writing order, and
    the tensor is released as soon as its bytes are on disk. Within a file, tensors are laid out by decreasing item
    size so every tensor starts at an offset aligned to its dtype, as the safetensors library lays them out.
    """
    if sys.byteorder != "little":  # safetensors stores little-endian data; tensors are written as they are in memory
        raise RuntimeError("writing safetensors files needs a little-endian machine")
    names = shard_file_names(weights_name, len(shards))
    written = []
    for name, shard in zip(names, shards):
        path = folder / name
        _write_safetensors(path, sorted(shard, key=lambda t: -_itemsize(t.dtype)), fetch)
        written.append(path)
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(t.nbytes for shard in shards for t in shard)},
            "weight_map": {t.key: name for name, shard in zip(names, shards) for t in sorted(shard, key=_key)},
        }
        index_path = folder / f"{weights_name}.safetensors.index.json"
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        written.append(index_path)
    return written


def _write_safetensors(path: Path, tensors: list[PlannedTensor], fetch: Callable[[str], torch.Tensor]) -> None:
    header, offset = {}, 0
    for tensor in tensors:
        header[tensor.key] = {
            "dtype": _SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    header["__metadata__"] = {"format": "pt"}  # transformers refuses safetensors files without it
    header_bytes = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)  # the data section starts 8-byte aligned
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(header_bytes)))
        file.write(header_bytes)
        for planned in tensors:
            tensor = fetch(planned.key)
            if tuple(tensor.shape) != planned.shape or tensor.dtype != planned.dtype:
                raise ConversionError(
                    f"{planned.key}: produced {tuple(tensor.shape)} {tensor.dtype}, planned {planned.shape} "
                    f"{planned.dtype}"
                )
            file.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy())
            del tensor


def _key(tensor: PlannedTensor) -> str:
    return tensor.key


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()
