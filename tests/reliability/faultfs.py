"""A fault-injecting file layer: every file operation under one folder is an *op*, which can be
recorded, made to fail with an errno, or made to SIGKILL the process just before it happens.

It wraps the ``os`` functions savegame's writes go through (``os.open`` for writing, ``os.write``,
``os.fsync``, ``os.rename``, ``os.replace``, ``os.link``, ``os.unlink``, ``os.rmdir``,
``os.mkdir``, ``os.ftruncate``) and ``open``/``io.open`` for writing (``Path.write_text`` goes
through it), for every thread of the process (a background save's included). ``shutil.rmtree``
deletes through ``os.unlink``/``os.rmdir`` with a ``dir_fd``, which is resolved through
``/proc/self/fd``. An op outside ``root`` is not counted and never fails.

>>> import os, tempfile, errno
>>> from pathlib import Path
>>> root = Path(tempfile.mkdtemp())
>>> with FaultyFiles(root) as ops:
...     (root / "a.txt").write_text("x")
...     os.rename(root / "a.txt", root / "b.txt")
1
>>> [(op.kind, op.path) for op in ops.trace]
[('create', 'a.txt'), ('write', 'a.txt'), ('rename', 'a.txt')]
>>> with FaultyFiles(root, fault=Fault("rename", errno.ENOSPC)):
...     os.rename(root / "b.txt", root / "c.txt")
Traceback (most recent call last):
OSError: [Errno 28] No space left on device (injected at rename #1 of b.txt): ...
"""

from __future__ import annotations

import builtins
import errno as errno_codes
import io
import os
import re
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

KINDS = ("create", "write", "fsync", "rename", "link", "unlink", "rmdir", "mkdir", "truncate")
KILL = -9  # Fault.errno: SIGKILL the process instead of raising


@dataclass(frozen=True)
class Op:
    """One operation: its kind, its path relative to the root (the source of a rename or link),
    its number among the ops of its kind (from 1), and the thread that made it."""

    kind: str
    path: str
    nth: int
    thread: str


@dataclass
class Fault:
    """What to do to which op: the ``nth`` op (from 1) of ``kind`` whose path matches the regular
    expression ``where`` and whose thread's name matches ``thread`` (``re.search``; empty: any).
    ``errno`` is an ``errno`` code to raise, or :data:`KILL`. ``sticky``: also every later
    matching op (a full disk stays full)."""

    kind: str
    errno: int
    nth: int = 1
    where: str = ""
    thread: str = ""
    sticky: bool = False
    seen: int = 0  # how many ops matched kind and where so far
    hits: int = 0  # how many of them it damaged

    def hit(self, kind: str, path: str, thread: str) -> bool:
        """Counts a matching op; True when this one is to be damaged."""
        if kind != self.kind or not re.search(self.where, path) or not re.search(self.thread, thread):
            return False
        self.seen += 1
        if self.seen == self.nth or (self.sticky and self.seen > self.nth):
            self.hits += 1
            return True
        return False


