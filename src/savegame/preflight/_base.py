"""``Check``: the extension point of preflight. Every check, built in or yours, is one.

A check has a ``name`` (how a crash of it is reported), says whether it is ``cheap`` (it runs
under ``quick=True``) and whether it ``needs_loss`` (it is skipped when the loss cannot be
computed on the first batch), and ``run(setup)`` returns one :class:`CheckResult` or a list of
them. The runner seeds and times each check, and a check that raises becomes a failed result
named after it: a check never sinks the report. ``savegame.preflight(..., checks=[...])`` runs
yours after the built-in ones (``runner.REGISTRY``, which holds :class:`FunctionCheck` entries).

A check works from the :class:`~savegame.preflight.setup.Setup`: ``setup.batches`` (the first
batches, on ``setup.device``), ``setup.fresh_model()`` and ``setup.fresh_optimizer(model)``
(copies: never train the user's own ``setup.model``; preflight fails "untouched" if anything
changes it), ``setup.split(batch) -> (inputs, targets)``, ``setup.loss(model, batch)``,
``setup.steps`` and ``setup.budget()`` (its ``exhausted()`` says when the time budget is spent).

>>> import torch
>>> from savegame.preflight import Check, CheckResult, preflight
>>> class PositiveTargets(Check):
...     name = "positive targets"
...     def run(self, setup):
...         low = min(float(setup.split(batch)[1].min()) for batch in setup.batches)
...         if low < 0:
...             return CheckResult(self.name, "fail", f"a target is {low:g}", fix="take log1p of y >= 0")
...         return CheckResult(self.name, "pass", f"every target >= 0 (lowest {low:g})")
>>> data = [(torch.randn(16, 4), torch.rand(16, 1)) for _ in range(2)]
>>> def always(setup):
...     return CheckResult("always", "pass", "a function works too")
>>> report = preflight(torch.nn.Linear(4, 1), torch.nn.MSELoss(), data, quick=True,
...                    checks=[PositiveTargets(), FunctionCheck("always", always)])
>>> [c.name for c in report.checks][-2:], report["positive targets"].status
(['positive targets', 'always'], 'pass')
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .report import CheckResult

if TYPE_CHECKING:
    from .setup import Setup

__all__ = ["Check", "FunctionCheck", "CheckNotAvailable", "check_list"]


class CheckNotAvailable(Exception):
    """Raised by :meth:`Check.run` when the check cannot run here (an optional package is not
    installed): the check is reported as skipped with this message, not failed."""


class Check(ABC):
    """One preflight check. Subclass it, set ``name`` (and ``cheap`` / ``needs_loss`` when the
    defaults do not fit) and implement :meth:`run`.

    Attributes:
        name: the check, in the user's words ("loss at init"); must be unique in one preflight.
            Results may carry other names (the "data" check reports "input scale", "label range"...).
        cheap: runs under ``preflight(..., quick=True)`` too (a few forward/backward passes at
            most). False for a check that trains for many steps.
        needs_loss: skipped, with the reason, when the loss cannot be computed on the first
            batch (False for a check that only reads the data).
    """

    name: str = ""
    cheap: bool = True
    needs_loss: bool = True

    @abstractmethod
    def run(self, setup: Setup) -> CheckResult | list[CheckResult]:
        """Check ``setup`` and say what was found: ``CheckResult(self.name, "pass" | "warn" |
        "fail" | "skip", message, fix=..., numbers={...})``, or a list of them. Raise
        :class:`CheckNotAvailable` to be skipped; any other exception is this check's failure."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, cheap={self.cheap!r}, needs_loss={self.needs_loss!r})"


class FunctionCheck(Check):
    """A check from a function ``function(setup) -> CheckResult | list[CheckResult]``, or from its
    ``"module:function"`` path, imported when the check runs (so a built-in check's module, and
    torch, load only when needed; a path whose module is not installed is skipped).

    >>> FunctionCheck("loss at init", "savegame.preflight.checks_loss:check_loss_at_init")
    FunctionCheck(name='loss at init', cheap=True, needs_loss=True)
    """

    def __init__(self, name: str, function: str | Callable[..., Any], *, cheap: bool = True,
                 needs_loss: bool = True) -> None:
        if not (callable(function) or (isinstance(function, str) and ":" in function)):
            raise TypeError(f"FunctionCheck needs a function(setup) or a 'module:function' path, but got "
                            f"{function=!r}.")
        self.name, self.function, self.cheap, self.needs_loss = name, function, cheap, needs_loss

    def run(self, setup: Setup) -> CheckResult | list[CheckResult]:
        return self.load()(setup)

    def load(self) -> Callable[..., Any]:
        """The function; :class:`CheckNotAvailable` when its module (or a package above it) is
        not installed, :class:`_LoadError` wrapping any other import error."""
        if callable(self.function):
            return self.function
        module, _, function = self.function.partition(":")
        try:
            return getattr(importlib.import_module(module), function)
        except ModuleNotFoundError as error:
            if error.name and module.startswith(error.name):
                raise CheckNotAvailable(f"not available: {module} is not installed") from None
            raise _LoadError(error) from error
        except Exception as error:  # noqa: BLE001 - reported as this check's failure
            raise _LoadError(error) from error


class _LoadError(Exception):
    """Loading a check's function failed (the runner reports the wrapped error)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def check_list(checks: Sequence[Check], *, taken: Sequence[str] = ()) -> list[Check]:
    """``checks`` as a list, after checking each is a :class:`Check` with a name of its own
    (not one of ``taken``, the built-in checks' names): a ``TypeError`` or ``ValueError`` that
    says which entry and how to fix it."""
    if isinstance(checks, (Check, str)) or not isinstance(checks, Sequence):
        raise TypeError(f"preflight(checks=...) takes a list of savegame.preflight.Check objects, but got "
                        f"{checks!r}; wrap one check in a list: checks=[MyCheck()].")
    seen = set(taken)
    for i, check in enumerate(checks):
        if not isinstance(check, Check):
            hint = (" A plain function becomes one with FunctionCheck('its name', function)."
                    if callable(check) else "")
            raise TypeError(f"preflight(checks=...) entry {i} is {check!r}, not a savegame.preflight.Check.{hint}")
        if not isinstance(check.name, str) or not check.name:
            raise ValueError(f"preflight(checks=...) entry {i} ({type(check).__name__}) needs a name, but got "
                             f"name={check.name!r}; set name = 'what it checks' on the class or instance.")
        if check.name in seen:
            raise ValueError(f"preflight(checks=...) entry {i} is named {check.name!r}, like another check; "
                             "give each check a name of its own (report[name] finds the first one).")
        seen.add(check.name)
    return list(checks)
