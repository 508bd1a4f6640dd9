"""TensorFile reads any subset of a safetensors file straight into given memory, verified per piece
(or, knowing only the file's hash, the whole file in file order), with several readers or one."""

import os

import pytest
import torch
from safetensors.torch import load_file

from savegame.checkpoint import tensor_read, tensor_write
from savegame.checkpoint.safetensors_io import FileInfo, TensorFile, hash_file, hash_tensors, write_tensors
from savegame.errors import CheckpointCorruptError

MODES = ["pieces", "file-hash"]


@pytest.fixture
def small_units(monkeypatch):
    """Pieces, chunks and the parallel threshold shrunk so tiny files exercise every path."""
    monkeypatch.setattr(tensor_write, "_CHUNK", 1024)  # write: a piece hash per KiB of each tensor
    monkeypatch.setattr(tensor_read, "_READ_CHUNK", 700)  # read: chunks straddle pieces
    monkeypatch.setattr(tensor_read, "_PARALLEL", 0)
    monkeypatch.setattr(tensor_read, "_READERS", 3)


@pytest.fixture
def tensors():
    torch.manual_seed(0)
    return {"big": torch.randn(3000), "half": torch.randn(77).half(), "ints": torch.arange(500, dtype=torch.int64),
            "empty": torch.zeros(0, 4), "scalar": torch.tensor(1.5), "flags": torch.rand(33) > 0.5,
            **{f"bias{i}": torch.randn(5) for i in range(12)}}


def open_file(path, info, mode):
    return TensorFile(path, expected=info, tensor_hashes=info.tensor_hashes if mode == "pieces" else None)


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.reshape(-1).view(torch.uint8),
                                                                      b.reshape(-1).view(torch.uint8))


def test_written_piece_hashes_are_what_hash_tensors_finds_and_the_info_equals_hash_files(tmp_path, tensors,
                                                                                      small_units):
    path = tmp_path / "t.safetensors"
    info = write_tensors(path, tensors)
    assert info == hash_file(path) and hash_file(path) == info
    record = info.tensor_hashes
    assert record["piece_bytes"] == 1024 and len(record["tensors"]["big"]) == 12 and record["tensors"]["empty"] == []
    assert record == hash_tensors(path, piece_bytes=1024)


def test_chunks_hashed_on_the_helper_thread_or_inline_give_the_same_file_and_hashes(tmp_path, tensors, small_units,
                                                                                   monkeypatch):
    infos = []
    for small in (0, 1 << 30):  # every chunk on the helper thread (with writeback hints), then none
        monkeypatch.setattr(tensor_write, "_SMALL", small)
        infos.append(write_tensors(tmp_path / f"t{small}.safetensors", tensors))
    assert infos[0] == infos[1] and infos[0] == hash_file(tmp_path / "t0.safetensors")
    assert (tmp_path / "t0.safetensors").read_bytes() == (tmp_path / f"t{1 << 30}.safetensors").read_bytes()
    assert infos[0].tensor_hashes == hash_tensors(tmp_path / "t0.safetensors", piece_bytes=1024)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("readers", [1, 3])
def test_reads_into_given_and_fresh_tensors_give_the_safetensors_librarys_bits(tmp_path, tensors, small_units,
                                                                              monkeypatch, mode, readers):
    monkeypatch.setattr(tensor_read, "_READERS", readers)
    monkeypatch.setattr(tensor_read, "_MAX_IOV", 4)  # many small tensors: several chunks
    path = tmp_path / "t.safetensors"
    info = write_tensors(path, tensors)
    mine = {"big": torch.zeros(3000), "bias3": torch.zeros(5), "flags": torch.zeros(33, dtype=torch.bool)}
    touched = set()
    with open_file(path, info, mode) as f:
        got = f.read({**mine, "half": None, "ints": None, "empty": None}, touched=touched)
    assert all(got[name] is t for name, t in mine.items()) and touched == set(mine)
    expected = load_file(path)
    if mode == "pieces":
        assert sorted(got) == sorted([*mine, "half", "ints", "empty"])
    else:  # verified as a whole: read whole
        assert sorted(got) == sorted(expected)
    assert all(same(got[name], expected[name]) for name in got)


