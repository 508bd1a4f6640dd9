"""``Checkpointer``: a run's saves in two phases, and what happens once one has committed.

``save(state, ...)`` first takes a **snapshot** on the caller's thread (the state tree encoded, its
tensors referenced, or copied to host memory when the write happens later), then **persists** it
(write, fsync, ``COMMIT``, rename) and applies retention (the keep policy's deletions, each
folder renamed aside before it is removed), and last runs **on_committed** on the caller's
thread: the list of checkpoints and the owner's own step (``run.json``, hooks). It returns a
:class:`SaveHandle`.

By default all of it runs before ``save`` returns. With ``background=True`` the snapshot copies
the tensors into host buffers kept from one save to the next (``HostBuffers``: one host copy of
the state, allocated once; pinned, on a side stream, for CUDA tensors), and the persist and the
retention run on a thread of their own. One save is in flight at a time: the next ``save`` waits
for it first (back-pressure). The owner hears of a finished background save on its own thread,
from :meth:`collect` (which it calls at its next call, or ``wait=True`` to wait for it); a
background save that failed raises its error there, once, and never costs an earlier checkpoint
(the commit protocol leaves a torn save as a temp folder, cleaned at the next start).

>>> import tempfile, torch
>>> from savegame.folder import RunFolder
>>> from savegame.checkpoint.policy import KeepLast
>>> saver = Checkpointer(RunFolder(tempfile.mkdtemp()), keep=KeepLast(1))
>>> for step in (1, 2):
...     handle = saver.save({"w": torch.ones(1) * step}, step=step, epoch=0)
>>> handle.done(), handle.result().step, [c.step for c in saver.checkpoints]
(True, 2, [2])
>>> saver = Checkpointer(RunFolder(tempfile.mkdtemp()), keep=KeepLast(1), background=True)
>>> w = torch.ones(1)
>>> handle = saver.save({"w": w}, step=1, epoch=0)
>>> _ = w.add_(1)  # training goes on: the checkpoint keeps the values of the snapshot
>>> handle.result().step, saver.close()
(1, None)
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping

from .checkpoint.commit import persist_incremental, plain_metrics, snapshot
from .checkpoint.host_buffers import HostBuffers
from .checkpoint.layout import CheckpointInfo, checkpoint_dirname, delete_checkpoint
from .checkpoint.policy import KeepPolicy, plan_deletions
from .checkpoint.sharing import StoredCheckpoint, stored_checkpoint
from .folder import RunFolder


class SaveHandle:
    """The outcome of one save: ``done()`` says whether it finished, ``result()`` returns its
    :class:`CheckpointInfo` (waiting for it) or raises the save's error."""

    def __init__(self, wait: Callable[[], None] | None = None) -> None:
        self._info: CheckpointInfo | None = None
        self._error: BaseException | None = None
        self._done = False
        self._wait = wait  # a background save: waits for it to finish (and be collected)

    def done(self) -> bool:
        return self._done

    def result(self) -> CheckpointInfo:
        """The committed checkpoint; waits for a background save, or raises its error."""
        if not self._done and self._wait is not None:
            try:
                self._wait()
            except BaseException:  # the error is this handle's now: raised below, once
                if not self._done:
                    raise
        if not self._done:
            raise RuntimeError("this save has not finished")
        if self._error is not None:
            raise self._error
        assert self._info is not None
        return self._info

    def _finish(self, info: CheckpointInfo | None = None, error: BaseException | None = None) -> None:
        self._info, self._error, self._done = info, error, True


