"""Per-epoch statistics of values logged every step (``run.log(..., reduce="mean")``).

The sums live on the log thread, because a CUDA value only becomes a number there. A checkpoint
saves them (the thread is idle right after a flush), so a resume in the middle of an epoch still
averages over the whole epoch.

>>> stats = EpochStats()
>>> for loss in (1.0, 2.0, 4.0):
...     stats.add("loss/train", ("mean", "max"), loss)
>>> [(v.tag, v.simple_value) for v in stats.summary().value]
[('loss/train/epoch_mean', 2.3333332538604736), ('loss/train/epoch_max', 4.0)]
"""

from __future__ import annotations

import math
from typing import Any

REDUCERS = ("mean", "min", "max", "sum")


def check_reduce(reduce: Any) -> tuple[str, ...]:
    """``reduce`` as a tuple of reducer names; a clear error for anything else."""
    names = (reduce,) if isinstance(reduce, str) else tuple(reduce)
    bad = [n for n in names if n not in REDUCERS]
    if bad or not names:
        raise ValueError(f"reduce= must be one of {REDUCERS} or a tuple of them, got {reduce!r}")
    return names


class EpochStats:
    """Running count/sum/min/max per tag; ``summary()`` gives the epoch's values and resets."""

    def __init__(self) -> None:
        self._stats: dict[str, list[Any]] = {}  # tag -> [reducers, count, sum, min, max]

    def add(self, tag: str, reducers: tuple[str, ...], value: float) -> None:
        entry = self._stats.get(tag)
        if entry is None:
            entry = self._stats[tag] = [reducers, 0, 0.0, math.inf, -math.inf]
        entry[1] += 1
        entry[2] += value
        entry[3] = min(entry[3], value) if not math.isnan(value) else value
        entry[4] = max(entry[4], value) if not math.isnan(value) else value

    def __bool__(self) -> bool:
        return bool(self._stats)

    def summary(self) -> Any:
        from tensorboard.compat.proto.summary_pb2 import Summary
        values = []
        for tag, (reducers, count, total, low, high) in self._stats.items():
            result = {"mean": total / count, "sum": total, "min": low, "max": high}
            values += [Summary.Value(tag=f"{tag}/epoch_{r}", simple_value=result[r]) for r in reducers]
        self._stats = {}
        return Summary(value=values)

    def state_dict(self) -> dict[str, Any]:
        return {tag: {"reduce": list(r), "count": n, "sum": s, "min": lo, "max": hi}
                for tag, (r, n, s, lo, hi) in self._stats.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._stats = {tag: [tuple(e["reduce"]), e["count"], e["sum"], e["min"], e["max"]]
                       for tag, e in state.items()}
