"""One TensorBoard event file, appended to by the writer thread, that knows its committed size.

The committed size (every complete record handed to the OS) is what a checkpoint records, so a
resume can cut the file back to exactly what existed when the checkpoint was taken.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> f = EventFile.create(folder)
>>> f.write([b"record"]); f.flush()
>>> f.size == f.path.stat().st_size and "tfevents" in f.path.name
True
>>> f.close()
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path

from tensorboard.compat.proto import event_pb2

from ..errors import RunFolderGoneError
from .records import frame

# Our files end in ".savegame" (before the user's filename_suffix): a resume only ever cuts back or
# moves aside files this writer made, never a file some other tool put in the run folder.
MARKER = ".savegame"
_uid = itertools.count()


def is_our_event_file(path: Path) -> bool:
    return "tfevents" in path.name and MARKER in path.name


def _sortable_time(folder: Path) -> int:
    """The time field of a new file's name: now, or one past the newest event file already in
    ``folder``. TensorBoard reads a run's files in name order, and a resumed run's new file must
    come after the files it continues, even within the same second."""
    newest = 0
    for existing in folder.iterdir():
        parts = existing.name.split(".")
        if "tfevents" in parts and len(parts) > parts.index("tfevents") + 1:
            field = parts[parts.index("tfevents") + 1]
            newest = max(newest, int(field)) if field.isdigit() else newest
    return max(int(time.time()), newest + 1 if newest >= int(time.time()) else 0)


class RunFolderGone(RunFolderGoneError):
    """The run folder was removed while its writer was open; nothing recreates it."""

    def __init__(self, root: Path) -> None:
        super().__init__(f"the run folder {root} no longer exists (it was removed while its writer "
                         "was open); what is logged into it is lost, and savegame does not recreate it")


def outside_run(relative: str) -> bool:
    """Whether a sub-run folder name would lie outside its run folder (a ``..`` part, a leading
    ``/``) or holds NUL, which no file name may.

    >>> outside_run("loss_train/a"), outside_run("loss_/../../x"), outside_run("/abs")
    (False, True, True)
    """
    return "\0" in relative or relative.startswith("/") or ".." in relative.split("/")


def subfolder(root: Path, relative: str) -> Path:
    """``root / relative``, making the folders below ``root`` but never ``root`` itself: a run
    folder removed under a running writer stays removed (the log thread reports the failure)."""
    if not root.is_dir():
        raise RunFolderGone(root)
    if outside_run(relative):  # the writer's callers refused it already (log.checks.check_subrun)
        raise ValueError(f"the sub-run folder {relative!r} would lie outside {root} or holds NUL")
    folder = root
    for part in Path(relative).parts:
        folder = folder / part
        try:
            folder.mkdir(exist_ok=True)
        except FileNotFoundError:  # root went away between the check and here
            raise RunFolderGone(root) from None
    return folder


class EventFile:
    """An append-only event file. Not thread-safe: only the writer thread touches it."""

    def __init__(self, path: Path, size: int):
        self.path = path
        self.size = size  # bytes of complete records written (handed to the OS at each flush)
        self._file = open(path, "ab", buffering=1 << 20)  # noqa: SIM115 (closed by close())

    @classmethod
    def create(cls, folder: Path, filename_suffix: str = "") -> EventFile:
        """A new file named like tensorboard's own (``events.out.tfevents.<time>.<host>.<pid>.<n>``),
        starting with the ``file_version`` record every reader expects first. ``folder`` must
        exist (see ``subfolder``)."""
        name = (f"events.out.tfevents.{_sortable_time(folder):010d}.{socket.gethostname()}."
                f"{os.getpid()}.{next(_uid)}{MARKER}{filename_suffix}")
        event_file = cls(folder / name, 0)
        version = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
        event_file.write([frame(version.SerializeToString())])
        return event_file

    def write(self, records: list[bytes]) -> None:
        data = b"".join(records)
        self._file.write(data)
        self.size += len(data)

    def flush(self, fsync: bool = False) -> None:
        """Hand buffered bytes to the OS (they survive a SIGKILL); ``fsync`` also makes them
        survive a power cut."""
        self._file.flush()
        if fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()