class Checkpointer:
    """Saves into ``folder``'s ``checkpoints/``, keeping what ``keep`` says.

    Args:
        folder: the run folder.
        keep: the keep policy applied after each commit.
        on_committed: called with each committed checkpoint, after retention, on the caller's
            thread (the Run updates ``run.json`` there).
        background: persist and apply retention on a thread of their own (see the module docstring).
        incremental: share the tensors that did not change with the newest committed checkpoint
            instead of writing them again (``checkpoint/sharing.py``).
        list_now: list the folder's checkpoints now (else ``checkpoints`` starts empty).
    """

    def __init__(self, folder: RunFolder, *, keep: KeepPolicy,
                 on_committed: Callable[[CheckpointInfo], None] | None = None, background: bool = False,
                 incremental: bool = True, list_now: bool = True) -> None:
        self.folder = folder
        self.keep = keep
        # list_now=False: the owner sets the list once it holds the folder (a Run, after its lock)
        self.checkpoints: list[CheckpointInfo] = folder.checkpoints() if list_now else []
        self.protected: set[int] = set()  # steps retention must not delete (a resume's source)
        self.background = background
        self._on_committed = on_committed
        self._buffers = HostBuffers() if background else None
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight: tuple[Future, SaveHandle] | None = None
        self.incremental = incremental
        # The newest committed checkpoint as sharing sees it (read from disk at the first save,
        # then what each save wrote), and the fingerprints of the snapshot it was written from.
        self._previous: StoredCheckpoint | None = None
        self._previous_fingerprints: dict[str, Any] = {}

    @property
    def in_flight(self) -> bool:
        """Whether a background save has not been collected yet."""
        return self._in_flight is not None

    def save(self, state: Any, *, step: int, epoch: int, metrics: Mapping[str, float] | None = None,
             info: Mapping[str, Any] | None = None, before_commit: Callable[[], None] | None = None,
             attach: Callable[[Path], dict[str, Any]] | None = None) -> SaveHandle:
        """Snapshot ``state`` now, persist it as ``step-<step>`` (replacing a checkpoint of the
        same step), then apply retention; returns the handle. In the background, the save in
        flight is waited for (and its error raised) first. ``before_commit`` runs on the writing
        thread just before the commit (what must be durable before the checkpoint is); ``attach``
        puts files written elsewhere into the temp folder (``commit.persist_incremental``)."""
        self.collect(wait=True)
        newest = self.checkpoints[-1] if self.checkpoints else None
        path = self.folder.checkpoint_root / checkpoint_dirname(step)
        overwrite = newest is not None and newest.step == step
        if self.background:
            return self._save_in_background(state, path, step=step, epoch=epoch, metrics=metrics, info=info,
                                            overwrite=overwrite, newest=newest, before_commit=before_commit,
                                            attach=attach)
        # persisted before save() returns: no host copy needed
        snap = snapshot(state, copy=False, fingerprints=self.incremental)
        handle = SaveHandle()
        try:
            committed = self._persist(snap, path, step=step, epoch=epoch, metrics=metrics, info=info,
                                      overwrite=overwrite, newest=newest, before_commit=before_commit, attach=attach)
        except BaseException as error:
            handle._finish(error=error)
            raise
        self.committed(committed)
        handle._finish(info=committed)
        return handle

    def _save_in_background(self, state: Any, path: Any, *, step: int, epoch: int,
                            metrics: Mapping[str, Any] | None, info: Mapping[str, Any] | None,
                            overwrite: bool, newest: CheckpointInfo | None,
                            before_commit: Callable[[], None] | None,
                            attach: Callable[[Path], dict[str, Any]] | None) -> SaveHandle:
        snap = snapshot(state, buffers=self._buffers, fingerprints=self.incremental)
        plain = plain_metrics(metrics)  # a 0-d CUDA tensor is read here, on the caller's stream
        handle = SaveHandle(wait=lambda: self.collect(wait=True))
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="savegame-save")
        # the list and the protected steps as they are now: the thread never touches the owner's
        future = self._pool.submit(self._persist_and_retain, snap, path, step, epoch, plain, info, overwrite,
                                   list(self.checkpoints), set(self.protected), newest, before_commit, attach)
        self._in_flight = (future, handle)
        return handle

    def _persist_and_retain(self, snap: Any, path: Any, step: int, epoch: int, metrics: Mapping[str, float],
                            info: Mapping[str, Any] | None, overwrite: bool, checkpoints: list[CheckpointInfo],
                            protected: set[int], newest: CheckpointInfo | None,
                            before_commit: Callable[[], None] | None,
                            attach: Callable[[Path], dict[str, Any]] | None,
                            ) -> tuple[CheckpointInfo, list[CheckpointInfo]]:
        """The background part: persist, then retention on the list as it was at the snapshot."""
        committed = self._persist(snap, path, step=step, epoch=epoch, metrics=metrics, info=info,
                                  overwrite=overwrite, newest=newest, before_commit=before_commit, attach=attach)
        return committed, _retain(checkpoints, committed, self.keep, protected)

    def _persist(self, snap: Any, path: Any, *, newest: CheckpointInfo | None, **kwargs: Any) -> CheckpointInfo:
        """Persist one snapshot, sharing unchanged tensors with ``newest``. Runs on the thread that
        writes (the only one that touches ``_previous`` while a save is in flight)."""
        previous = self._share_with(newest) if self.incremental else None
        try:
            committed, stored = persist_incremental(snap, path, previous=previous,
                                                    previous_fingerprints=self._previous_fingerprints, **kwargs)
        except BaseException:
            self._previous = None  # read the newest checkpoint from disk at the next save
            raise
        self._previous, self._previous_fingerprints = stored, snap.fingerprints
        return committed

    def _share_with(self, newest: CheckpointInfo | None) -> StoredCheckpoint | None:
        if newest is None:
            return None
        if self._previous is None or self._previous.path != newest.path:
            try:
                self._previous, self._previous_fingerprints = stored_checkpoint(newest.path), {}
            except (OSError, ValueError):  # damaged or gone: this save is a full one
                self._previous = None
        return self._previous

    def collect(self, *, wait: bool = False) -> CheckpointInfo | None:
        """Finish a background save here, on the owner's thread: the checkpoint list, then
        ``on_committed``; returns the checkpoint, or None when none had finished (``wait``: waits
        for it). A failed save raises its error here, once."""
        if self._in_flight is None:
            return None
        future, handle = self._in_flight
        if not wait and not future.done():
            return None
        self._in_flight = None
        try:
            committed, kept = future.result()
        except BaseException as error:
            handle._finish(error=error)
            raise
        self.checkpoints = kept
        handle._finish(info=committed)
        if self._on_committed is not None:
            self._on_committed(committed)
        return committed

    def close(self) -> None:
        """Wait for the save in flight (raising its error) and stop the background thread."""
        try:
            self.collect(wait=True)
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None

    def committed(self, info: CheckpointInfo) -> None:
        """A checkpoint committed: list it, delete what the keep policy drops, tell the owner."""
        self.checkpoints = _retain(self.checkpoints, info, self.keep, self.protected)
        if self._on_committed is not None:
            self._on_committed(info)


def _retain(checkpoints: list[CheckpointInfo], committed: CheckpointInfo, keep: KeepPolicy,
            protected: set[int]) -> list[CheckpointInfo]:
    """Retention after a commit: the list with ``committed`` in it (in place of a checkpoint of
    the same step), less what ``keep`` drops, which is deleted from disk; a new list."""
    kept = [c for c in checkpoints if c.step != committed.step] + [committed]
    for doomed in plan_deletions(kept, keep, protected=protected):
        delete_checkpoint(doomed.path)
        kept.remove(doomed)
    return kept
