"""Hashes of files already on disk, the same ones ``write_tensors`` records as it writes.

:func:`hash_file` gives any file's size and xxh3-128 hash (``verify`` checks every file of a
checkpoint against its manifest with it); :func:`hash_tensors` recomputes a safetensors file's
per-piece ``tensor_hashes`` record, e.g. for a checkpoint written before manifests kept one.
Unless told otherwise, ``hash_tensors`` cuts pieces at the writer's own piece size (``_CHUNK``),
so its record equals the one ``write_tensors`` returned for the same file.

>>> import os, tempfile, torch
>>> from savegame.checkpoint.tensor_write import write_tensors
>>> path = os.path.join(tempfile.mkdtemp(), "h.safetensors")
>>> info = write_tensors(path, {"x": torch.ones(3)})
>>> hash_file(path) == info, hash_tensors(path) == info.tensor_hashes
(True, True)
"""

from __future__ import annotations

import os
from typing import Any

import xxhash

from savegame.checkpoint.layout import FileInfo
from savegame.checkpoint.tensor_format import _HASH
from savegame.checkpoint.tensor_read import TensorFile
from savegame.checkpoint.tensor_write import _CHUNK

__all__ = ["hash_file", "hash_tensors"]


def hash_tensors(path: str | os.PathLike, *, piece_bytes: int = _CHUNK) -> dict[str, Any]:
    """The ``tensor_hashes`` record of an existing safetensors file, as ``write_tensors`` makes it
    (see :class:`TensorFileInfo`); e.g. to give an older checkpoint's manifest per-tensor hashes.

    >>> import tempfile, torch, os
    >>> from savegame.checkpoint.tensor_write import write_tensors
    >>> path = os.path.join(tempfile.mkdtemp(), "p.safetensors")
    >>> write_tensors(path, {"x": torch.ones(3)}).tensor_hashes == hash_tensors(path)
    True
    """
    # TensorFile checks the header; its parsed entries and descriptor are reused here as they are.
    with TensorFile(path) as f:
        pieces: dict[str, list[str]] = {}
        for name in f.names:
            begin, end = f._entries[name]["data_offsets"]
            pieces[name] = [xxhash.xxh3_128_hexdigest(os.pread(f._fd, min(piece_bytes, end - begin - start),
                                                               f._data_start + begin + start))
                            for start in range(0, end - begin, piece_bytes)]
        return {"algorithm": _HASH, "piece_bytes": piece_bytes, "header": xxhash.xxh3_128_hexdigest(f._header),
                "tensors": pieces}


def hash_file(path: str | os.PathLike) -> FileInfo:
    """Size and xxh3-128 hash of any file, read in large chunks.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "f.txt")
    >>> _ = open(path, "wb").write(b"hi")
    >>> hash_file(path).size
    2
    """
    h, size = xxhash.xxh3_128(), 0
    with open(path, "rb", buffering=0) as f:
        # no larger than the file (+1 sees its end in one read): zeroing 64 MiB costs ~30 ms a file
        buf = bytearray(min(_CHUNK, os.fstat(f.fileno()).st_size + 1))
        while got := f.readinto(buf):
            h.update(memoryview(buf)[:got])
            size += got
    return FileInfo(size=size, hash=f"{_HASH}:{h.hexdigest()}")
