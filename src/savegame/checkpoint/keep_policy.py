"""What to keep: small :class:`KeepPolicy` objects that compose with ``|``, and
:func:`plan_deletions`, which turns a policy's answer into the checkpoints to delete (never the
newest one, nor the one being resumed from).

A keep policy may also say by which metric it ranks checkpoints as "best"
(:meth:`KeepPolicy.ranking`): ``Run.best``, ``run.json``'s ``best``, ``savegame export --best``
and the doctor all name the best checkpoint by that ranking, as :mod:`savegame.ranking` orders it.

>>> policy = Keep(last=2, best=3, metric="loss/val")
>>> policy
KeepAny(KeepLast(n=2), KeepBest(k=3, metric='loss/val', mode='min'))
>>> policy.ranking(), KeepLast(2).ranking()
(('loss/val', 'min'), None)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from savegame.ranking import MODES, top_checkpoints

from ._policy_args import _check_mode, _flat, _positive_int

__all__ = ["CheckpointLike", "KeepPolicy", "KeepLast", "KeepBest", "KeepEvery", "KeepAll", "KeepAny",
           "Keep", "plan_deletions", "ranking_of"]


class CheckpointLike(Protocol):
    """What keep policies read from a checkpoint (``savegame.checkpoint.store.CheckpointInfo``)."""

    @property
    def step(self) -> int: ...
    @property
    def epoch(self) -> int: ...
    @property
    def metrics(self) -> Mapping[str, float]: ...


class KeepPolicy(ABC):
    """Chooses the checkpoints that stay; ``|`` gives the union.

    A policy of your own implements :meth:`keep`. It takes part in "best" (``Run.best``,
    ``run.json``'s ``best``, ``savegame export RUN --best``, the doctor's best checkpoint) by
    returning ``(metric, mode)`` from :meth:`ranking`: the best checkpoint is then the best of the
    kept ones by that metric, ranked as :mod:`savegame.ranking` defines it (a missing, NaN or
    infinite value never ranks, ties go to the newer step). Return None to say it ranks nothing;
    a ``|`` union ranks by its first member that ranks, and a run whose policy ranks nothing has
    no best checkpoint.

    >>> from types import SimpleNamespace as C
    >>> class KeepBestAfter(KeepPolicy):
    ...     "The best by validation loss among the checkpoints from step ``start`` on."
    ...     def __init__(self, start): self.start = start
    ...     def keep(self, checkpoints):
    ...         return KeepBest(1, "loss/val").keep([c for c in checkpoints if c.step >= self.start])
    ...     def ranking(self): return ("loss/val", "min")
    >>> saves = [C(step=s, metrics={"loss/val": v}) for s, v in ((10, 0.1), (20, 0.4), (30, 0.3))]
    >>> KeepBestAfter(20).keep(saves), (KeepLast(1) | KeepBestAfter(20)).ranking()
    ({30}, ('loss/val', 'min'))
    """

    __slots__ = ()

    @abstractmethod
    def keep(self, checkpoints: Sequence[CheckpointLike]) -> set[int]:
        """The steps to keep among ``checkpoints``."""

    def ranking(self) -> tuple[str, str] | None:
        """The ``(metric, mode)`` by which this policy ranks checkpoints as best (``mode``:
        ``"min"``, lower is better, or ``"max"``), or None: it does not rank.

        The default reads the policy's own ``metric`` attribute when it is a string (with its
        ``mode``, default ``"min"``), as savegame did before this method existed, else the first
        of its ``policies`` that ranks; None when it has neither. Override it to say so
        explicitly, e.g. return None when a ``metric`` attribute of yours is not a ranking."""
        return _attribute_ranking(self)

    def __or__(self, other: KeepPolicy) -> KeepAny:
        if not isinstance(other, KeepPolicy):
            return NotImplemented
        return KeepAny(*_flat(KeepAny, self), *_flat(KeepAny, other))


@dataclass(frozen=True, slots=True)
class KeepLast(KeepPolicy):
    """Keep the ``n`` newest checkpoints by step.

    >>> from types import SimpleNamespace as C
    >>> sorted(KeepLast(2).keep([C(step=s) for s in (30, 10, 20)]))
    [20, 30]
    """

    n: int

    def __post_init__(self) -> None:
        _positive_int("KeepLast", "n", self.n)

    def keep(self, checkpoints: Sequence[CheckpointLike]) -> set[int]:
        return set(sorted(c.step for c in checkpoints)[-self.n:])


@dataclass(frozen=True, slots=True)
class KeepBest(KeepPolicy):
    """Keep the ``k`` best by ``metric`` (``savegame.ranking``: ties go to the newer step; a
    missing, NaN or infinite value never ranks).

    >>> from types import SimpleNamespace as C
    >>> KeepBest(1, "loss").keep([C(step=1, metrics={"loss": 0.2}), C(step=2, metrics={})])
    {1}
    """

    k: int
    metric: str
    mode: str = "min"

    def __post_init__(self) -> None:
        _positive_int("KeepBest", "k", self.k)
        _check_mode("KeepBest", self.mode)

    def keep(self, checkpoints: Sequence[CheckpointLike]) -> set[int]:
        return {c.step for c in top_checkpoints(checkpoints, self.metric, self.mode, self.k)}

    def ranking(self) -> tuple[str, str]:
        return self.metric, self.mode


@dataclass(frozen=True, slots=True, kw_only=True)
class KeepEvery(KeepPolicy):
    """Keep milestones: the first checkpoint of each ``step // steps`` (or ``epoch // epochs``).

    So a milestone exists for each bucket even when saves do not land on exact multiples.

    >>> from types import SimpleNamespace as C
    >>> sorted(KeepEvery(steps=100).keep([C(step=s) for s in (40, 90, 130, 260)]))
    [40, 130, 260]
    """

    steps: int | None = None
    epochs: int | None = None

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError(
                "KeepEvery needs exactly one of steps=... or epochs=..., but got "
                f"steps={self.steps!r}, epochs={self.epochs!r}. Use KeepEvery(steps=a) | "
                "KeepEvery(epochs=b) for both."
            )
        name = "steps" if self.steps is not None else "epochs"
        _positive_int("KeepEvery", name, getattr(self, name))

    def keep(self, checkpoints: Sequence[CheckpointLike]) -> set[int]:
        first: dict[int, int] = {}
        for c in checkpoints:
            bucket = c.step // self.steps if self.steps else c.epoch // self.epochs
            if bucket not in first or c.step < first[bucket]:
                first[bucket] = c.step
        return set(first.values())


@dataclass(frozen=True, slots=True)
class KeepAll(KeepPolicy):
    """Keep every checkpoint.

    >>> from types import SimpleNamespace as C; KeepAll().keep([C(step=1), C(step=2)])
    {1, 2}
    """

    def keep(self, checkpoints: Sequence[CheckpointLike]) -> set[int]:
        return {c.step for c in checkpoints}


class KeepAny(KeepPolicy):
    """Keep what any child keeps (the union); ``a | b`` builds one.

    >>> KeepLast(2) | KeepBest(3, "loss/val")
    KeepAny(KeepLast(n=2), KeepBest(k=3, metric='loss/val', mode='min'))
    """

    __slots__ = ("policies",)

    def __init__(self, *policies: KeepPolicy) -> None:
        if not policies:
            raise ValueError("KeepAny needs at least one policy, but got none.")
        for i, p in enumerate(policies):
            if not isinstance(p, KeepPolicy):
                raise TypeError(f"KeepAny takes KeepPolicy objects, but argument {i} is {p!r}.")
        self.policies: tuple[KeepPolicy, ...] = policies

    def keep(self, checkpoints: Sequence[CheckpointLike]) -> set[int]:
        return set().union(*(p.keep(checkpoints) for p in self.policies))

    def ranking(self) -> tuple[str, str] | None:
        """The ranking of the first child that ranks (``Keep(last=2, metric=m)`` ranks by ``m``)."""
        for policy in self.policies:
            found = policy.ranking()
            if found is not None:
                return found
        return None

    def __repr__(self) -> str:
        return f"KeepAny({', '.join(map(repr, self.policies))})"


def Keep(  # noqa: N802 - reads as a noun next to the policy classes it builds
    *,
    last: int | None = 3,
    best: int | None = None,
    metric: str | None = None,
    mode: str = "min",
    every_steps: int | None = None,
    every_epochs: int | None = None,
) -> KeepPolicy:
    """The usual keep policy: the ``last`` newest, the ``best`` by ``metric``, and milestones.

    ``metric`` alone keeps the single best (``best=1``). The newest checkpoint is always kept.
    With a ``metric``, the policy ranks "best" by it (:meth:`KeepPolicy.ranking`).

    >>> Keep(last=2, every_epochs=10)
    KeepAny(KeepLast(n=2), KeepEvery(steps=None, epochs=10))
    """
    _check_mode("Keep", mode)
    if best is not None and metric is None:
        raise ValueError(
            f"Keep(best={best!r}) ranks checkpoints by a metric, but got metric=None. "
            'Name the metric to rank by, for example Keep(best=3, metric="loss/val").'
        )
    parts: list[KeepPolicy] = []
    if last is not None:
        parts.append(KeepLast(last))
    if metric is not None:
        parts.append(KeepBest(1 if best is None else best, metric, mode=mode))
    if every_steps is not None:
        parts.append(KeepEvery(steps=every_steps))
    if every_epochs is not None:
        parts.append(KeepEvery(epochs=every_epochs))
    if not parts:
        raise ValueError(
            "Keep(last=None) with no best, metric, every_steps or every_epochs keeps nothing but "
            "the newest checkpoint. Pass last=1 to say so, or use KeepAll() to keep everything."
        )
    return parts[0] if len(parts) == 1 else KeepAny(*parts)


def plan_deletions(
    checkpoints: Sequence[CheckpointLike],
    policy: KeepPolicy,
    *,
    protected: Iterable[int] = (),
) -> list[CheckpointLike]:
    """The checkpoints ``policy`` does not keep, oldest first.

    Never lists the newest checkpoint nor a ``protected`` step (the one being resumed from).

    >>> from types import SimpleNamespace as C
    >>> [c.step for c in plan_deletions([C(step=s) for s in (1, 2, 3)], KeepLast(1), protected=[1])]
    [2]
    """
    if not checkpoints:
        return []
    kept = set(policy.keep(checkpoints))  # a copy: a custom policy may hand back its own set
    kept.update(protected)
    kept.add(max(c.step for c in checkpoints))
    return sorted((c for c in checkpoints if c.step not in kept), key=lambda c: c.step)


def ranking_of(policy: Any) -> tuple[str, str] | None:
    """``policy.ranking()``, checked: None, or ``(metric, mode)`` with a string metric and a mode
    of :data:`savegame.ranking.MODES`. An object that is no :class:`KeepPolicy` (one that only
    has a ``keep`` method) is read as :meth:`KeepPolicy.ranking`'s default reads one.

    >>> ranking_of(Keep(last=1, metric="acc", mode="max")), ranking_of(KeepAll())
    (('acc', 'max'), None)
    """
    ranking = getattr(policy, "ranking", None)
    found = ranking() if callable(ranking) else _attribute_ranking(policy)
    if found is None:
        return None
    if (not isinstance(found, tuple) or len(found) != 2 or not isinstance(found[0], str)
            or found[1] not in MODES):
        raise ValueError(f"{policy!r}.ranking() must return None or (metric, mode) with a str metric and "
                         f"mode 'min' or 'max', but got {found!r}.")
    return found


def _attribute_ranking(policy: Any) -> tuple[str, str] | None:
    """A ``metric`` attribute (str) and its ``mode``, else the first of ``policies`` that ranks."""
    metric = getattr(policy, "metric", None)
    if isinstance(metric, str):
        return metric, getattr(policy, "mode", "min")
    for child in getattr(policy, "policies", ()) or ():
        found = ranking_of(child)
        if found is not None:
            return found
    return None
