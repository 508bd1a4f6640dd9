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
import pickle
from dataclasses import dataclass
from typing import Any

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

    Each collective keeps its ``Work`` (and so its tensors) alive here for a while after it
    ends. A gloo worker thread that drops the last reference to a finished work frees its tensors,
    which needs the GIL; when that happens as the interpreter shuts down (a script that exits
    right after the Run's last collective), the thread is unwound through a noexcept destructor
    and the rank dies of SIGABRT ("terminate called without an active exception"; torch 2.13, seen
    about once in 50 two-rank jobs here). Holding the works makes the main thread the last to let
    go. This is also why the object collectives are written out over tensor ones:
    ``broadcast_object_list`` and ``gather_object`` drop their works inside.
    """

    KEEP_WORKS = 32  # many collectives after a work ended, its worker thread has surely let it go

    def __init__(self) -> None:
        import collections

        import torch.distributed as dist

        here = world()
        if not here.initialized:
            raise DistributedNotSupportedError(
                "savegame needs torch.distributed.init_process_group(...) to have run before it coordinates "
                "the ranks of a multi-process job; call it first (torchrun sets the environment it reads).")
        self.world = here
        self._dist = dist
        self.group = dist.new_group(backend="gloo")
        self._works: collections.deque = collections.deque(maxlen=self.KEEP_WORKS)

    def _wait(self, work: Any) -> None:
        work.wait()
        self._works.append(work)  # the work holds its tensors: while it is here, so are they

    def from_rank0(self, value: object) -> object:
        """Rank 0's ``value``, on every rank (what rank 0 decided: to save now, which checkpoint)."""
        import torch

        payload = _pickled(value) if self.world.rank == 0 else None
        size = torch.tensor([len(payload) if payload is not None else 0], dtype=torch.int64)
        self._wait(self._dist.broadcast(size, src=0, group=self.group, async_op=True))
        data = payload if payload is not None else torch.empty(int(size.item()), dtype=torch.uint8)
        self._wait(self._dist.broadcast(data, src=0, group=self.group, async_op=True))
        return value if self.world.rank == 0 else pickle.loads(data.numpy().tobytes())

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any (a preemption signal that reached one rank)."""
        return bool(self.max([1 if flag else 0])[0])

    def max(self, values: list[int]) -> list[int]:
        """The largest of every rank's ``values``, element by element, on every rank (flags agreed
        in one collective: save now, preempted, stop)."""
        import torch

        tensor = torch.tensor(values, dtype=torch.int64)
        self._wait(self._dist.all_reduce(tensor, op=self._dist.ReduceOp.MAX, group=self.group, async_op=True))
        return [int(v) for v in tensor.tolist()]

    def gather(self, value: object) -> list[object] | None:
        """Every rank's ``value``, in rank order, on rank 0 (None on the others)."""
        import torch

        payload = _pickled(value)
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world.size)]
        mine = torch.tensor([len(payload)], dtype=torch.int64)
        self._wait(self._dist.all_gather(sizes, mine, group=self.group, async_op=True))
        longest = max(int(s.item()) for s in sizes)
        padded = torch.zeros(longest, dtype=torch.uint8)
        padded[: len(payload)] = payload
        into = [torch.empty(longest, dtype=torch.uint8) for _ in range(self.world.size)] if self.world.rank == 0 else None
        self._wait(self._dist.gather(padded, into, dst=0, group=self.group, async_op=True))
        if into is None:
            return None
        return [pickle.loads(part[: int(size.item())].numpy().tobytes()) for part, size in zip(into, sizes)]

    def barrier(self) -> None:
        self._wait(self._dist.barrier(group=self.group, async_op=True))


def _pickled(value: object) -> Any:
    """``value`` pickled into a uint8 tensor (the ranks of one job trust each other, as torch's
    object collectives do)."""
    import torch

    return torch.frombuffer(bytearray(pickle.dumps(value)), dtype=torch.uint8)
