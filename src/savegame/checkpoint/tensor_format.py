"""The safetensors file format and savegame's hash record of it: what the writer, the reader and
the hashing share.

A safetensors file is 8 bytes (the header's length, little-endian), a JSON header padded with
spaces to 8-byte alignment, then every tensor's raw bytes back to back. The header maps each
tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into the data) and
may hold ``"__metadata__"``, a str-to-str dict. :func:`read_header` checks all of it before a byte
of tensor data is trusted: the spans must tile the data exactly, with nothing after the last.

Beside a file's size and whole-file hash, a manifest keeps its ``tensor_hashes`` record (see
:class:`TensorFileInfo`); :func:`_check_record` checks that record against the file's header
before the reader relies on it. Tensors go between memory and file as raw bytes, which is only
right on a little-endian machine (:func:`_check_little_endian`).

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "h.safetensors")
>>> header = _header_bytes({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})
>>> len(header) % 8, header[:8] == (len(header) - 8).to_bytes(8, "little")
(0, True)
>>> _ = open(path, "wb").write(header + bytes(8))
>>> entries, data_start = read_header(path)
>>> entries["x"]["shape"], data_start == len(header)
([2], True)
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import xxhash

from savegame import jsonread
from savegame.checkpoint.codec import SAFETENSORS_DTYPES
from savegame.checkpoint.layout import FileInfo
from savegame.errors import CheckpointCorruptError, FormatVersionError

__all__ = ["TensorFileInfo", "read_header"]

_MAX_HEADER = 100_000_000  # the safetensors library's own limit
_CODES = {code: dtype for dtype, code in SAFETENSORS_DTYPES.items()}
_HASH = "xxh3_128"  # the one algorithm of every hash we record, whole file and pieces alike


def _check_little_endian() -> None:
    if sys.byteorder != "little":
        raise NotImplementedError(
            "savegame writes and reads safetensors files straight from tensor memory, which is only "
            "correct on little-endian machines; this machine is big-endian and is not supported."
        )


@dataclass(frozen=True, eq=False)
class TensorFileInfo(FileInfo):
    """What ``write_tensors`` returns: a :class:`FileInfo` (equal to ``hash_file``'s for the same
    file) that also carries ``tensor_hashes``, the record a manifest keeps beside the file's size
    and hash so that :class:`TensorFile` can check each tensor as it reads it:
    ``{"algorithm": "xxh3_128", "piece_bytes": n, "header": hex, "tensors": {name: [hex, ...]}}``,
    one hash per ``piece_bytes`` of each tensor (none for an empty one).

    >>> TensorFileInfo(size=8, hash="xxh3_128:00") == FileInfo(size=8, hash="xxh3_128:00")
    True
    """

    tensor_hashes: dict[str, Any] = field(default_factory=dict, repr=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FileInfo):
            return NotImplemented
        return (self.size, self.hash) == (other.size, other.hash)

    __hash__ = FileInfo.__hash__


def _bytes_of(t: torch.Tensor) -> memoryview:
    """The tensor's memory as a flat byte view, without copying (bfloat16/float8 included)."""
    return memoryview(t.detach().reshape(-1).view(torch.uint8).numpy())


def _header_bytes(entries: dict[str, Any]) -> bytes:
    raw = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the format pads the header with spaces to 8-byte alignment
    return len(raw).to_bytes(8, "little") + raw


