"""A ``Run``'s place among the ranks of a ``torchrun`` job: who owns the folder, and what the
ranks must agree on.

In one process there is nothing to agree: :class:`Ranks` leads and every method returns what it
is given, with no collective. In a job of several processes rank 0 **leads**: it holds the run
folder's lock, writes ``run.json``, the logs and every checkpoint; the other ranks **follow**:
they read the checkpoint rank 0 chose (the folder must be on a file system every host sees) and
never write the folder. What must be the same on every rank goes through savegame's own gloo
group (:class:`~savegame.distributed.Coordinator`):

- :meth:`Ranks.share`: rank 0 does something (opens the folder, saves) and every rank gets its
  result, or raises its error, so no rank trains on while rank 0 failed;
- :meth:`Ranks.agree`: whether to save now (rank 0's save policy decides), and whether any rank
  was preempted (SIGTERM) or asked to stop, so every rank saves the same step and stops together;
- :meth:`Ranks.gather`: each rank's own progress (random state, loader positions), saved by
  rank 0 under ``_savegame/ranks/<r>``, and :meth:`Ranks.own_progress` picks a rank's own back.

>>> ranks = Ranks.of_this_process()
>>> ranks.leads, ranks.many, ranks.share(lambda: "chosen"), ranks.agree(save=True, preempted=False, stop=0)
(True, False, 'chosen', Agreement(save=True, preempted=False, stop=0))
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from .distributed import Coordinator, world
from .errors import DistributedNotSupportedError
from .messages import warn

T = TypeVar("T")

NO_STOP, STOP_WITHOUT_SAVE, STOP_AND_SAVE = 0, 1, 2  # a stop request, ordered: "save" wins


@dataclass(frozen=True)
class Agreement:
    """What every rank does at a save point: ``save`` now; a ``preempted`` rank (save and exit 0);
    ``stop``: a stop request on some rank (``NO_STOP``, ``STOP_WITHOUT_SAVE``, ``STOP_AND_SAVE``)."""

    save: bool
    preempted: bool
    stop: int


class Ranks:
    """One process (``size`` 1), or rank ``rank`` of ``size`` with a :class:`Coordinator`."""

    # A preemption that reached one rank is heard by the others at the next save point, at the end
    # of an epoch, and every this many steps (one all-reduce costs 0.3-2 ms on CPU: not every step).
    CHECK_EVERY = 8

    def __init__(self, rank: int, size: int, coordinator: Coordinator | None) -> None:
        self.rank, self.size, self._coordinator = rank, size, coordinator

    @classmethod
    def of_this_process(cls) -> "Ranks":
        """This process's ranks. A multi-process job (torchrun's environment) must have called
        ``torch.distributed.init_process_group`` first: the ranks coordinate through it."""
        here = world()
        if not here.distributed:
            return cls(0, 1, None)
        if not here.initialized:
            raise DistributedNotSupportedError(
                f"savegame.Run was created in rank {here.rank} of a {here.size}-process job (torchrun's RANK and "
                "WORLD_SIZE are set) before torch.distributed.init_process_group(): the ranks agree on when to "
                "save through it. Call dist.init_process_group(...) first, on every rank, then make the Run.")
        return cls(here.rank, here.size, Coordinator())

    @property
    def leads(self) -> bool:
        """Whether this process owns the folder (rank 0, or the only process)."""
        return self.rank == 0

    @property
    def group(self) -> Any:
        """The process group savegame's own collectives (and DCP's, for sharded state) use: its
        gloo group in a job of several ranks, else None (DCP then uses the default group, if any)."""
        return self._coordinator.group if self._coordinator is not None else None

    @property
    def many(self) -> bool:
        return self.size > 1

    def share(self, lead: Callable[[], T] | None) -> T:
        """Rank 0 calls ``lead()``; every rank returns its result, or raises its error (each rank
        the same error, noted as rank 0's). ``lead`` is only called on rank 0 (None elsewhere)."""
        if self._coordinator is None:
            return lead()
        if self.leads:
            try:
                value = lead()
            except BaseException as error:
                self._coordinator.from_rank0(("error", _portable(error)))
                raise
            self._coordinator.from_rank0(("ok", value))
            return value
        outcome, value = self._coordinator.from_rank0(None)
        if outcome == "error":
            value.add_note(f"(raised on rank 0 of {self.size}; this is rank {self.rank}, which stops too)")
            raise value
        return value

    def agree(self, *, save: bool, preempted: bool, stop: int) -> Agreement:
        """Rank 0's ``save`` (the other ranks' count only when true, e.g. ``force``), and the most
        urgent ``preempted`` / ``stop`` of any rank, on every rank."""
        if self._coordinator is None:
            return Agreement(save, preempted, stop)
        flags = self._coordinator.max([int(save), int(preempted), stop])
        return Agreement(bool(flags[0]), bool(flags[1]), flags[2])

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's ``value`` on rank 0, in rank order (None elsewhere; ``[value]`` alone)."""
        if self._coordinator is None:
            return [value]
        return self._coordinator.gather(value)

    def own_progress(self, run_state: dict[str, Any]) -> dict[str, Any]:
        """This rank's progress in a checkpoint's run state: rank 0's is the run state itself (as
        one process saves it), rank r's is ``ranks[str(r)]``. A checkpoint of another job size
        resumes the model and the counters, not each rank's random state and data position: a
        rank it lacks takes rank 0's, and rank 0 warns."""
        saved_size = int(run_state.get("world_size", 1))
        if saved_size != self.size and self.leads:
            warn(
                f"this checkpoint was saved by {saved_size} process(es) and resumes in {self.size}: the tracked "
                "state and the step resume, but the random state and data position of a rank the checkpoint lacks "
                "are rank 0's, so the data order is not the one an uninterrupted run would have had")
        if self.rank == 0:
            return run_state
        own = (run_state.get("ranks") or {}).get(str(self.rank))
        return dict(run_state, **own) if own is not None else run_state

    def checks_preemption_now(self, step: int) -> bool:
        """Whether the batch before ``step + 1`` is one where the ranks compare preemption flags
        (the same batches on every rank; always in one process, where it costs nothing)."""
        return self._coordinator is None or step % self.CHECK_EVERY == 0


def _portable(error: BaseException) -> BaseException:
    """``error`` as the other ranks can receive it (pickled), else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
