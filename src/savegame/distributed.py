"""Which process this is in a ``torchrun`` / ``torch.distributed`` job: one source for every part
of savegame that must behave differently on rank 0; and the few collectives its ranks agree by.

The process group, once initialized, is the truth; before that, torchrun's environment variables
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) say what it will be, so a ``Run`` made before
``init_process_group`` knows it too.

>>> one = world()
>>> (one.rank, one.size) if not one.distributed else "inside torchrun"
(0, 1)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import DistributedNotSupportedError

__all__ = ["World", "world", "Coordinator", "DistributedNotSupportedError"]


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` processes, ``local_rank`` on its host;
    ``initialized``: whether ``torch.distributed``'s process group is up.

    >>> World(rank=1, size=2, local_rank=1, initialized=False).distributed
    True
    """

    rank: int
    size: int
    local_rank: int
    initialized: bool

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError:
        return default  # not torchrun's: a variable of the same name set for something else


def world() -> World:
    """This process's :class:`World`, from the process group if initialized, else the environment."""
    local_rank = _env_int("LOCAL_RANK", 0)
    try:
        import torch.distributed as dist
    except ImportError:  # a torch built without distributed support
        dist = None
    if dist is not None and dist.is_available() and dist.is_initialized():
        return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local_rank, initialized=True)
    return World(rank=_env_int("RANK", 0), size=_env_int("WORLD_SIZE", 1), local_rank=local_rank,
                 initialized=False)


class Coordinator:
    """The few collectives a multi-process run needs, on a gloo group of savegame's own.

    A group of its own: collectives must run in the same order on every rank, and savegame's
    (a save decision, a preemption flag, the ranks' RNG states) must never interleave with the
    training's NCCL ones, nor with those of a save running on another thread. gloo, because
    these are a few small CPU values, and gloo runs beside NCCL on GPU jobs. Every rank must make
    the Coordinator at the same point (``new_group`` is collective), after ``init_process_group``.
    """

    def __init__(self) -> None:
        import torch.distributed as dist

        here = world()
        if not here.initialized:
            raise DistributedNotSupportedError(
                "savegame needs torch.distributed.init_process_group(...) to have run before it coordinates "
                "the ranks of a multi-process job; call it first (torchrun sets the environment it reads).")
        self.world = here
        self._dist = dist
        self.group = dist.new_group(backend="gloo")

    def from_rank0(self, value: object) -> object:
        """Rank 0's ``value``, on every rank (what rank 0 decided: to save now, which checkpoint)."""
        box = [value if self.world.rank == 0 else None]
        self._dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any (a preemption signal that reached one rank)."""
        import torch

        value = torch.tensor([1 if flag else 0], dtype=torch.int32)
        self._dist.all_reduce(value, op=self._dist.ReduceOp.MAX, group=self.group)
        return bool(value.item())

    def max(self, values: list[int]) -> list[int]:
        """The largest of every rank's ``values``, element by element, on every rank (flags agreed
        in one collective: save now, preempted, stop)."""
        import torch

        tensor = torch.tensor(values, dtype=torch.int64)
        self._dist.all_reduce(tensor, op=self._dist.ReduceOp.MAX, group=self.group)
        return [int(v) for v in tensor.tolist()]

    def gather(self, value: object) -> list[object] | None:
        """Every rank's ``value``, in rank order, on rank 0 (None on the others)."""
        out: list[object] | None = [None] * self.world.size if self.world.rank == 0 else None
        self._dist.gather_object(value, out, dst=0, group=self.group)
        return out

    def barrier(self) -> None:
        self._dist.barrier(group=self.group)