@pytest.mark.parametrize("readers", [1, 3])
def test_a_damaged_piece_names_its_tensor_and_the_given_memory_it_reached(tmp_path, tensors, small_units,
                                                                         monkeypatch, readers):
    monkeypatch.setattr(tensor_read, "_READERS", readers)
    path = tmp_path / "t.safetensors"
    info = write_tensors(path, tensors)
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x10  # the last tensor in the file
    path.write_bytes(bytes(data))
    last = TensorFile(path).names[-1]
    touched = set()
    with open_file(path, info, "pieces") as f, pytest.raises(CheckpointCorruptError) as e:
        f.read({"big": torch.empty(3000), last: None}, touched=touched)
    assert f"tensor {last!r}" in str(e.value) and str(path) in str(e.value)
    assert touched == {"big"} if readers == 1 else touched <= {"big"}  # threads stop once one fails
    with open_file(path, info, "pieces") as f:  # the undamaged tensors still read, verified
        assert same(f.read({"big": None})["big"], tensors["big"])


@pytest.mark.parametrize("readers", [1, 3])
def test_a_damaged_file_with_only_its_hash_is_found_once_read_whole(tmp_path, tensors, small_units, monkeypatch,
                                                                   readers):
    monkeypatch.setattr(tensor_read, "_READERS", readers)
    path = tmp_path / "t.safetensors"
    info = write_tensors(path, tensors)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with open_file(path, info, "file-hash") as f, pytest.raises(CheckpointCorruptError, match="recorded hash"):
        f.read({"scalar": None})


def test_records_that_do_not_describe_the_file_are_corrupt_before_any_read(tmp_path, tensors, small_units):
    path = tmp_path / "t.safetensors"
    info = write_tensors(path, tensors)
    record = info.tensor_hashes
    bad = [
        ({**record, "algorithm": "md5"}, "malformed"),
        ({k: v for k, v in record.items() if k != "header"}, "malformed"),
        ({**record, "header": "0" * 32}, "header hashes to"),
        ({**record, "tensors": {k: v for k, v in record["tensors"].items() if k != "ints"}}, "does not name"),
        ({**record, "tensors": {**record["tensors"], "big": record["tensors"]["big"][:-1]}}, "pieces"),
        ({**record, "piece_bytes": 0}, "malformed"),
    ]
    for broken, words in bad:
        with pytest.raises(CheckpointCorruptError, match=words):
            TensorFile(path, expected=info, tensor_hashes=broken)
    with pytest.raises(CheckpointCorruptError, match="manifest recorded 3"):
        TensorFile(path, expected=FileInfo(size=3, hash=info.hash))


def test_a_destination_must_match_the_saved_dtype_and_shape_and_be_contiguous(tmp_path):
    path = tmp_path / "t.safetensors"
    info = write_tensors(path, {"w": torch.ones(2, 3)})
    with TensorFile(path, expected=info, tensor_hashes=info.tensor_hashes) as f:
        for wrong in (torch.empty(2, 3, dtype=torch.float64), torch.empty(3, 2), torch.empty(3, 2).t()):
            with pytest.raises(ValueError, match="must match and be contiguous"):
                f.read({"w": wrong})
        with pytest.raises(KeyError, match="no tensor named 'x'"):
            f.read({"x": None})


def test_short_reads_are_resumed_and_a_file_that_shrinks_is_truncated(tmp_path, tensors, small_units, monkeypatch):
    path = tmp_path / "t.safetensors"
    info = write_tensors(path, tensors)
    real = os.preadv

    def stingy(fd, buffers, offset):  # the kernel may return fewer bytes than asked
        return real(fd, [memoryview(buffers[0])[:7]], offset)

    monkeypatch.setattr(tensor_read.os, "preadv", stingy)
    with open_file(path, info, "pieces") as f:
        assert all(same(t, tensors[name]) for name, t in f.read(dict.fromkeys(f.names)).items())
    monkeypatch.setattr(tensor_read.os, "preadv", lambda fd, buffers, offset: 0)
    with open_file(path, info, "pieces") as f, pytest.raises(CheckpointCorruptError, match="truncated"):
        f.read({"big": None})


def test_unverified_reads_take_any_subset(tmp_path, tensors):
    path = tmp_path / "t.safetensors"
    write_tensors(path, tensors)
    with TensorFile(path) as f:
        assert list(f.read({"ints": None})) == ["ints"] and not f.per_tensor
