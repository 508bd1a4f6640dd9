"""Streaming safetensors reader and writer that hash the file in the same pass.

A safetensors file is an 8-byte little-endian header length, a JSON header (each tensor's dtype,
shape and byte span in the data; optional ``__metadata__``) padded to 8 bytes, then the tensors'
raw bytes. The ``safetensors`` library builds the whole file in memory before writing it; for a
checkpoint that doubles peak memory and adds a full copy. Here each tensor's bytes go straight
from its memory to ``os.write`` in large chunks, while xxh3-128 hashes the same chunks: once for
the whole file, and once per piece of each tensor, so a reader can check one tensor without the
rest. Reading, a few threads ``preadv`` the file straight into the destination tensors (fresh
ones, or a model's own parameters) and hash each piece right after it arrives. Files are
byte-compatible with ``safetensors.torch.load_file`` / ``save_file`` in both directions.
Nothing is ever unpickled.

The parts live in one module per concept; this one gathers their names, so
``from savegame.checkpoint.safetensors_io import ...`` reaches all of them:

* ``tensor_format.py``: the header (built, read and checked), the ``tensor_hashes`` record
  checked against a file, :class:`TensorFileInfo`, the little-endian requirement;
* ``tensor_write.py``: :func:`write_tensors`, with its helper-thread hasher and early writeback;
* ``tensor_read.py``: :class:`TensorFile` (chunk planning, parallel ``preadv``, per-piece
  checks, huge-page destinations) and :func:`read_tensors`;
* ``tensor_hash.py``: :func:`hash_file` and :func:`hash_tensors`, for files already on disk.

Tuning constants (``_CHUNK``, ``_READ_CHUNK``, ``_READERS``...) are not re-exported here: a test
that shrinks one patches the module that reads it.

>>> import tempfile, torch, os
>>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
>>> info = write_tensors(path, {"w": torch.arange(4.0)})
>>> read_tensors(path, expected=info)["w"]
tensor([0., 1., 2., 3.])
"""

from __future__ import annotations

from savegame.checkpoint.layout import FileInfo  # re-exported: size and hash of one file
from savegame.checkpoint.tensor_format import TensorFileInfo, read_header
from savegame.checkpoint.tensor_hash import hash_file, hash_tensors
from savegame.checkpoint.tensor_read import TensorFile, read_tensors
from savegame.checkpoint.tensor_write import write_tensors

__all__ = ["FileInfo", "TensorFileInfo", "TensorFile", "write_tensors", "read_tensors", "read_header", "hash_file",
           "hash_tensors"]
