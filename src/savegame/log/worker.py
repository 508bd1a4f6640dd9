"""The writer thread: turns what the training thread recorded into event-file records.

The training thread only appends tuples to a ``deque`` (thread-safe, ~50 ns, never blocks until a
large backlog builds up). This thread wakes a few times a second, drains the backlog, merges the
scalars of one step into one record (one wall time and step for all of them: fewer bytes and less
work), builds everything else with tensorboard's protos, and hands complete records to the OS, so
a SIGKILL loses at most the last fraction of a second, and a torn record is only ever the last one.

>>> import tempfile, pathlib
>>> worker = LogWorker(pathlib.Path(tempfile.mkdtemp()), flush_secs=120)
>>> worker.queue.append((None, "loss", 0.5, 1, 100.0))
>>> worker.flush()
>>> sum(worker.offsets().values()) > 0
True
>>> worker.stop()
"""

from __future__ import annotations

import struct
import threading
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tensorboard.compat.proto import event_pb2, summary_pb2

from .eventfile import EventFile
from .host import OnDevice
from .records import float32_bytes, frame, scalar_record, scalar_value_prefix

_F32 = struct.Struct("<f")

# Seconds between wake-ups: the bound on what a SIGKILL can lose when flush_secs is larger.
WAKE_SECS = 0.25


@dataclass
class Job:
    """Anything but a plain scalar: ``build()`` runs on this thread and returns the events (or one
    Summary) to write, or nothing for jobs that only write side files (embeddings)."""

    file_key: str | None
    step: int | None
    walltime: float
    build: Callable[[], Any]
    what: str  # "add_image('samples', step 3)", for error messages


@dataclass
class _Flush:
    fsync: bool
    done: threading.Event = field(default_factory=threading.Event)


_STOP = object()


class LogWorker:
    """Owns the event files of one writer: the main one and one per ``add_scalars`` sub-folder."""

    def __init__(self, root: Path, *, flush_secs: float, filename_suffix: str = ""):
        self.root = root
        self.queue: deque = deque()
        self.error: str | None = None  # the first failure, reported on the caller's next call
        self._flush_secs = flush_secs
        self._suffix = filename_suffix
        self._files: dict[str, EventFile] = {}
        self._prefixes: dict[str, bytes] = {}
        self._aggregates: dict[str, list[float]] = {}
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"savegame-log:{root}", daemon=True)
        self._thread.start()

    # -- called from the training thread ------------------------------------------------------

    def flush(self, fsync: bool = False, timeout: float | None = None) -> None:
        """Return once everything queued before this call is in the files (and fsynced)."""
        marker = _Flush(fsync)
        self.queue.append(marker)
        self._wake.set()
        while not marker.done.wait(1.0 if timeout is None else timeout):
            if not self._thread.is_alive() or timeout is not None:
                raise RuntimeError(f"the savegame log thread for {self.root} stopped; "
                                   f"{self.error or 'no error was recorded'}")

    def offsets(self) -> dict[str, int]:
        """``{event file path relative to root: committed size}``; call right after ``flush``."""
        return {f.path.relative_to(self.root).as_posix(): f.size for f in list(self._files.values())}

    def stop(self) -> None:
        self.queue.append(_STOP)
        self._wake.set()
        self._thread.join()

    def wake(self) -> None:
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the thread ---------------------------------------------------------------------------

    def _loop(self) -> None:
        queue = self.queue
        while True:
            self._wake.wait(WAKE_SECS)
            self._wake.clear()
            while queue:
                item = self._drain()
                if item is _STOP:
                    for f in self._files.values():
                        f.close()
                    return
                if item is not None:  # a flush marker
                    for f in self._files.values():
                        f.flush(item.fsync)
                    item.done.set()
            for f in self._files.values():
                f.flush()

    def _drain(self) -> Any:
        """Write records for queued items up to a control item (flush/stop), which is returned."""
        queue = self.queue
        pending: dict[str | None, list[bytes]] = {}
        # the scalars being merged into one record: same file, same step, consecutive
        group: list[bytes] = []
        group_file, group_step, group_wall = None, None, 0.0
        prefixes, pack = self._prefixes, _F32.pack
        control = None
        try:
            while queue:
                item = queue.popleft()
                if type(item) is tuple:
                    file_key, tag, value, step, walltime = item
                    if type(value) is OnDevice:
                        value = value.resolve().item()
                    prefix = prefixes.get(tag)
                    if prefix is None:
                        prefix = prefixes[tag] = scalar_value_prefix(tag)
                    if step != group_step or file_key != group_file or not group:
                        if group:
                            pending.setdefault(group_file, []).append(
                                scalar_record(group_wall, group_step, group))
                        group, group_file, group_step, group_wall = [], file_key, step, walltime
                    try:
                        group.append(prefix + pack(value))
                    except OverflowError:  # beyond float32: ±inf, as protobuf stores it
                        group.append(prefix + float32_bytes(value))
                    continue
                if group:
                    pending.setdefault(group_file, []).append(scalar_record(group_wall, group_step, group))
                    group = []
                if type(item) is Job:
                    self._run_job(item, pending)
                else:
                    control = item
                    break
            if group:
                pending.setdefault(group_file, []).append(scalar_record(group_wall, group_step, group))
            for file_key, records in pending.items():
                self._file(file_key).write(records)
        except Exception as error:  # disk full, permissions: keep the thread, report the error
            self._fail(f"writing to {self.root} failed", error)
        return control

    def _run_job(self, job: Job, pending: dict[str | None, list[bytes]]) -> None:
        try:
            built = job.build()
        except Exception as error:
            self._fail(f"{job.what} failed on the log thread", error)
            return
        if built is None:
            return
        events = [event_pb2.Event(summary=built)] if isinstance(built, summary_pb2.Summary) else built
        out = pending.setdefault(job.file_key, [])
        for event in events:
            if not event.wall_time:
                event.wall_time = job.walltime
            if job.step is not None:
                event.step = job.step
            out.append(frame(event.SerializeToString()))

    def _file(self, key: str | None) -> EventFile:
        f = self._files.get(key or "")
        if f is None:
            f = EventFile.create(self.root / key if key else self.root, self._suffix)
            self._files[key or ""] = f
        return f

    def _fail(self, what: str, error: Exception) -> None:
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        if self.error is None:
            self.error = f"{what}: {detail}"
