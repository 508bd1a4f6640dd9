"""``Progress``: where a run is — step, epoch, the position of each loader inside the epoch and the
random state — as one ``state_dict`` object that a checkpoint saves and a resume loads.

>>> progress = Progress()
>>> progress.begin_epoch(0)
>>> for batch in progress.iterate([10, 20, 30]):
...     pass
>>> progress.step, progress.epochs_done(), progress.batch
(3, 1, 2)
>>> sorted(progress.state_dict())
['epoch', 'epochs_done', 'loaders', 'rng', 'step']
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from .checkpoint.loader import LoaderTracker
from .checkpoint.rng import capture_rng, restore_rng


class Progress:
    """Counts steps and epochs and tracks each loader of the current epoch."""

    def __init__(self) -> None:
        self.step = 0
        self.epoch = 0
        self.start_epoch = 0  # the first epoch epochs() yields (after a resume: where it left off)
        self.trackers: dict[str, LoaderTracker] = {}
        self._epoch_slots: dict[int, str] = {}
        self._saved_loaders: dict[str, Any] = {}
        self._pending_rng: dict[str, Any] | None = None  # restored when the loop starts
        self._resume_rng: dict[str, Any] | None = None  # restored again after a mid-epoch skip
        self._current: LoaderTracker | None = None

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Step, epoch, epochs done, the random state now and every loader's position."""
        return {"step": self.step, "epoch": self.epoch, "epochs_done": self.epochs_done(),
                "rng": capture_rng(), "loaders": {slot: t.state_dict() for slot, t in self.trackers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``: inside its epoch if it was saved there, else at the next one.
        The random state is put back when the loop starts (after the user's set-up code)."""
        self.step, self.epoch = state["step"], state["epoch"]
        self.start_epoch = state["epochs_done"]
        if self.start_epoch == self.epoch:  # saved inside an epoch: continue that epoch
            self._saved_loaders = dict(state["loaders"])
        else:  # only the loaders' own generators matter for the next epoch
            self._saved_loaders = {slot: {**s, "in_progress": False, "done": False}
                                   for slot, s in state["loaders"].items()}
        self._resume_rng = self._pending_rng = state["rng"]

    # -- the loop ----------------------------------------------------------------------------
    def epochs_done(self) -> int:
        """Fully finished epochs: an epoch is done once its batches ran out (or the loop broke
        out of it) and no loader is half way."""
        finished = False
        for tracker in self.trackers.values():
            if tracker.in_progress:
                return self.epoch
            finished = finished or (tracker.done and tracker.epoch == self.epoch)
        return self.epoch + 1 if finished else self.epoch

    def begin_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._epoch_slots = {}
        self.restore_pending_rng()

    def iterate(self, loader: Iterable, *, name: str | None = None,
                before_batch: Callable[[], None] | None = None) -> Iterator[Any]:
        """Yield the batches of ``loader`` for this epoch, counting steps; resumes inside it."""
        self.restore_pending_rng()
        tracker = self._tracker(loader, name)
        self._current = tracker
        for batch in tracker.iterate(epoch=self.epoch, before_batch=before_batch):
            self.step += 1
            yield batch

    @property
    def batch(self) -> int | None:
        """The 0-based index in its epoch of the batch yielded last; None before the first."""
        tracker = self._current
        return tracker.batches - 1 if tracker is not None and tracker.batches else None

    def restore_pending_rng(self) -> None:
        if self._pending_rng is not None:
            restore_rng(self._pending_rng)
            self._pending_rng = None

    def _tracker(self, loader: Iterable, name: str | None) -> LoaderTracker:
        slot = self._epoch_slots.get(id(loader))
        if slot is None:
            slot = name or f"loader{len(self._epoch_slots)}"
            self._epoch_slots[id(loader)] = slot
        tracker = self.trackers.get(slot)
        if tracker is None or tracker.loader is not loader:
            tracker = self.trackers[slot] = LoaderTracker(loader)
            saved = self._saved_loaders.pop(slot, None)
            if saved is not None:
                continue_pass = saved["epoch"] == self.epoch and (saved["in_progress"] or saved["done"])
                tracker.load_state_dict(saved, rng=self._resume_rng, continue_pass=continue_pass)
        return tracker


def position(state: dict[str, Any]) -> str:
    """Where a saved progress stands, for the resume line: "epoch 6, batch 30 of 45" or "end of
    epoch 5".

    >>> position({"epoch": 5, "epochs_done": 6, "loaders": {}})
    'end of epoch 5'
    """
    epoch = state["epoch"]
    if state["epochs_done"] > epoch:
        return f"end of epoch {epoch}"
    loaders = [s for s in (state.get("loaders") or {}).values() if s.get("epoch") == epoch]
    if not loaders:
        return f"epoch {epoch}"
    batches, length = loaders[0].get("batches", 0), loaders[0].get("length")
    return f"epoch {epoch}, batch {batches}" + (f" of {length}" if length else "")
