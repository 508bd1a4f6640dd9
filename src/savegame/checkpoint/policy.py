"""When to save and what to keep: small policy objects that compose with ``|`` and ``&``.

A :class:`SavePolicy` answers "save now?" from a :class:`SaveContext`; a :class:`KeepPolicy`
answers "which of these checkpoints stay?"; :func:`plan_deletions` turns that answer into the list
to delete, never touching the newest checkpoint or the one being resumed from.

>>> when = EverySteps(500) | OnImprovement("loss/val")
>>> when
AnyOf(EverySteps(n=500), OnImprovement(metric='loss/val', mode='min', min_delta=0.0))
>>> when.should_save(SaveContext(step=120, metrics={"loss/val": 0.9}))   # first value seen
True
>>> Keep(last=2, best=3, metric="loss/val")
KeepAny(KeepLast(n=2), KeepBest(k=3, metric='loss/val', mode='min'))

Cost of a skip (CPython 3.11, a noisy 2-core dev box): ``EverySteps`` ~0.1 µs, a two-policy
``AnyOf`` ~0.3-0.5 µs; building the frozen ``SaveContext`` itself costs more, ~2-4 µs::

    python -m timeit -s "from savegame.checkpoint.policy import EverySteps, EveryEpochs, SaveContext" \\
        -s "p = EverySteps(500) | EveryEpochs(1); c = SaveContext(step=7, last_save_step=0)" \\
        "p.should_save(c)"
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from savegame.errors import MetricNotFoundError
from savegame.ranking import top_checkpoints

__all__ = [
    "SaveContext", "SavePolicy", "EverySteps", "EveryEpochs", "EverySeconds", "OnImprovement",
    "When", "Always", "Never", "AnyOf", "AllOf", "MetricNotFoundError",
    "CheckpointLike", "KeepPolicy", "KeepLast", "KeepBest", "KeepEvery", "KeepAll", "KeepAny",
    "Keep", "plan_deletions",
]


_NO_METRICS: Mapping[str, float] = MappingProxyType({})  # shared: a default allocates nothing


def _positive(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{owner} needs {name} > 0, but got {name}={value!r}.")


def _positive_int(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner} needs an integer {name} >= 1, but got {name}={value!r}.")


def _check_mode(owner: str, mode: str) -> None:
    if mode not in ("min", "max"):
        raise ValueError(f"{owner} needs mode='min' (lower is better) or 'max', but got {mode=}.")


# ---------------------------------------------------------------------------------------------
# When to save
# ---------------------------------------------------------------------------------------------

# Not frozen: a frozen dataclass sets each field through object.__setattr__, which tripled the cost
# of a skipped run.save(). Policies only read it; Run builds a new one per call.
@dataclass(slots=True, kw_only=True)
class SaveContext:
    """What a save policy sees at one ``run.save()`` call (read it, don't change it).

    >>> SaveContext(step=1000, epoch=2, epochs_done=3).epochs_done
    3
    """

    step: int
    """Training steps done (``run.step``)."""
    epoch: int = 0
    """0-based index of the current epoch."""
    epochs_done: int = 0
    """Fully finished epochs (``epoch + 1`` when called after the epoch's data ran out)."""
    now: float = 0.0
    """``time.monotonic()`` at the call."""
    metrics: Mapping[str, float] = field(default_factory=lambda: _NO_METRICS)
    """Metrics passed to ``run.save(metrics=...)``."""
    last_save_step: int | None = None
    """Step of the last committed save of this run (None: never saved)."""
    last_save_epochs_done: int | None = None
    """``epochs_done`` of the last committed save of this run (None: never saved)."""
    last_save_time: float | None = None
    """Monotonic time of the last save in this process (None right after start or resume)."""


class SavePolicy(ABC):
    """Decides at each ``run.save()`` whether to write a checkpoint; ``|`` and ``&`` compose."""

    __slots__ = ()

    @abstractmethod
    def should_save(self, ctx: SaveContext) -> bool:
        """True to write a checkpoint now. Changes no state: a save that then fails must not
        count, so what a save changes happens in :meth:`saved`."""

    def saved(self, ctx: SaveContext) -> None:
        """A checkpoint was written at ``ctx`` (whoever decided it): update the state."""

    def state_dict(self) -> dict[str, Any]:
        """What must survive a resume (saved inside each checkpoint); stateless by default."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` after a resume."""

    def __or__(self, other: SavePolicy) -> AnyOf:
        if not isinstance(other, SavePolicy):
            return NotImplemented
        return AnyOf(*_flat(AnyOf, self), *_flat(AnyOf, other))

    def __and__(self, other: SavePolicy) -> AllOf:
        if not isinstance(other, SavePolicy):
            return NotImplemented
        return AllOf(*_flat(AllOf, self), *_flat(AllOf, other))


def _flat(kind: type, policy: Any) -> tuple:
    # a | b | c builds one AnyOf of three, so its state_dict keys do not depend on nesting
    return policy.policies if type(policy) is kind else (policy,)


@dataclass(frozen=True, slots=True)
class EverySteps(SavePolicy):
    """Save when a multiple of ``n`` steps was crossed since the last save.

    Works when ``run.save()`` is not called at every step (step 1003 after a save at 998 saves).

    >>> EverySteps(500).should_save(SaveContext(step=1003, last_save_step=998))
    True
    """

    n: int

    def __post_init__(self) -> None:
        _positive_int("EverySteps", "n", self.n)

    def should_save(self, ctx: SaveContext) -> bool:
        return ctx.step // self.n > (ctx.last_save_step or 0) // self.n


@dataclass(frozen=True, slots=True)
class EveryEpochs(SavePolicy):
    """Save when a multiple of ``n`` finished epochs was crossed since the last save.

    >>> EveryEpochs(2).should_save(SaveContext(step=0, epochs_done=4, last_save_epochs_done=2))
    True
    """

    n: int

    def __post_init__(self) -> None:
        _positive_int("EveryEpochs", "n", self.n)

    def should_save(self, ctx: SaveContext) -> bool:
        return ctx.epochs_done // self.n > (ctx.last_save_epochs_done or 0) // self.n


class EverySeconds(SavePolicy):
    """Save when ``seconds`` passed since the last save in this process, or since its first call.

    >>> EverySeconds(600).should_save(SaveContext(step=1, now=50.0, last_save_time=0.0))
    False
    """

    __slots__ = ("seconds", "_start")

    def __init__(self, seconds: float) -> None:
        _positive("EverySeconds", "seconds", seconds)
        self.seconds = seconds
        self._start: float | None = None  # process-local clock: not state, a resume restarts it

    def should_save(self, ctx: SaveContext) -> bool:
        if self._start is None:
            self._start = ctx.now
        last = ctx.last_save_time
        return ctx.now - (self._start if last is None else last) >= self.seconds

    def __repr__(self) -> str:
        return f"EverySeconds(seconds={self.seconds!r})"


class OnImprovement(SavePolicy):
    """Save when ``metrics[metric]`` beats the best value seen so far by more than ``min_delta``.

    A call without any metrics is never an improvement; a call with metrics but not this one is
    an error (most likely a misspelt name). The best value is the best one among the saved
    checkpoints: it moves when a save with a better value is written (:meth:`saved`), not when a
    save is only decided, so a save that fails does not move it. It is saved in each checkpoint
    and restored on resume, so a resumed run does not save its first worse value again. NaN
    never improves.

    >>> policy, ctx = OnImprovement("acc", mode="max"), SaveContext(step=1, metrics={"acc": 0.5})
    >>> policy.should_save(ctx), policy.best
    (True, None)
    >>> policy.saved(ctx); policy.best
    0.5
    """

    __slots__ = ("metric", "mode", "min_delta", "best")

    def __init__(self, metric: str, *, mode: str = "min", min_delta: float = 0.0) -> None:
        _check_mode("OnImprovement", mode)
        if not min_delta >= 0:
            raise ValueError(f"OnImprovement needs min_delta >= 0, but got {min_delta=}.")
        self.metric, self.mode, self.min_delta = metric, mode, min_delta
        self.best: float | None = None

    def should_save(self, ctx: SaveContext) -> bool:
        try:
            return self._improves(float(ctx.metrics[self.metric]))
        except KeyError:
            if not ctx.metrics:
                # A save call with no metrics (the mid-epoch run.save() beside an end-of-epoch one
                # with validation metrics) cannot be judged: no improvement, no error.
                return False
            raise MetricNotFoundError(
                f"{self!r} needs metric {self.metric!r}, but the save got metrics "
                f"{sorted(ctx.metrics)}. Pass it, e.g. "
                f"run.save(metrics={{{self.metric!r}: value}}), or fix the metric name."
            ) from None

    def saved(self, ctx: SaveContext) -> None:
        value = ctx.metrics.get(self.metric)
        if value is not None and self._improves(value := float(value)):
            self.best = value

    def _improves(self, value: float) -> bool:
        best = self.best
        if best is None:
            return not math.isnan(value)
        if self.mode == "min":
            return value < best - self.min_delta  # False for NaN, like every NaN comparison
        return value > best + self.min_delta

    def state_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "mode": self.mode, "best": self.best}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if (state.get("metric"), state.get("mode")) != (self.metric, self.mode):
            if state:
                warnings.warn(
                    f"{self!r} ignores a saved best for metric {state.get('metric')!r} "
                    f"(mode={state.get('mode')!r}): the policy changed; it starts from no best.",
                    stacklevel=2,
                )
            self.best = None
            return
        self.best = state.get("best")

    def __repr__(self) -> str:
        return (f"OnImprovement(metric={self.metric!r}, mode={self.mode!r}, "
                f"min_delta={self.min_delta!r})")


class When(SavePolicy):
    """Save when ``predicate(ctx)`` is true.

    >>> late = EveryEpochs(1) & When(lambda c: c.epoch >= 5)  # the seed's "second half only"
    >>> late.should_save(SaveContext(step=9, epoch=2, epochs_done=3))
    False
    """

    __slots__ = ("predicate",)

    def __init__(self, predicate: Callable[[SaveContext], bool]) -> None:
        if not callable(predicate):
            raise TypeError(f"When needs a callable predicate(ctx) -> bool, but got {predicate!r}.")
        self.predicate = predicate

    def should_save(self, ctx: SaveContext) -> bool:
        return bool(self.predicate(ctx))

    def __repr__(self) -> str:
        return f"When(predicate={getattr(self.predicate, '__qualname__', self.predicate)!s})"


@dataclass(frozen=True, slots=True)
class Always(SavePolicy):
    """Save at every call.

    >>> Always().should_save(SaveContext(step=0))
    True
    """

    def should_save(self, ctx: SaveContext) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Never(SavePolicy):
    """Never save on its own (saves happen only when forced, e.g. on preemption).

    >>> Never().should_save(SaveContext(step=0))
    False
    """

    def should_save(self, ctx: SaveContext) -> bool:
        return False


class _Composite(SavePolicy):
    __slots__ = ("policies",)

    def __init__(self, *policies: SavePolicy) -> None:
        name = type(self).__name__
        if not policies:
            raise ValueError(f"{name} needs at least one policy, but got none.")
        for i, p in enumerate(policies):
            if not isinstance(p, SavePolicy):
                raise TypeError(f"{name} takes SavePolicy objects, but argument {i} is {p!r}.")
        self.policies: tuple[SavePolicy, ...] = policies

    def state_dict(self) -> dict[str, Any]:
        # string keys: the state goes through JSON
        return {str(i): p.state_dict() for i, p in enumerate(self.policies)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for i, p in enumerate(self.policies):
            p.load_state_dict(state.get(str(i), {}))

    def saved(self, ctx: SaveContext) -> None:
        for p in self.policies:
            p.saved(ctx)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.policies))})"


