"""The one definition of "best": how checkpoints are ranked by a metric.

A checkpoint ranks by the value of ``metric`` recorded in its manifest; ``mode`` says whether
lower (``"min"``) or higher (``"max"``) is better. A missing, NaN or infinite value never ranks
(an overflowed loss is not the best one). Ties go to the newer step. ``KeepBest`` keeps the top
``k`` by this order, ``Run.best`` and ``run.json``'s ``best`` are the first of the kept ones, and
the CLI, the doctor and the report read that same ``best``. Torch-free, so the CLI can rank
without importing torch.

>>> from types import SimpleNamespace as C
>>> saves = [C(step=1, metrics={"loss": 0.5}), C(step=2, metrics={"loss": 0.2}),
...          C(step=3, metrics={"loss": 0.2}), C(step=4, metrics={"loss": float("nan")})]
>>> best_checkpoint(saves, "loss", "min").step
3
>>> [c.step for c in top_checkpoints(saves, "loss", "max", 2)]
[1, 3]
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Protocol, Sequence, TypeVar

MODES = ("min", "max")


class Ranked(Protocol):
    step: int
    metrics: Mapping[str, Any]


R = TypeVar("R", bound=Ranked)


def metric_value(checkpoint: Ranked, metric: str) -> float | None:
    """The finite value of ``metric`` in ``checkpoint``, else None (missing, NaN, inf, not a number)."""
    value = checkpoint.metrics.get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def top_checkpoints(checkpoints: Sequence[R], metric: str, mode: str, k: int) -> list[R]:
    """The ``k`` best of ``checkpoints`` by ``metric``, best first (ties: the newer step first)."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'min' or 'max', but got {mode!r}")
    sign = 1.0 if mode == "min" else -1.0
    ranked = [(sign * value, -c.step, i) for i, c in enumerate(checkpoints)
              if (value := metric_value(c, metric)) is not None]
    ranked.sort()
    return [checkpoints[i] for _, _, i in ranked[:k]]


def best_checkpoint(checkpoints: Sequence[R], metric: str, mode: str) -> R | None:
    """The best of ``checkpoints`` by ``metric`` (None when none has a finite value)."""
    top = top_checkpoints(checkpoints, metric, mode, 1)
    return top[0] if top else None


def best_record(checkpoints: Sequence[Ranked], metric: str, mode: str) -> dict[str, Any] | None:
    """``run.json``'s ``best``: ``{"metric", "mode", "value", "step", "checkpoint"}`` of the best
    of ``checkpoints`` (which should be the kept ones), or None when none ranks."""
    best = best_checkpoint(checkpoints, metric, mode)
    if best is None:
        return None
    path = getattr(best, "path", None)
    return {"metric": metric, "mode": mode, "value": metric_value(best, metric), "step": best.step,
            "checkpoint": getattr(path, "name", None)}
