"""``savegame.SummaryWriter``: torch's ``SummaryWriter`` API, without slowing the training loop.

Swap the import and a script keeps working: the same constructor, methods, arguments and
defaults, the same TensorBoard dashboards. What changes is where the work happens. A call records
its arguments (a scalar in ~1 µs, a CUDA tensor with an asynchronous copy, never a device sync) and
returns; a background thread builds the summaries with tensorboard's own protos and writes them.

Intended differences from torch's writer:

- ``add_hparams`` without ``run_name`` puts the hyperparameters in *this* run, beside its curves
  (torch makes a sub-run per call); every scalar of the run is then a metric in the HPARAMS tab.
- A ``Run``'s writer (``run.writer``) stays closed once the run has finished: a call then raises
  :class:`~savegame.errors.WriterClosedError`. The run has released its folder (another process
  may be resuming it) and a resume moves any event file that no checkpoint recorded aside. A
  writer of your own reopens as torch's does: a call after ``close()`` starts a new event file in
  the same ``log_dir``, and the next ``close()`` closes it again.
- ``add_video`` without ``moviepy<2`` warns once per writer (a ``UserWarning`` with the
  ``pip install``) and writes nothing; torch prints a line per call and writes an empty image.
- Under ``torch.distributed`` only rank 0 writes (``rank_zero_only=True``); other ranks' calls
  return at once.
- A ``log_dir`` removed under an open writer stays removed: the log thread never recreates it, and
  reports it as any write failure (a ``RuntimeWarning`` at once, then
  :class:`~savegame.errors.LogWriteError` from the next ``flush()``, ``close()`` or ``add_*``
  that queues a job), once; what is logged meanwhile is lost. torch's ``add_embedding`` makes the
  folder again, and its other calls write on into the deleted files without a word.
- ``flush()`` returns when everything logged before it is in the files. Data reaches the OS a few
  times a second, so a SIGKILL loses at most a fraction of a second (``flush_secs`` bounds the
  time between fsyncs); ``max_queue`` is accepted and unused: the caller never waits for a queue.

>>> import tempfile, torch
>>> from savegame import SummaryWriter
>>> with SummaryWriter(tempfile.mkdtemp()) as writer:
...     for step in range(3):
...         writer.add_scalar("loss/train", 1.0 / (step + 1), step)
...     writer.add_histogram("weights", torch.randn(100), 2)
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from ..errors import LogWriteError, WriterClosedError
from . import lifecycle
from ._writer_base import _CLOSED, _OPEN, _SILENT, _summary, _when_open
from .checks import check_step, check_subrun, check_tag, check_walltime
from .host import resolve, scalar_on_host, tensor_on_host
from .worker import Job, LogWorker
from .writer_kinds import SummaryKinds, _read_projector_config

# Past this many unwritten items the caller waits for the log thread (memory stays bounded).
MAX_BACKLOG = 500_000

# The media and structured kinds (histograms ... custom scalars) are inherited from SummaryKinds
# (writer_kinds.py); the writer's states and the _when_open guard live in _writer_base.py.


class _FileWriterView:
    """torch's ``FileWriter`` methods that user code reaches for: events and summaries it built
    itself go through the log thread like everything else."""

    def __init__(self, writer: SummaryWriter) -> None:
        self._writer = writer

    def get_logdir(self) -> str:
        return self._writer.log_dir

    def add_summary(self, summary: Any, global_step: int | None = None, walltime: float | None = None) -> None:
        summary = type(summary).FromString(summary.SerializeToString())  # a private copy
        self._writer._job("add_summary()", global_step, walltime, build=lambda: summary)

    def add_event(self, event: Any, step: int | None = None, walltime: float | None = None) -> None:
        event = type(event).FromString(event.SerializeToString())
        self._writer._job("add_event()", step, walltime, build=lambda: [event])

    def flush(self) -> None:
        self._writer.flush()


class SummaryWriter(SummaryKinds):
    """Writes TensorBoard event files for one run folder; a drop-in for torch's ``SummaryWriter``.

    Args:
        log_dir: the run folder (default ``runs/<date>_<host><comment>``, as torch's).
        comment: appended to the default ``log_dir``.
        purge_step: as torch's (a START event that TensorBoard's legacy loader honours). A ``Run``
            does better: it cuts the files back to the checkpoint it resumes from.
        max_queue: accepted for compatibility; the caller never waits for a small queue.
        flush_secs: the longest time between fsyncs of the event files.
        filename_suffix: appended to every event file name.
        rank_zero_only: under ``torch.distributed``, only rank 0 writes.
    """

    def __init__(self, log_dir: str | os.PathLike | None = None, comment: str = "",
                 purge_step: int | None = None, max_queue: int = 10, flush_secs: float = 120,
                 filename_suffix: str = "", *, rank_zero_only: bool = True) -> None:
        if not log_dir:
            stamp = datetime.now().strftime("%b%d_%H-%M-%S")
            log_dir = os.path.join("runs", f"{stamp}_{socket.gethostname()}{comment}")
        self.log_dir = str(log_dir)
        self.purge_step = purge_step
        self.max_queue = max_queue
        self.flush_secs = flush_secs
        self.filename_suffix = filename_suffix
        self._state = _OPEN
        self._worker: LogWorker | None = None
        self._run_owned = False
        self._hparams_logged = False  # the first add_hparams goes into this run, later ones beside
        self._warned: set[str] = set()  # one-time warnings already given (a missing moviepy)
        self._on_scalar: Callable[[str, Any, int | None], None] | None = None  # a Run's hooks hear add_scalar
        if rank_zero_only and _rank() != 0:
            self._state = _SILENT
            return
        self._start(handle_sigterm=True)

    @classmethod
    def _for_run(cls, log_dir: Path, *, restart_step: int, hparams_logged: bool,
                 on_scalar: Callable[[str, Any, int | None], None] | None = None) -> "SummaryWriter":
        """A ``Run``'s writer. Every file it makes starts with a ``SessionLog.START`` at
        ``restart_step`` (see ``LogWorker``). The Run flushes it at each checkpoint and handles
        SIGTERM itself (saving flushes), so this writer installs no handler. ``on_scalar(tag,
        host value, step)`` hears every ``add_scalar`` (the run's hooks: the live doctor)."""
        writer = cls.__new__(cls)
        writer.log_dir, writer.purge_step, writer.max_queue = str(log_dir), None, 10
        writer.flush_secs, writer.filename_suffix = 120, ""
        writer._state, writer._worker = _OPEN, None
        writer._run_owned, writer._hparams_logged, writer._warned = True, hparams_logged, set()
        writer._on_scalar = on_scalar
        if _rank() != 0:
            writer._state = _SILENT
        else:
            writer._start(handle_sigterm=False, restart_step=restart_step)
        return writer

    def _start(self, *, handle_sigterm: bool, restart_step: int | None = None) -> None:
        """Make the folder and its event file (as torch's constructor does) and the log thread."""
        root = Path(self.log_dir)
        root.mkdir(parents=True, exist_ok=True)
        self._worker = LogWorker(root, flush_secs=self.flush_secs, filename_suffix=self.filename_suffix,
                                 restart_step=restart_step)
        self._queue = self._worker.queue
        self._file_writer = _FileWriterView(self)
        self._projector = _read_projector_config(root)  # grown by each add_embedding
        self._state = _OPEN
        lifecycle.track(self)
        if handle_sigterm:
            lifecycle.install_sigterm_flush()
        if self.purge_step is not None:
            from tensorboard.compat.proto.event_pb2 import Event, SessionLog
            step = check_step("SummaryWriter", self.purge_step)
            self._job("purge_step", None, None, build=lambda: [
                Event(step=step, file_version="brain.Event:2"),
                Event(step=step, session_log=SessionLog(status=SessionLog.START))])
            self.purge_step = None

    def get_logdir(self) -> str:
        return self.log_dir

    # -- scalars: the hot path ---------------------------------------------------------------
    def add_scalar(self, tag: str, scalar_value: Any, global_step: int | None = None,
                   walltime: float | None = None, new_style: bool = False,
                   double_precision: bool = False) -> None:
        """Log one value. A Python float costs about a microsecond; a CUDA tensor is copied to the
        host asynchronously. NaN and inf are written as they are."""
        if self._state is not _OPEN and not self._reopen("add_scalar"):
            return
        if type(tag) is not str:
            check_tag("add_scalar", tag)
        if type(global_step) is not int:
            global_step = check_step("add_scalar", global_step)
        if new_style or double_precision:
            value = tensor_on_host(scalar_value)
            self._job(f"add_scalar({tag!r})", global_step, walltime, tag=tag, build=
                      lambda: _summary().scalar(tag, resolve(value), new_style=new_style,
                                                double_precision=double_precision))
            if self._on_scalar is not None:
                self._on_scalar(tag, value, global_step)
            return
        if type(scalar_value) is not float:
            scalar_value = scalar_on_host(scalar_value, tag)
        queue = self._queue
        queue.append((None, tag, scalar_value, global_step,
                      time.time() if walltime is None else check_walltime("add_scalar", walltime)))
        if len(queue) > MAX_BACKLOG:
            self._wait_for_backlog()
        if self._on_scalar is not None:
            self._on_scalar(tag, scalar_value, global_step)

    def add_scalars(self, main_tag: str, tag_scalar_dict: Mapping[str, Any],
                    global_step: int | None = None, walltime: float | None = None) -> None:
        """Several curves in one chart: each ``tag`` goes to the sub-run ``<main_tag>_<tag>``."""
        if self._state is not _OPEN and not self._reopen("add_scalars"):
            return
        check_tag("add_scalars", main_tag)
        step = check_step("add_scalars", global_step)
        walltime = time.time() if walltime is None else check_walltime("add_scalars", walltime)
        prefix = main_tag.replace("/", "_") + "_"
        for tag, value in tag_scalar_dict.items():
            check_subrun("add_scalars", prefix + str(tag))
            self._queue.append((prefix + str(tag), main_tag, scalar_on_host(value, main_tag), step, walltime))

    @_when_open
    def add_tensor(self, tag: str, tensor: Any, global_step: int | None = None,
                   walltime: float | None = None) -> None:
        value = tensor_on_host(tensor)
        self._job(f"add_tensor({tag!r})", global_step, walltime, tag=tag, build=
                  lambda: _summary().tensor_proto(tag, resolve(value)))

    # -- file_writer: for code written against torch's internals ---------------------------
    @property
    def file_writer(self) -> "_FileWriterView | None":
        """For code written against torch's internals (``writer.file_writer.add_summary(...)``);
        None after ``close()``, as torch's."""
        if self._state is _CLOSED:
            return None
        view = getattr(self, "_file_writer", None)
        if view is None:  # a silent rank never started: its view's calls return at once
            view = self._file_writer = _FileWriterView(self)
        return view

    def _get_file_writer(self) -> "_FileWriterView":
        """torch's accessor: reopens the writer after ``close()``, as torch's does."""
        if self._state is not _OPEN:
            self._reopen("_get_file_writer")
        return self.file_writer

    # -- lifetime ----------------------------------------------------------------------------
    def flush(self) -> None:
        """Return once everything logged so far is in the event files."""
        if self._state is _OPEN:
            self._worker.flush()
            self._raise_worker_error()

    def close(self) -> None:
        """Write everything, close the files and stop the log thread. A second close is a no-op."""
        if self._state is not _OPEN:
            return
        self._state = _CLOSED
        lifecycle.untrack(self)
        try:
            self._worker.flush(fsync=True)
        finally:
            self._worker.stop()
        self._raise_worker_error()

    def __enter__(self) -> "SummaryWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------
    def _job(self, what: str, step: Any, walltime: Any, *, build: Callable[[], Any],
             tag: Any = None, file_key: str | None = None) -> None:
        """Queue ``build`` for the log thread; a step of None leaves the event without one."""
        method = what.split("(")[0]
        if self._state is not _OPEN and not self._reopen(method):
            return None
        self._raise_worker_error()
        if tag is not None:
            check_tag(method, tag)
        if step is not None:
            step = check_step(method, step)
        when = time.time() if walltime is None else check_walltime(method, walltime)
        self._queue.append(Job(file_key, step, when, build, what if step is None else f"{what} at step {step}"))

    def _reopen(self, method: str) -> bool:
        """A call after ``close()``: reopen as torch's writer does (a new event file in the same
        folder), and return True; False on a silent rank. A finished ``Run``'s writer raises."""
        if self._state is _SILENT:
            return False
        if self._run_owned:
            self._not_open(method)
        self._start(handle_sigterm=True)  # only writers of one's own reopen; they flush on SIGTERM
        return True

    def _not_open(self, method: str) -> None:
        """Return on a silent rank; raise for a closed writer that must not reopen (a Run's)."""
        if self._state is _SILENT:
            return None
        raise WriterClosedError(
            f"SummaryWriter({self.log_dir!r}).{method}() was called after its Run finished. A Run's "
            "writer does not reopen (torch's would): the run has released its folder, which another "
            "process may be resuming, and a resume would move a file written now aside. Log before "
            "the run ends, or open a SummaryWriter of your own on another folder.")

    def _raise_worker_error(self) -> None:
        worker = self._worker
        if worker is not None and worker.error is not None:
            message, worker.error = worker.error, None
            raise LogWriteError(f"SummaryWriter({self.log_dir!r}): {message}")

    def _wait_for_backlog(self) -> None:
        self._worker.wake()
        while len(self._queue) > MAX_BACKLOG // 2:
            if not self._worker.alive:
                self._raise_worker_error()
                raise LogWriteError(f"SummaryWriter({self.log_dir!r}): the log thread stopped; "
                                    "nothing more can be written")
            time.sleep(0.001)

    def _add_host_scalar(self, tag: str, value: Any, step: int) -> None:
        """``add_scalar`` for a value already made safe by ``scalar_on_host`` (``run.log``)."""
        check_tag("run.log", tag)
        self._queue.append((None, tag, value, check_step("run.log", step), time.time()))
        if len(self._queue) > MAX_BACKLOG:
            self._wait_for_backlog()

    def _writes(self) -> bool:
        """False after close() and on a silent rank."""
        return self._state is _OPEN

    def _embedding_count(self) -> int:
        """Entries in the projector config (after a flush: of every add_embedding so far)."""
        projector = getattr(self, "_projector", None)  # a silent rank never started
        return len(projector.embeddings) if projector is not None else 0

    def _max_step(self) -> int | None:
        """The largest step written so far (after a flush: of everything logged)."""
        return self._worker.max_step if self._worker is not None else None

    def _flush_for_signal(self) -> None:
        if self._state is _OPEN:
            self._worker.flush(fsync=True, timeout=10, wake=False)

    def _orphan(self) -> None:
        """In a forked child: the log thread is the parent's; this copy stays silent."""
        self._state = _SILENT

    def _flush_for_checkpoint(self, fsync: bool = True) -> dict[str, int]:
        """Write (and fsync) everything logged so far; the committed size of each event file."""
        if self._state is not _OPEN:
            return {}
        self._worker.flush(fsync=fsync)
        return self._worker.offsets()

    def _event_files(self) -> list[Path]:
        """The event files this writer has open (its sub-runs' included)."""
        if self._state is not _OPEN or self._worker is None:
            return []
        return [self._worker.root / name for name in self._worker.offsets()]


# -- helpers ---------------------------------------------------------------------------------

def _rank() -> int:
    from ..distributed import world

    return world().rank
