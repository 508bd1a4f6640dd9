"""When to save: small :class:`SavePolicy` objects that compose with ``|`` and ``&``.

A save policy answers "save now?" from a :class:`SaveContext` at each ``run.save()``; what a
save changes in its state happens in :meth:`SavePolicy.saved`, once the checkpoint is written.

>>> when = EverySteps(500) | OnImprovement("loss/val")
>>> when
AnyOf(EverySteps(n=500), OnImprovement(metric='loss/val', mode='min', min_delta=0.0))
>>> when.should_save(SaveContext(step=120, metrics={"loss/val": 0.9}))   # first value seen
True

Cost of a skip (CPython 3.11, a noisy 2-core dev box): ``EverySteps`` ~0.1 µs, a two-policy
``AnyOf`` ~0.3-0.5 µs; building the frozen ``SaveContext`` itself costs more, ~2-4 µs::

    python -m timeit -s "from savegame.checkpoint.policy import EverySteps, EveryEpochs, SaveContext" \\
        -s "p = EverySteps(500) | EveryEpochs(1); c = SaveContext(step=7, last_save_step=0)" \\
        "p.should_save(c)"
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from savegame.errors import MetricNotFoundError
from savegame.messages import warn

from ._policy_args import _check_mode, _flat, _positive, _positive_int

__all__ = [
    "SaveContext", "SavePolicy", "EverySteps", "EveryEpochs", "EverySeconds", "OnImprovement",
    "When", "Always", "Never", "AnyOf", "AllOf", "MetricNotFoundError",
]


_NO_METRICS: Mapping[str, float] = MappingProxyType({})  # shared: a default allocates nothing


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

    #: True when :meth:`should_save` reads only the step and epoch counters (the context's and
    #: the last save's), which every rank of a torchrun job has the same: each rank then asks its
    #: own policy, and a ``run.save()`` that does not save costs no collective. A policy that reads
    #: the clock or the metrics leaves it False, and rank 0's answer goes to every rank.
    decided_by_counters = False

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



@dataclass(frozen=True, slots=True)
class EverySteps(SavePolicy):
    """Save when a multiple of ``n`` steps was crossed since the last save.

    Works when ``run.save()`` is not called at every step (step 1003 after a save at 998 saves).

    >>> EverySteps(500).should_save(SaveContext(step=1003, last_save_step=998))
    True
    """

    n: int
    decided_by_counters = True

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
    decided_by_counters = True

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
                warn(
                    f"{self!r} ignores a saved best for metric {state.get('metric')!r} "
                    f"(mode={state.get('mode')!r}): the policy changed; it starts from no best.",
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

    decided_by_counters = True

    def should_save(self, ctx: SaveContext) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Never(SavePolicy):
    """Never save on its own (saves happen only when forced, e.g. on preemption).

    >>> Never().should_save(SaveContext(step=0))
    False
    """

    decided_by_counters = True

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

    @property
    def decided_by_counters(self) -> bool:  # type: ignore[override]
        return all(p.decided_by_counters for p in self.policies)

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

