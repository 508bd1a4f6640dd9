"""JSON that someone else may have written (a checkpoint's manifest, ``run.json``, ``sweep.json``),
read within bounds: a hostile or damaged file is a ``ValueError`` naming it, never a
``RecursionError``, a ``MemoryError``, a hang on a FIFO, or a tree nested deeper than the code
that walks it can follow. Torch-free.

>>> loads(b'{"a": [1, 2]}', "x.json")
{'a': [1, 2]}
>>> loads(b"[" * 100_000 + b"]" * 100_000, "x.json")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: x.json nests its JSON more than 100 levels deep...
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

__all__ = ["loads", "read", "MAX_BYTES", "MAX_DEPTH"]

MAX_BYTES = 100_000_000  # as the safetensors header's limit; a 100,000-tensor manifest is ~20 MB
MAX_DEPTH = 100  # savegame's own files nest < 20 levels; the codec refuses states that would pass this


def _too_deep(where: str) -> ValueError:
    return ValueError(f"{where} nests its JSON more than {MAX_DEPTH} levels deep, which no file savegame "
                      "writes does; the file is damaged or was not written by savegame")


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        for child in node.values() if type(node) is dict else node:
            if type(child) in (dict, list):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def loads(data: bytes | str, where: str) -> Any:
    """``json.loads(data)``; ``ValueError`` naming ``where`` for invalid or too deeply nested JSON."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise _too_deep(where) from None
    if type(value) in (dict, list) and _deeper_than(value, MAX_DEPTH):
        raise _too_deep(where)
    return value


def read(path: str | os.PathLike, *, limit: int = MAX_BYTES) -> Any:
    """The JSON in the regular file ``path`` (of at most ``limit`` bytes), as :func:`loads` reads
    it; ``OSError`` if it cannot be read (``FileNotFoundError`` if missing)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path} is not a regular file (a FIFO, a device or a folder); savegame reads "
                             "its JSON files only from regular files")
        if info.st_size > limit:
            raise ValueError(f"{path} has {info.st_size:,} bytes; savegame's JSON files hold at most "
                             f"{limit:,}. The file is damaged or was not written by savegame")
        data = f.read(limit + 1)
    if len(data) > limit:  # it grew while we read it
        raise ValueError(f"{path} has more than {limit:,} bytes; savegame's JSON files hold at most {limit:,}")
    return loads(data, str(path))
