"""One writing process per run folder.

The lock is a POSIX record lock (``fcntl.lockf``) on ``<run>/LOCK``: the kernel drops it when the
holder dies, even by SIGKILL, so a crashed run never blocks its own rerun. Unlike ``flock``, it is
not shared with forked children, so DataLoader workers that outlive their parent for a moment do
not keep the folder locked. POSIX locks do not exclude the same process, so a registry of the
folders this process holds covers that case. The file also holds the holder's pid and host, only
to write a helpful message: who holds it, or whose stale lock we take over.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> lock = RunLock(d / "LOCK")
>>> lock.acquire()
>>> lock.release()
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from .errors import RunFolderGoneError, RunLockedError
from .messages import warn

_HELD_HERE: set[str] = set()  # lock files this process holds (POSIX locks never conflict within one)


class RunLock:
    """An exclusive, crash-safe lock on a run folder; see the module docstring."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`RunLockedError` naming the live holder."""
        if self._fd is not None:
            return
        key = os.path.realpath(self.path)
        if key in _HELD_HERE:
            raise RunLockedError(
                f"run folder {self.path.parent} is already open in this process (pid {os.getpid()}); "
                "finish() the other Run (or leave its `with` block) before opening it again."
            )
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        taken, holder = _take(fd)
        if not taken:
            holder = _describe(holder)
            os.close(fd)
            raise RunLockedError(
                f"run folder {self.path.parent} is in use by {holder}. Only one process may write "
                "to a run folder: wait for it to finish, stop it, or use another folder."
            ) from None
        previous = _read_holder(fd)
        if previous and previous.get("pid") != os.getpid():
            # The kernel released the old lock, so its owner is gone: this is a stale lock.
            warn(
                f"taking over the stale lock {self.path} left by {_describe(previous)}, "
                "which is no longer running",
            )
        holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode()
        # written over the old words, then cut to length: a reader never finds the file empty
        # because of us. No fsync: the kernel's lock is the lock, and these words only name its
        # holder to other processes, which read them from the page cache (after a power cut the
        # holder is gone anyway)
        os.pwrite(fd, holder, 0)
        os.ftruncate(fd, len(holder))
        self._fd = fd
        self._key = key
        _HELD_HERE.add(key)

    def release(self) -> None:
        """Release the lock; the LOCK file is emptied so the next run sees no stale holder."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        _HELD_HERE.discard(self._key)
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing drops the lock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def ensure_held(self, lost: str) -> None:
        """Raise :class:`RunFolderGoneError` (its message ending with ``lost``) when the LOCK file
        we hold is no longer at its path: the run folder was removed or replaced under us. Writing
        on would recreate a folder without our lock, where another run may be starting."""
        if self._fd is None:
            return
        ours = os.fstat(self._fd)
        try:
            there = os.stat(self.path)
        except FileNotFoundError:
            there = None
        if there is None or (there.st_dev, there.st_ino) != (ours.st_dev, ours.st_ino):
            raise RunFolderGoneError(
                f"the run folder {self.path.parent} was {'removed' if there is None else 'replaced'} while this "
                f"run wrote to it, and savegame does not recreate it (its lock went with it): {lost}."
            )


# How long a process that finds the folder locked waits for the holder's words: the holder
# writes them just after it takes the lock (and empties the file just before it lets go).
_NAMING_SECONDS = 0.2


def _take(fd: int) -> tuple[bool, dict | None]:
    """Take the kernel's lock on ``fd``: ``(True, None)``, or ``(False, holder)`` once it is held
    by a process that has written its name (``holder`` None after :data:`_NAMING_SECONDS`
    without one). A holder caught between its lock and its words, or between emptying the file
    and letting go, is waited for, so that a RunLockedError names the holder.
    """
    deadline = time.monotonic() + _NAMING_SECONDS
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True, None
        except OSError:
            holder = _read_holder(fd)
            if holder or time.monotonic() > deadline:
                return False, holder
        time.sleep(0.002)


def _read_holder(fd: int) -> dict | None:
    raw = os.pread(fd, 4096, 0)
    if not raw.strip():
        return None
    try:
        # the first JSON value: a longer stale record may trail the holder's words for a moment
        found = json.JSONDecoder().raw_decode(raw.decode())[0]
    except ValueError:
        found = None
    return found if isinstance(found, dict) else {"pid": raw[:40].decode(errors="replace")}


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another process"
    return f"pid {holder.get('pid')} on host {holder.get('host', '?')}"
