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
import time
import traceback
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tensorboard.compat.proto import event_pb2, summary_pb2

from ..errors import LogWriteError
from .eventfile import EventFile, RunFolderGone, subfolder
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


class ExplicitTime(float):
    """A wall time the caller passed: merged into a record only with the very same time."""

    __slots__ = ()


class LogWorker:
    """Owns the event files of one writer: the main one and one per ``add_scalars`` sub-folder.

    Args:
        root: the run folder.
        flush_secs: the longest time between fsyncs of the files.
        filename_suffix: appended to each file name.
        restart_step: when set, every file this worker creates starts with a ``SessionLog.START``
            at this step (after a resume, so a live legacy-loader TensorBoard drops what it read
            from the dead process past the checkpoint).
    """

    def __init__(self, root: Path, *, flush_secs: float, filename_suffix: str = "",
                 restart_step: int | None = None):
        self.root = root
        self.queue: deque = deque()
        self.error: str | None = None  # the first failure, reported on the caller's next call
        self.max_step: int | None = None  # the largest step written, for a later restart marker
        self._flush_secs = flush_secs
        self._suffix = filename_suffix
        self._restart_step = restart_step
        self._files: dict[str, EventFile] = {}
        self._prefixes: dict[str, bytes] = {}
        self._root_gone = False  # reported that the run folder was removed (once)
        self._wake = threading.Event()
        # the run's own file now, on the caller, as torch's writer makes it in its constructor
        self._file(None).flush()
        self._thread = threading.Thread(target=self._loop, name=f"savegame-log:{root}", daemon=True)
        self._thread.start()

    # -- called from the training thread ------------------------------------------------------

    def flush(self, fsync: bool = False, timeout: float | None = None, wake: bool = True) -> None:
        """Return once everything queued before this call is in the files (and fsynced).

        ``wake=False`` from a signal handler: setting the wake-up event takes a lock the
        interrupted code may hold; the thread wakes by itself within ``WAKE_SECS``."""
        marker = _Flush(fsync)
        self.queue.append(marker)
        if wake:
            self._wake.set()
        waited = 0.0
        while not marker.done.wait(0.5):
            waited += 0.5
            if not self._thread.is_alive() or (timeout is not None and waited >= timeout):
                raise LogWriteError(f"the savegame log thread for {self.root} "
                                    f"{'stopped' if not self._thread.is_alive() else 'did not answer'}; "
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
        last_fsync = time.monotonic()
        while True:
            self._wake.wait(WAKE_SECS)
            self._wake.clear()
            while queue:
                item = self._drain()
                if item is _STOP:
                    self._each_file("closing", EventFile.close)
                    return
                if item is not None:  # a flush marker
                    self._each_file("flushing", lambda f: f.flush(item.fsync))
                    self._check_root()
                    item.done.set()
            fsync = time.monotonic() - last_fsync >= self._flush_secs
            self._each_file("flushing", lambda f: f.flush(fsync))
            if fsync:
                last_fsync = time.monotonic()

    def _check_root(self) -> None:
        """At each flush: report that the run folder was removed (the open files still take
        writes, which are lost; nothing here recreates the folder)."""
        if not self._root_gone and not self.root.is_dir():
            self._fail("the log files are gone", RunFolderGone(self.root))

    def _each_file(self, what: str, action: Callable[[EventFile], None]) -> None:
        for f in list(self._files.values()):
            try:
                action(f)
            except Exception as error:  # disk full, file removed: report, keep the thread
                self._fail(f"{what} {f.path} failed", error)

    def _drain(self) -> Any:
        """Write records for queued items up to a control item (flush/stop), which is returned.
        An item that fails is skipped and reported; the others are written."""
        queue = self.queue
        pending: dict[str | None, list[bytes]] = {}
        # the scalars being merged into one record: same file, same step, consecutive
        group: list[bytes] = []
        group_file, group_step, group_wall = None, None, 0.0
        prefixes, pack = self._prefixes, _F32.pack
        max_step = self.max_step if self.max_step is not None else -(1 << 63)
        control = None
        while queue:
            item = queue.popleft()
            if type(item) is tuple:
                try:
                    file_key, tag, value, step, walltime = item
                    if type(value) is OnDevice:
                        value = value.resolve().item()
                    prefix = prefixes.get(tag)
                    if prefix is None:
                        prefix = prefixes[tag] = scalar_value_prefix(tag)
                    try:
                        entry = prefix + pack(value)
                    except OverflowError:  # beyond float32: ±inf, as protobuf stores it
                        entry = prefix + float32_bytes(value)
                except Exception as error:
                    self._fail(f"a scalar for {item[1]!r} could not be encoded", error)
                    continue
                if (step != group_step or file_key != group_file or not group
                        or (walltime != group_wall and (type(walltime) is not float
                                                        or type(group_wall) is not float))):
                    if group:
                        pending.setdefault(group_file, []).append(
                            scalar_record(group_wall, group_step, group))
                    group, group_file, group_step, group_wall = [], file_key, step, walltime
                    if step > max_step:
                        max_step = step
                group.append(entry)
                continue
            if group:
                pending.setdefault(group_file, []).append(scalar_record(group_wall, group_step, group))
                group = []
            if type(item) is Job:
                self._run_job(item, pending)
                if item.step is not None and item.step > max_step:
                    max_step = item.step
            else:
                control = item
                break
        if group:
            pending.setdefault(group_file, []).append(scalar_record(group_wall, group_step, group))
        for file_key, records in pending.items():
            try:
                self._file(file_key).write(records)
            except Exception as error:  # disk full, a sub-run folder name the OS refuses
                where = f"{self.root / file_key}" if file_key else f"{self.root}"
                self._fail(f"writing {len(records)} records to {where} failed; they are lost", error)
        if max_step > -(1 << 63):
            self.max_step = max_step
        return control

    def _run_job(self, job: Job, pending: dict[str | None, list[bytes]]) -> None:
        try:
            built = job.build()
            if built is None:
                return
            events = [event_pb2.Event(summary=built)] if isinstance(built, summary_pb2.Summary) else built
            records = []
            for event in events:
                if not event.wall_time:
                    event.wall_time = job.walltime
                if job.step is not None:
                    event.step = job.step
                records.append(frame(event.SerializeToString()))
        except Exception as error:
            self._fail(f"{job.what} failed on the log thread and was skipped", error)
            return
        pending.setdefault(job.file_key, []).extend(records)

    def _file(self, key: str | None) -> EventFile:
        f = self._files.get(key or "")
        if f is None:
            # a sub-run's folder is made here; the run folder itself never is (see ``subfolder``)
            f = EventFile.create(subfolder(self.root, key) if key else self.root, self._suffix)
            if self._restart_step is not None:
                start = event_pb2.Event(wall_time=time.time(), step=self._restart_step,
                                        session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START))
                f.write([frame(start.SerializeToString())])
            self._files[key or ""] = f
        return f

    def _fail(self, what: str, error: Exception) -> None:
        if isinstance(error, RunFolderGone):  # reported once per writer, not at every later write
            if self._root_gone:
                return
            self._root_gone = True
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        if self.error is None:
            self.error = f"{what}: {detail}"
            # seen at once on stderr; raised later on the caller (flush, close, the next add_*)
            warnings.warn(f"savegame log thread for {self.root}: {self.error}", RuntimeWarning, stacklevel=1)
