"""``SaveTiming``: when a run saves — its save policy, and what the policy must know of the last save.

The policy answers "save now?" from a :class:`~savegame.checkpoint.policy.SaveContext`; this part
builds that context from the run's progress and remembers the last save (its step, its epochs
done, its time). It also makes a save's effect on the policy undoable: ``OnImprovement`` hears of
a save before the state is stored with it, and goes back to where it was if the write fails.

>>> from savegame.checkpoint.policy import EverySteps
>>> from savegame.progress import Progress
>>> timing, progress = SaveTiming(EverySteps(2)), Progress()
>>> progress.step = 2
>>> context = timing.context(progress)
>>> timing.policy.should_save(context)
True
>>> with timing.saving(context):
...     pass  # the checkpoint is written here (or handed to the background thread)
>>> timing.policy.should_save(timing.context(progress))  # step 2 is saved already
False
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

from .checkpoint.policy import SaveContext, SavePolicy
from .progress import Progress

NO_METRICS: Mapping[str, float] = MappingProxyType({})


class SaveTiming:
    """The save policy and the memory of the last save it is judged against."""

    def __init__(self, policy: SavePolicy) -> None:
        self.policy = policy
        self.last_step: int | None = None
        self.last_epochs_done: int | None = None
        self.last_time: float | None = None  # monotonic, this process only: None after a resume

    def context(self, progress: Progress, metrics: Mapping[str, float] = NO_METRICS) -> SaveContext:
        """What the policy sees now."""
        return SaveContext(step=progress.step, epoch=progress.epoch, epochs_done=progress.epochs_done(),
                           now=time.monotonic(), metrics=metrics, last_save_step=self.last_step,
                           last_save_epochs_done=self.last_epochs_done, last_save_time=self.last_time)

    @contextmanager
    def saving(self, context: SaveContext) -> Iterator[Callable[[], None]]:
        """Around one save: the policy hears of it first (its state, stored with the checkpoint,
        then counts this save); if the save raises, the policy goes back to where it was. It
        yields that undo, for a save that fails later, in the background."""
        before, last_before = self.policy.state_dict(), (self.last_step, self.last_epochs_done, self.last_time)

        def undo() -> None:
            self.policy.load_state_dict(before)
            self.last_step, self.last_epochs_done, self.last_time = last_before

        self.policy.saved(context)
        try:
            yield undo
        except BaseException:
            undo()
            raise
        # The save counts from here, not from its commit: an async save still being written at
        # the next run.save() must not make "every 3 steps" save the step after it too.
        self.last_step, self.last_epochs_done, self.last_time = context.step, context.epochs_done, time.monotonic()

    def resumed(self, progress: Progress, policy_state: dict[str, Any]) -> None:
        """The run resumed from a checkpoint of ``progress.step``: that was the last save."""
        self.policy.load_state_dict(policy_state)
        self.last_step, self.last_epochs_done = progress.step, progress.start_epoch
