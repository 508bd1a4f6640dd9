"""When to save and what to keep: small policy objects that compose with ``|`` and ``&``.

A :class:`SavePolicy` answers "save now?" from a :class:`SaveContext` (``save_policy.py``); a
:class:`KeepPolicy` answers "which of these checkpoints stay?" and, through
:meth:`KeepPolicy.ranking`, by which metric "best" is ranked (``keep_policy.py``);
:func:`plan_deletions` turns that answer into the list to delete, never touching the newest
checkpoint or the one being resumed from. This module gathers both, so
``from savegame.checkpoint.policy import ...`` reaches every name.

>>> when = EverySteps(500) | OnImprovement("loss/val")
>>> when
AnyOf(EverySteps(n=500), OnImprovement(metric='loss/val', mode='min', min_delta=0.0))
>>> when.should_save(SaveContext(step=120, metrics={"loss/val": 0.9}))   # first value seen
True
>>> Keep(last=2, best=3, metric="loss/val")
KeepAny(KeepLast(n=2), KeepBest(k=3, metric='loss/val', mode='min'))
"""

from __future__ import annotations

from .keep_policy import (CheckpointLike, Keep, KeepAll, KeepAny, KeepBest, KeepEvery, KeepLast, KeepPolicy,
                          plan_deletions, ranking_of)
from .save_policy import (AllOf, Always, AnyOf, EveryEpochs, EverySeconds, EverySteps, MetricNotFoundError,
                          Never, OnImprovement, SaveContext, SavePolicy, When)

__all__ = [
    "SaveContext", "SavePolicy", "EverySteps", "EveryEpochs", "EverySeconds", "OnImprovement",
    "When", "Always", "Never", "AnyOf", "AllOf", "MetricNotFoundError",
    "CheckpointLike", "KeepPolicy", "KeepLast", "KeepBest", "KeepEvery", "KeepAll", "KeepAny",
    "Keep", "plan_deletions", "ranking_of",
]