class AnyOf(_Composite):
    """Save when any child says so; ``a | b`` builds one.

    Every child is asked at every call (no short cut); every child hears of every save
    (:meth:`saved`), so :class:`OnImprovement` also counts the values saved because of another child.

    >>> (Never() | Always()).should_save(SaveContext(step=0))
    True
    """

    __slots__ = ()

    def should_save(self, ctx: SaveContext) -> bool:
        save = False
        for p in self.policies:
            if p.should_save(ctx):
                save = True
        return save


class AllOf(_Composite):
    """Save when every child says so; ``a & b`` builds one.

    Children are asked in order and the first False stops (put cheap gates first); every child
    hears of every save (:meth:`saved`), whichever child decided it.

    >>> (EveryEpochs(1) & Never()).should_save(SaveContext(step=0, epochs_done=1))
    False
    """

    __slots__ = ()

    def should_save(self, ctx: SaveContext) -> bool:
        for p in self.policies:
            if not p.should_save(ctx):
                return False
        return True


# ---------------------------------------------------------------------------------------------
# What to keep
# ---------------------------------------------------------------------------------------------

class CheckpointLike(Protocol):
    """What keep policies read from a checkpoint (``savegame.checkpoint.store.CheckpointInfo``)."""

    @property
    def step(self) -> int: ...
    @property
    def epoch(self) -> int: ...
    @property
    def metrics(self) -> Mapping[str, float]: ...


class KeepPolicy(ABC):
    """Chooses the checkpoints that stay; ``|`` gives the union."""

    __slots__ = ()

    @abstractmethod
    def keep(self, checkpoints: Sequence[CheckpointLike]) -> set[int]:
        """The steps to keep among ``checkpoints``."""

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
