"""Our streaming safetensors files are the safetensors library's files, in both directions."""

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from savegame.checkpoint import tensor_read, tensor_write
from savegame.checkpoint.codec import SAFETENSORS_DTYPES
from savegame.checkpoint.safetensors_io import FileInfo, hash_file, read_header, read_tensors, write_tensors
from savegame.errors import CheckpointCorruptError, FormatVersionError


def sample(dtype, shape=(3, 5)):
    if dtype == torch.bool:
        return torch.rand(shape) > 0.5
    if dtype.is_complex:
        return torch.randn(shape, dtype=dtype)
    return (torch.randn(shape) * 20).to(dtype)


def bits(t):
    return t.contiguous().reshape(-1).view(torch.uint8)


@pytest.fixture
def tensors():
    out = {f"t/{dtype}": sample(dtype) for dtype in SAFETENSORS_DTYPES}
    out.update({"scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3), "bf16": sample(torch.bfloat16, (7,))})
    return out


def assert_same(expected, found):
    assert sorted(expected) == sorted(found)
    for name, t in expected.items():
        assert found[name].dtype == t.dtype and found[name].shape == t.shape, name
        assert torch.equal(bits(found[name]), bits(t)), name


def test_our_files_load_with_the_safetensors_library(tmp_path, tensors):
    path = tmp_path / "ours.safetensors"
    write_tensors(path, tensors, metadata={"format": "pt", "step": "3"})
    assert_same(tensors, load_file(path))
    with safe_open(path, framework="pt") as f:
        assert f.metadata() == {"format": "pt", "step": "3"}


def test_library_files_load_with_our_reader(tmp_path, tensors):
    path = tmp_path / "theirs.safetensors"
    save_file(tensors, path, metadata={"a": "b"})
    assert_same(tensors, read_tensors(path, expected=hash_file(path)))
    assert read_header(path)[0]["__metadata__"] == {"a": "b"}


def test_large_tensors_round_trip_across_chunks_and_huge_pages(tmp_path, monkeypatch):
    monkeypatch.setattr(tensor_write, "_CHUNK", 1 << 20)  # many write chunks
    monkeypatch.setattr(tensor_read, "_READ_CHUNK", 3 << 20)  # uneven read chunks
    big = {"a": torch.randn(5 << 20), "b": torch.randint(0, 9, (3 << 20,), dtype=torch.int16), "c": torch.ones(1)}
    path = tmp_path / "big.safetensors"
    info = write_tensors(path, big)
    assert info == hash_file(path) and info.size == os.path.getsize(path)
    assert_same(big, read_tensors(path, expected=info))
    assert_same(big, load_file(path))


def test_non_contiguous_and_grad_tensors_are_written_as_their_values(tmp_path):
    base = torch.arange(12.0, requires_grad=True).reshape(3, 4)
    path = tmp_path / "v.safetensors"
    write_tensors(path, {"t": base.t(), "conj": torch.tensor([1 + 1j], dtype=torch.complex64).conj()})
    loaded = load_file(path)
    assert torch.equal(loaded["t"], base.detach().t())
    assert loaded["conj"].item() == 1 - 1j


def test_file_info_records_size_and_xxh3_hash(tmp_path):
    info = write_tensors(tmp_path / "x.safetensors", {"x": torch.ones(4)})
    assert info.hash.startswith("xxh3_128:") and len(info.hash) == len("xxh3_128:") + 32
    assert info == hash_file(tmp_path / "x.safetensors")


def test_a_changed_byte_fails_the_hash_check_naming_the_file(tmp_path):
    path = tmp_path / "x.safetensors"
    info = write_tensors(path, {"x": torch.zeros(100)})
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    assert read_tensors(path)["x"].abs().sum() > 0  # unverified reads do not notice
    with pytest.raises(CheckpointCorruptError) as e:
        read_tensors(path, expected=info)
    assert str(path) in str(e.value) and info.hash in str(e.value) and "found xxh3_128:" in str(e.value)


def test_a_size_mismatch_is_reported_before_reading(tmp_path):
    path = tmp_path / "x.safetensors"
    info = write_tensors(path, {"x": torch.zeros(10)})
    with pytest.raises(CheckpointCorruptError, match=f"{info.size} bytes but the manifest recorded 7"):
        read_tensors(path, expected=FileInfo(size=7, hash=info.hash))


@pytest.mark.parametrize("keep", [0, 5, 8, 40, -1])
def test_truncated_files_are_corrupt_and_named(tmp_path, keep):
    path = tmp_path / "x.safetensors"
    write_tensors(path, {"x": torch.zeros(10)})
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    with pytest.raises(CheckpointCorruptError, match="truncated") as e:
        read_tensors(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("header, words", [
    (b"not json", "not valid JSON"),
    (json.dumps({"x": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}).encode(), "unknown dtype"),
    (json.dumps({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}).encode(), r"shape \[2\]"),
    (json.dumps({"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}).encode(), "expected 0"),
    (json.dumps([1, 2]).encode(), "not a JSON object"),
])
def test_malformed_headers_are_corrupt(tmp_path, header, words):
    path = tmp_path / "x.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    with pytest.raises(CheckpointCorruptError, match=words):
        read_tensors(path)


def test_trailing_bytes_and_absurd_header_lengths_are_corrupt(tmp_path):
    path = tmp_path / "x.safetensors"
    write_tensors(path, {"x": torch.zeros(2)})
    path.write_bytes(path.read_bytes() + b"extra")
    with pytest.raises(CheckpointCorruptError, match="unexpected bytes"):
        read_tensors(path)
    path.write_bytes((2**62).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointCorruptError, match="header"):
        read_tensors(path)



def test_a_pickle_renamed_to_safetensors_is_refused_and_never_executed(tmp_path, pickle_bomb):
    Boom, marker = pickle_bomb
    for name, save in [("zip", lambda p: torch.save({"w": Boom()}, p)),
                       ("legacy", lambda p: torch.save({"w": Boom()}, p, _use_new_zipfile_serialization=False))]:
        path = tmp_path / f"{name}.safetensors"
        save(path)
        with pytest.raises(FormatVersionError) as e:
            read_tensors(path, expected=hash_file(path))
        assert "torch.save" in str(e.value) and "import_weights" in str(e.value) and str(path) in str(e.value)
    assert not marker.exists()


def test_failed_writes_leave_no_partial_file(tmp_path):
    class Exploding(dict):
        def items(self):
            yield "a", torch.ones(1)
            yield "b", "not a tensor"

    path = tmp_path / "x.safetensors"
    with pytest.raises(TypeError, match="'b' must be a dense CPU torch.Tensor"):
        write_tensors(path, Exploding())
    assert not path.exists()
    with pytest.raises(FileNotFoundError):
        write_tensors(tmp_path / "missing" / "x.safetensors", {"a": torch.ones(1)})


def test_unsupported_dtypes_and_bad_metadata_are_refused(tmp_path):
    with pytest.raises(TypeError, match="complex128"):
        write_tensors(tmp_path / "x", {"a": torch.ones(1, dtype=torch.complex128)})
    with pytest.raises(TypeError, match="metadata"):
        write_tensors(tmp_path / "x", {"a": torch.ones(1)}, metadata={"step": 3})