def _looks_like(first: bytes) -> str | None:
    if first.startswith(b"PK\x03\x04"):
        return "a torch.save file (a zip archive holding a pickle)"
    if first[:1] == b"\x80" and first[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a pickle / legacy torch.save file"
    return None


def read_header(path: str | os.PathLike) -> tuple[dict[str, Any], int]:
    """Parse and validate a safetensors header; return ``(entries, data_start)``.

    ``entries`` maps tensor names (and ``__metadata__``, if any) to their header entries.

    >>> import tempfile, torch, os
    >>> from savegame.checkpoint.tensor_write import write_tensors
    >>> path = os.path.join(tempfile.mkdtemp(), "h.safetensors")
    >>> _ = write_tensors(path, {"x": torch.ones(3)})
    >>> read_header(path)[0]["x"]["shape"]
    [3]
    """
    with open(path, "rb", buffering=0) as f:
        return _read_header(f, Path(path), os.fstat(f.fileno()).st_size)


def _read_header(f: Any, path: Path, size: int) -> tuple[dict[str, Any], int]:
    def bad(what: str) -> CheckpointCorruptError:
        return CheckpointCorruptError(f"{path} is not a valid safetensors file: {what}. "
                                      "The file is damaged; restore it from a backup or use another checkpoint.")

    first = f.read(8)
    if kind := _looks_like(first):
        raise FormatVersionError(
            f"{path} is not a safetensors file: this looks like {kind}. savegame never unpickles "
            "files because unpickling can run arbitrary code; to read weights someone else saved "
            "with torch.save, use savegame.import_weights(...)."
        )
    if len(first) < 8:
        raise bad(f"it is truncated ({size} bytes; even an empty safetensors file has more)")
    n = int.from_bytes(first, "little")
    if n > _MAX_HEADER:
        raise bad(f"its first 8 bytes announce a {n}-byte header, more than any safetensors header")
    if n > size - 8:
        raise bad(f"it is truncated: the header alone needs {n + 8} bytes, the file has {size}")
    try:
        entries = jsonread.loads(f.read(n).decode("utf-8"), "its header")
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise bad(f"its header is not valid JSON ({e})") from e
    if not isinstance(entries, dict):
        raise bad("its header is not a JSON object")
    spans = []
    for name, e in entries.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = _CODES[e["dtype"]], e["shape"], e["data_offsets"]
            ok = type(shape) is list and all(type(d) is int and d >= 0 for d in shape) \
                and type(begin) is type(end) is int
            # torch computes strides as products of the dims: past int64 it cannot make the tensor
            ok = ok and math.prod(max(d, 1) for d in shape) < 1 << 63
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise bad(f"the header entry for {name!r} is malformed or has an unknown dtype: {str(e)[:200]}")
        if end - begin != math.prod(shape) * dtype.itemsize:
            raise bad(f"tensor {name!r} has {end - begin} bytes but shape {shape} of {e['dtype']}")
        spans.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise bad(f"tensor {name!r} starts at byte {begin} of the data, expected {position}")
        position = end
    if 8 + n + position > size:
        raise bad(f"it is truncated: the header describes {8 + n + position} bytes, the file has {size}")
    if 8 + n + position < size:
        raise bad(f"it has {size - 8 - n - position} unexpected bytes after the last tensor")
    return entries, 8 + n


def _check_record(record: Any, entries: dict[str, Any], header: bytes, path: Path) -> tuple[int, dict[str, list[str]]]:
    """Validate a manifest's ``tensor_hashes`` against this file and check the header's hash;
    returns ``(piece_bytes, {name: [hex, ...]})``."""
    def bad(what: str) -> CheckpointCorruptError:
        return CheckpointCorruptError(f"{path} does not match the tensor hashes its manifest records: {what}. "
                                      "Restore the checkpoint from a backup or use another one.")

    try:
        algorithm, piece, header_hash, pieces = (record["algorithm"], record["piece_bytes"], record["header"],
                                                 record["tensors"])
        ok = algorithm == _HASH and type(piece) is int and piece > 0 and isinstance(pieces, dict)
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise bad(f"the record is malformed: {str(record)[:200]}")
    names = {name for name in entries if name != "__metadata__"}
    if names != set(pieces):
        raise bad(f"the file holds tensors {sorted(names - set(pieces))[:5]} the record does not name, "
                  f"the record names {sorted(set(pieces) - names)[:5]} the file does not hold")
    if (found := xxhash.xxh3_128_hexdigest(header)) != header_hash:
        raise bad(f"its header hashes to {found}, the manifest recorded {header_hash}; the header was altered")
    for name in names:
        begin, end = entries[name]["data_offsets"]
        hashes = pieces[name]
        if not isinstance(hashes, list) or len(hashes) != -(-(end - begin) // piece):
            raise bad(f"tensor {name!r} has {end - begin} bytes, which the record does not cut in {piece}-byte pieces")
    return piece, pieces
