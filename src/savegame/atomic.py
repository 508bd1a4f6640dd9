"""The one way savegame replaces a small file: a temp file beside it, fsync, rename, fsync the
folder. A reader (``savegame ls``, a browser, TensorBoard) sees the old file or the new one, never
half of either, and a crash keeps one of them.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "run.json"
>>> replace_file(path, '{"status": "running"}')
>>> path.read_text()
'{"status": "running"}'
"""

from __future__ import annotations

import os
from pathlib import Path


def replace_file(path: str | os.PathLike, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8) atomically and durably."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def fsync_folder(path: str | os.PathLike) -> None:
    """Make a rename or a new file in the folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