class FaultyFiles:
    """While entered, counts (``trace``) and, with ``fault``, damages the ops under ``root``."""

    def __init__(self, root: str | Path, fault: Fault | None = None, *, on_op: Callable[[Op], None] | None = None,
                 keep_trace: bool = True) -> None:
        self.root = os.path.realpath(root)
        self.fault = fault
        self.trace: list[Op] = []
        self._counts: dict[str, int] = {}
        self._keep_trace = keep_trace
        self._on_op = on_op
        self._lock = threading.Lock()
        self._saved: dict[tuple[Any, str], Any] = {}

    # -- which ops are ours ---------------------------------------------------------------
    def _relative(self, path: Any, dir_fd: int | None = None) -> str | None:
        try:
            if isinstance(path, int):
                full = os.readlink(f"/proc/self/fd/{path}")
            else:
                full = os.fsdecode(path)
                if dir_fd is not None and not os.path.isabs(full):
                    full = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), full)
                full = os.path.abspath(full)
        except (OSError, TypeError, ValueError):
            return None
        if full == self.root or full.startswith(self.root + os.sep):
            return os.path.relpath(full, self.root)
        return None

    def _op(self, kind: str, path: Any, dir_fd: int | None = None) -> None:
        relative = self._relative(path, dir_fd)
        if relative is None:
            return
        fault = self.fault
        with self._lock:
            nth = self._counts[kind] = self._counts.get(kind, 0) + 1
            op = Op(kind, relative, nth, threading.current_thread().name)
            if self._keep_trace:
                self.trace.append(op)
            hit = fault is not None and fault.hit(kind, relative, op.thread)
        if self._on_op is not None:
            self._on_op(op)
        if hit:
            if fault.errno == KILL:
                os.kill(os.getpid(), signal.SIGKILL)
            raise OSError(fault.errno, f"{os.strerror(fault.errno)} (injected at {kind} #{nth} of {relative})",
                          os.path.join(self.root, relative))

    # -- the wrappers ---------------------------------------------------------------------
    def _patch(self, module: Any, name: str, wrapper: Callable[..., Any]) -> None:
        self._saved[(module, name)] = getattr(module, name)
        setattr(module, name, wrapper)

    def __enter__(self) -> "FaultyFiles":
        real = {name: getattr(os, name) for name in ("open", "write", "fsync", "rename", "replace", "link",
                                                     "unlink", "remove", "rmdir", "mkdir", "ftruncate")}
        real_open = builtins.open
        writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        op = self._op

        def os_open(path, flags, mode=0o777, *, dir_fd=None):
            if flags & writes:
                op("create", path, dir_fd)
            return real["open"](path, flags, mode, dir_fd=dir_fd)

        def os_write(fd, data):
            op("write", fd)
            return real["write"](fd, data)

        def os_fsync(fd):
            op("fsync", fd.fileno() if hasattr(fd, "fileno") else fd)
            return real["fsync"](fd)

        def renamer(name):
            def rename(src, dst, *, src_dir_fd=None, dst_dir_fd=None):
                op("rename", src, src_dir_fd)
                return real[name](src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
            return rename

        def os_link(src, dst, *, src_dir_fd=None, dst_dir_fd=None, follow_symlinks=True):
            op("link", dst, dst_dir_fd)
            return real["link"](src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd,
                                follow_symlinks=follow_symlinks)

        def remover(name):
            def unlink(path, *, dir_fd=None):
                op("unlink", path, dir_fd)
                return real[name](path, dir_fd=dir_fd)
            return unlink

        def os_rmdir(path, *, dir_fd=None):
            op("rmdir", path, dir_fd)
            return real["rmdir"](path, dir_fd=dir_fd)

        def os_mkdir(path, mode=0o777, *, dir_fd=None):
            op("mkdir", path, dir_fd)
            return real["mkdir"](path, mode, dir_fd=dir_fd)

        def os_ftruncate(fd, length):
            op("truncate", fd)
            return real["ftruncate"](fd, length)

        def open_file(file, mode="r", *args, **kwargs):
            writing = any(c in mode for c in "wax+") and not isinstance(file, int)
            if writing:
                op("create", file)
            handle = real_open(file, mode, *args, **kwargs)
            return _Watched(handle, op) if writing and self._relative(file) is not None else handle

        for name, wrapper in (("open", os_open), ("write", os_write), ("fsync", os_fsync),
                              ("rename", renamer("rename")), ("replace", renamer("replace")), ("link", os_link),
                              ("unlink", remover("unlink")), ("remove", remover("remove")), ("rmdir", os_rmdir),
                              ("mkdir", os_mkdir), ("ftruncate", os_ftruncate)):
            self._patch(os, name, wrapper)
        self._patch(builtins, "open", open_file)
        self._patch(io, "open", open_file)
        return self

    def __exit__(self, *exc: Any) -> None:
        for (module, name), original in self._saved.items():
            setattr(module, name, original)
        self._saved.clear()


class _Watched:
    """A file opened for writing: each ``write`` is an op (the bytes reach the kernel at a flush,
    but a full disk is a full disk whichever call hears of it first)."""

    def __init__(self, handle: Any, op: Callable[..., None]) -> None:
        self._handle, self._op = handle, op

    def write(self, data: Any) -> int:
        self._op("write", self._handle.fileno())
        return self._handle.write(data)

    def __enter__(self) -> "_Watched":
        self._handle.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._handle.__exit__(*exc)

    def __iter__(self):
        return iter(self._handle)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


ERRNOS = {"ENOSPC": errno_codes.ENOSPC, "EIO": errno_codes.EIO}
