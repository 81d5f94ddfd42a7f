"""Lazy reading of original checkpoint files and streaming safetensors writing (conversion/checkpoint_io.py)."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from wan_diffusers.conversion.checkpoint_io import (
    PlannedTensor,
    TensorReader,
    parse_size,
    plan_shards,
    shard_file_names,
    write_shards,
)
from wan_diffusers.conversion.rules import ConversionError


@pytest.mark.parametrize(
    "size, expected",
    [("5GB", 5 * 10**9), ("500MB", 5 * 10**8), ("2GiB", 2 * 2**30), ("1.5kb", 1500), (" 10 ", 10), (123, 123)],
)
def test_sizes_parse_with_hub_units(size, expected):
    assert parse_size(size) == expected


@pytest.mark.parametrize("size", ["5 parsecs", "GB", "-1GB", 0, "0MB", True])
def test_bad_sizes_name_the_argument(size):
    with pytest.raises(ValueError, match="max_shard_size"):
        parse_size(size)


def planned(tensors: dict[str, torch.Tensor]) -> list[PlannedTensor]:
    return [PlannedTensor(key, tuple(t.shape), t.dtype) for key, t in tensors.items()]


def test_shards_are_filled_in_order_up_to_the_limit():
    tensors = planned({f"t{i}": torch.zeros(10) for i in range(5)})  # 40 bytes each
    shards = plan_shards(tensors, max_shard_size=100)
    assert [[t.key for t in shard] for shard in shards] == [["t0", "t1"], ["t2", "t3"], ["t4"]]
    # a tensor larger than the limit gets a shard of its own
    assert len(plan_shards(planned({"big": torch.zeros(100), "small": torch.zeros(1)}), 50)) == 2
    assert shard_file_names("model", 1) == ["model.safetensors"]
    assert shard_file_names("model", 2) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]


def test_written_shards_load_with_safetensors_and_are_aligned(tmp_path):
    torch.manual_seed(0)
    tensors = {
        "a.bf16_odd": torch.randn(3).bfloat16(),  # 6 bytes: a float32 written after it would be misaligned
        "b.f32": torch.randn(5, 2),
        "c.scalar": torch.tensor(2.5),
        "d.int": torch.arange(7),
        "e.f16": torch.randn(4, 3).half(),
    }
    shards = plan_shards(planned(tensors), max_shard_size=60)
    files = write_shards(tmp_path, "model", shards, fetch=lambda key: tensors[key])
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert [file.name for file in files[:-1]] == sorted(set(index["weight_map"].values()))
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())

    loaded = {}
    for file in files[:-1]:
        loaded.update(load_file(file))
        with safe_open(file, framework="pt") as handle:
            assert handle.metadata() == {"format": "pt"}
        header_length = int.from_bytes(file.read_bytes()[:8], "little")
        header = json.loads(file.read_bytes()[8 : 8 + header_length])
        assert header_length % 8 == 0
        for key, entry in header.items():
            if key != "__metadata__":
                assert entry["data_offsets"][0] % tensors[key].element_size() == 0, key
    assert loaded.keys() == tensors.keys()
    for key, tensor in tensors.items():
        assert torch.equal(loaded[key], tensor) and loaded[key].dtype == tensor.dtype, key


def test_a_fetched_tensor_that_does_not_match_its_plan_is_refused(tmp_path):
    shards = [[PlannedTensor("x", (2,), torch.float32)]]
    with pytest.raises(ConversionError, match="planned"):
        write_shards(tmp_path, "model", shards, fetch=lambda key: torch.zeros(3))


def test_reader_reads_headers_first_and_tensors_on_demand(tmp_path):
    save_file({"a": torch.ones(2, 3)}, tmp_path / "one.safetensors")
    torch.save({"b": torch.full((4,), 2.0, dtype=torch.bfloat16)}, tmp_path / "two.pth")
    reader = TensorReader([tmp_path / "one.safetensors", tmp_path / "two.pth"], what="test")
    assert {key: (info.shape, info.dtype) for key, info in reader.infos.items()} == {
        "a": ((2, 3), torch.float32),
        "b": ((4,), torch.bfloat16),
    }
    with reader:
        assert torch.equal(reader.get("b"), torch.full((4,), 2.0, dtype=torch.bfloat16))
        assert torch.equal(reader.get("a"), torch.ones(2, 3))


def test_unreadable_files_give_clear_errors(tmp_path):
    save_file({"a": torch.ones(1000)}, tmp_path / "truncated.safetensors")
    data = (tmp_path / "truncated.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="truncated.safetensors.*not a readable safetensors file"):
        TensorReader([tmp_path / "truncated.safetensors"], what="DiT")

    (tmp_path / "garbage.pth").write_bytes(b"this is not a zip archive" * 10)
    with pytest.raises(ConversionError, match="garbage.pth is not a readable PyTorch checkpoint"):
        TensorReader([tmp_path / "garbage.pth"], what="VAE")

    torch.save({"model": {"w": torch.ones(1)}}, tmp_path / "nested.pth")
    with pytest.raises(ConversionError, match="flat state dict"):
        TensorReader([tmp_path / "nested.pth"], what="VAE")

    with pytest.raises(ConversionError, match="does not exist"):
        TensorReader([tmp_path / "absent.pth"], what="VAE")

    save_file({"a": torch.ones(1)}, tmp_path / "x.safetensors")
    save_file({"a": torch.ones(1)}, tmp_path / "y.safetensors")
    with pytest.raises(ConversionError, match="stores some tensors twice"):
        TensorReader([tmp_path / "x.safetensors", tmp_path / "y.safetensors"], what="DiT")


def test_pickles_with_code_are_refused(tmp_path):
    """`.pth` files are read with `weights_only=True`: a pickle that would run code does not load."""
    torch.save({"w": torch.ones(1), "payload": print}, tmp_path / "evil.pth")
    with pytest.raises(ConversionError, match="weights_only"):
        TensorReader([tmp_path / "evil.pth"], what="T5 encoder")


def test_a_pth_is_mapped_afresh_as_it_is_read(tmp_path, monkeypatch):
    """Pages of tensors already read are released with their mapping, so memory does not grow to the file's size."""
    import wan_diffusers.conversion.checkpoint_io as checkpoint_io

    torch.save({f"t{i}": torch.full((256,), float(i)) for i in range(8)}, tmp_path / "big.pth")  # 1 KiB each
    loads = []
    original_load = checkpoint_io._load_pth
    monkeypatch.setattr(
        checkpoint_io, "_load_pth", lambda file, what: loads.append(file) or original_load(file, what=what)
    )
    monkeypatch.setattr(checkpoint_io, "_PTH_REMAP_BYTES", 2000)  # re-map once more than 2000 bytes were read
    reader = TensorReader([tmp_path / "big.pth"], what="T5 encoder")
    loads.clear()  # the header read
    values = [reader.get(f"t{i}")[0].item() for i in range(8)]
    assert values == [float(i) for i in range(8)]
    assert len(loads) == 4  # mapped at t0, then again at t2, t4 and t6


def test_headers_that_do_not_fit_their_data_are_refused(tmp_path):
    save_file({"a": torch.ones(4), "b": torch.ones(2)}, tmp_path / "x.safetensors")
    data = bytearray((tmp_path / "x.safetensors").read_bytes())
    header_size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_size])
    header["b"]["shape"] = [3]  # 12 bytes promised, 8 stored
    text = json.dumps(header, separators=(",", ":")).encode().ljust(header_size)
    (tmp_path / "x.safetensors").write_bytes(bytes(data[:8]) + text + bytes(data[8 + header_size :]))
    with pytest.raises(ConversionError, match="data offsets .* do not fit F32 \\[3\\]"):
        TensorReader([tmp_path / "x.safetensors"], what="DiT")
