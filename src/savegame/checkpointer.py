"""``Checkpointer``: a run's saves in two phases, and what happens once one has committed.

``save(state, ...)`` first takes a **snapshot** on the caller's thread (the state tree encoded, its
tensors referenced, or copied to host memory when the write happens later), then **persists** it
through an executor (write, fsync, rename, ``COMMIT``) and, once committed, runs
**on_committed**: the list of checkpoints, retention (the keep policy's deletions, ``COMMIT``
first) and the caller's own step (``run.json``). It returns a :class:`SaveHandle` at once.

The executor here runs the persist on the calling thread, so the handle is done when ``save``
returns; an asynchronous executor only has to run ``persist`` elsewhere and copy the tensors in
``snapshot`` (the async-save issue swaps exactly that).

>>> import tempfile, torch
>>> from savegame.folder import RunFolder
>>> from savegame.checkpoint.policy import KeepLast
>>> saver = Checkpointer(RunFolder(tempfile.mkdtemp()), keep=KeepLast(1))
>>> for step in (1, 2):
...     handle = saver.save({"w": torch.ones(1) * step}, step=step, epoch=0)
>>> handle.done(), handle.result().step, [c.step for c in saver.checkpoints]
(True, 2, [2])
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from .checkpoint.commit import persist, snapshot
from .checkpoint.layout import CheckpointInfo, checkpoint_dirname, delete_checkpoint
from .checkpoint.policy import KeepPolicy, plan_deletions
from .folder import RunFolder


class SaveHandle:
    """The outcome of one save: ``done()`` says whether it finished, ``result()`` returns its
    :class:`CheckpointInfo` (waiting for it) or raises the save's error."""

    def __init__(self) -> None:
        self._info: CheckpointInfo | None = None
        self._error: BaseException | None = None
        self._done = False

    def done(self) -> bool:
        return self._done

    def result(self) -> CheckpointInfo:
        if not self._done:
            raise RuntimeError("this save has not finished; a synchronous Checkpointer never says so")
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
        on_committed: called with each committed checkpoint, after retention (the Run updates
            ``run.json`` there).
    """

    def __init__(self, folder: RunFolder, *, keep: KeepPolicy,
                 on_committed: Callable[[CheckpointInfo], None] | None = None) -> None:
        self.folder = folder
        self.keep = keep
        self.checkpoints: list[CheckpointInfo] = folder.checkpoints()
        self.protected: set[int] = set()  # steps retention must not delete (a resume's source)
        self._on_committed = on_committed

    def save(self, state: Any, *, step: int, epoch: int, metrics: Mapping[str, float] | None = None,
             info: Mapping[str, Any] | None = None) -> SaveHandle:
        """Snapshot ``state`` now, persist it as ``step-<step>`` (replacing a checkpoint of the
        same step), then apply retention; returns the handle."""
        snap = snapshot(state, copy=False)  # persisted before save() returns: no host copy needed
        handle = SaveHandle()
        newest = self.checkpoints[-1] if self.checkpoints else None
        path = self.folder.checkpoint_root / checkpoint_dirname(step)
        try:
            committed = persist(snap, path, step=step, epoch=epoch, metrics=metrics, info=info,
                                overwrite=newest is not None and newest.step == step)
        except BaseException as error:
            handle._finish(error=error)
            raise
        self.committed(committed)
        handle._finish(info=committed)
        return handle

    def committed(self, info: CheckpointInfo) -> None:
        """A checkpoint committed: list it, delete what the keep policy drops, tell the owner."""
        self.checkpoints = [c for c in self.checkpoints if c.step != info.step] + [info]
        for doomed in plan_deletions(self.checkpoints, self.keep, protected=self.protected):
            delete_checkpoint(doomed.path)
            self.checkpoints.remove(doomed)
        if self._on_committed is not None:
            self._on_committed(info)
