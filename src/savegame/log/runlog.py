"""A ``Run``'s TensorBoard side: its writer, ``run.log``, epoch statistics, and what a checkpoint
records so a resume can cut the logs back to it.

>>> import tempfile, pathlib
>>> logs = RunLog(pathlib.Path(tempfile.mkdtemp()), saved={}, step=0, resumed=False)
>>> logs.log({"loss": 0.5}, step=1, reduce=("mean",))   # returns the values as host copies
{'loss': 0.5}
>>> logs.end_of_epoch(step=1)
>>> sorted(logs.state_dict()["files"].values())[0] > 0
True
>>> logs.close(step=1, hparams_status=None)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import WriterClosedError
from .aggregate import EpochStats, check_reduce
from .host import resolve, scalar_on_host
from .resume import cut_back
from .writer import SummaryWriter


class RunLog:
    """Made by ``Run.__init__`` after it chose the checkpoint to resume from (``saved`` is that
    checkpoint's ``log`` record, ``{}`` for none); cuts the folder's logs back to it at once.
    ``owner=False`` (a torchrun job's rank other than 0): touches no file, and its writer is silent."""

    def __init__(self, run_dir: Path, *, saved: Mapping[str, Any], step: int, resumed: bool,
                 epoch_finished: bool = False, on_scalar: Callable[[str, Any, int | None], None] | None = None,
                 owner: bool = True) -> None:
        self.dir = run_dir
        self._on_scalar = on_scalar  # hears the writer's add_scalar (run.log has its own on_log)
        self._writer: SummaryWriter | None = None
        self._closed = False
        # Only the folder's owner cuts the files back (a torchrun job's other ranks log nothing).
        self._kept_files = cut_back(run_dir, dict(saved), step=step) if owner else dict(saved.get("files") or {})
        self._kept_embeddings = saved.get("embeddings", 0)
        self._max_step = saved.get("max_step")
        # The restart marker's step (see LogWorker): past everything kept, also on another x axis
        # (tokens seen), or TensorBoard's legacy loader would drop kept points.
        self._restart_step = max(step, self._max_step or 0) + 1 if resumed else 0
        self._stats = EpochStats()
        self._stats.load_state_dict(saved.get("epoch_stats", {}))
        # saved after the epoch's data ran out but before its statistics were logged
        self._stats_pending = bool(self._stats) and epoch_finished

    @property
    def has_history(self) -> bool:
        """Whether earlier processes' logs were kept (then hparams are in them already)."""
        return bool(self._kept_files)

    @property
    def writer(self) -> SummaryWriter:
        if self._writer is None:
            if self._closed:  # as a finished run's writer answers (it does not reopen)
                raise WriterClosedError(f"SummaryWriter({str(self.dir)!r}) was asked for after its Run "
                                        "finished. A Run's writer does not reopen (torch's would): "
                                        "the run has released its folder. Log before the run ends, "
                                        "or open a SummaryWriter of your own on another folder.")
            self._writer = SummaryWriter._for_run(self.dir, restart_step=self._restart_step,
                                                  hparams_logged=self.has_history, on_scalar=self._on_scalar)
        return self._writer

    def log(self, values: Mapping[str, Any], *, step: int, reduce: Any = None,
            every_step: bool = True) -> dict[str, Any]:
        """Log ``values``; returns them as host values (floats, or CUDA copies in flight) for
        other readers (the live doctor), or ``{}`` on a silent rank."""
        reducers = check_reduce(reduce) if reduce is not None else None
        writer = self.writer
        if not writer._writes():  # closed: raises; a silent rank: returns before any device copy
            writer._not_open("run.log")
            return {}
        hosts = {}
        for tag, value in values.items():
            host = hosts[tag] = scalar_on_host(value, tag)  # once, for every use (a CUDA value: one copy)
            if every_step:
                writer._add_host_scalar(tag, host, step)
            if reducers:
                writer._job(f"run.log({tag!r})", None, None, tag=tag,
                            build=lambda t=tag, h=host: self._stats.add(t, reducers, float(resolve(h))))
        return hosts

    def end_of_epoch(self, step: int) -> None:
        """Log the epoch's statistics (also the ones a dead process saved but never logged)."""
        # Statistics to log may come from the checkpoint alone: a process that resumed after the
        # epoch's last batch (saved before its end) logs nothing else, yet must log them.
        writer = self.writer if self._stats_pending or self._stats else self._writer
        self._stats_pending = False
        if writer is not None:
            writer._job("epoch statistics", step, None,
                        build=lambda: self._stats.summary() if self._stats else None)

    @property
    def stats_pending(self) -> bool:
        return self._stats_pending

    def state_dict(self, *, fsync: bool = True) -> dict[str, Any]:
        """What a resume needs to cut the logs back to this moment; flushes and fsyncs first
        (``fsync=False``: the caller fsyncs :meth:`open_files` before its checkpoint commits, as
        an asynchronous save does on its own thread)."""
        files, max_step, embeddings = dict(self._kept_files), self._max_step, self._kept_embeddings
        if self._writer is not None and not self._closed:
            files.update(self._writer._flush_for_checkpoint(fsync=fsync))
            written = self._writer._max_step()
            max_step = written if max_step is None else max_step if written is None else max(max_step, written)
            embeddings = self._writer._embedding_count()  # it read the kept ones at its start
        return {"files": files, "max_step": max_step, "embeddings": embeddings,
                "epoch_stats": self._stats.state_dict()}

    def open_files(self) -> list[Path]:
        """The event files this process writes (those a checkpoint's sizes must find on disk)."""
        if self._writer is None or self._closed:
            return []
        return self._writer._event_files()

    def close(self, *, step: int, hparams_status: str | None) -> None:
        """End the hparams session with the run's status (when it has hparams), then close."""
        if self._closed:
            return
        if hparams_status is not None:
            self.writer._job("session end", step, None, build=lambda: _session_end(hparams_status))
        self._closed = True
        if self._writer is not None:
            self._writer.close()


def _session_end(status: str) -> Any:
    """The HPARAMS tab's status column: finished, failed, or still running (preempted)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    code = {"finished": api_pb2.STATUS_SUCCESS, "stopped": api_pb2.STATUS_SUCCESS,
            "failed": api_pb2.STATUS_FAILURE}.get(
        status, api_pb2.STATUS_RUNNING)
    end = plugin_data_pb2.HParamsPluginData(
        session_end_info=plugin_data_pb2.SessionEndInfo(status=code, end_time_secs=time.time()))
    return Summary(value=[Summary.Value(tag=metadata.SESSION_END_INFO_TAG,
                                        metadata=metadata.create_summary_metadata(end))])
