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
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator


def replace_file(path: str | os.PathLike, data: bytes | str, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8) atomically and durably.
    ``durable=False`` skips the fsyncs: a reader still never sees half a file, but a power cut may
    leave the old one (or, on some file systems, an empty one); for files rebuilt from others."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with replacing(path, durable=durable) as temp:
        with open(temp, "wb") as file:
            file.write(data)
            if durable:
                file.flush()
                os.fsync(file.fileno())


@contextmanager
def replacing(path: str | os.PathLike, *, durable: bool = True) -> Iterator[Path]:
    """Write the new file to the path this yields (and fsync it); when the block ends, it replaces
    ``path`` and the rename is made durable. If the block raises, ``path`` is untouched and the
    temp file is gone. For files written by a writer of their own (an exported safetensors file).

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.bin"
    >>> with replacing(path) as temp:
    ...     _ = temp.write_bytes(b"weights")
    >>> path.read_bytes(), sorted(p.name for p in path.parent.iterdir())
    (b'weights', ['model.bin'])
    """
    path = Path(path)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield temp
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_folder(path.parent)


def fsync_folder(path: str | os.PathLike) -> None:
    """Make a rename or a new file in the folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_files(paths: Iterable[str | os.PathLike]) -> None:
    """Make the bytes written so far to each file durable (any descriptor of a file flushes all of
    its data): what an asynchronous save does for the run's event files before it commits.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "f")
    >>> _ = open(path, "w").write("x"); fsync_files([path])
    """
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def rename_aside(path: str | os.PathLike, label: str) -> Path:
    """Rename ``path`` to ``<name>.<label>`` (``.<label>-2`` ... if taken), keeping it whole for
    inspection under a name savegame ignores; returns the new path.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.json"
    >>> _ = path.write_text("{"); rename_aside(path, "damaged").name
    'run.json.damaged'
    """
    path = Path(path)
    target, n = path.with_name(f"{path.name}.{label}"), 1
    while os.path.lexists(target):
        n += 1
        target = path.with_name(f"{path.name}.{label}-{n}")
    os.rename(path, target)
    return target
