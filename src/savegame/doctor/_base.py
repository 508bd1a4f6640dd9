"""The doctor's extension point: a :class:`Verdict` (a primary verdict: its rule and how it is
shown) or a :class:`FindingRule` (secondary findings), both reading a run's :class:`Curves`.

Every built-in verdict is one ``Verdict`` in the table of ``verdicts.py``; the terminal table,
the HTML report, ``--json``, the live doctor's alarms and ``doctor.json`` all read it from there.
``diagnose(run, rules=[...])``, ``Doctor(rules=[...])`` and ``savegame.diagnose`` take yours: a
verdict is tried among the built-in ones by its ``order`` (the first rule that holds wins; a
verdict named like a built-in one replaces it), a finding rule runs after the built-in findings.
A rule of yours that raises is skipped and reported as a ``rule_error`` finding that names it.

>>> import math
>>> import numpy as np
>>> from savegame.doctor import Finding, RunData, Series, diagnose
>>> def at_chance(d, c):                     # d: the Diagnosis so far, c: the Curves
...     if c.main.end < 0.95 * math.log(10):  # 10 classes: a cross-entropy at chance is ln(10)
...         return False                      # (a rule that does not hold leaves no trace)
...     d.confidence = 0.8
...     d.evidence.append(f"the loss ends at {c.main.end:.3g}, chance level for 10 classes")
...     return True
>>> AT_CHANCE = Verdict(name="at_chance", rule=at_chance, order=150, alarm=True, colour="#ad1457",
...                     description="the loss ends where a guess starts",
...                     suggestions=("check that the labels match the inputs",))
>>> def short(d, c):
...     if c.main.points < 200:
...         yield Finding("short_run", f"only {c.main.points} points of {c.main_tag}", severity="info")
>>> run = RunData("r", None, {"loss/train": Series(np.arange(1, 101), np.full(100, 2.31))})
>>> d = diagnose(run, rules=[AT_CHANCE, FindingRule(name="short_run", find=short)])
>>> d.verdict, d.suggestions, [f.kind for f in d.findings]
('at_chance', ['check that the labels match the inputs'], ['no_validation', 'short_run'])
>>> diagnose(run).verdict                    # without it: the built-in rules only
'plateau'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Union

if TYPE_CHECKING:
    from .curves import RunData, Series
    from .diagnosis import Diagnosis, Finding
    from .features import CurveFeatures
    from .definitions import Decision
    from .quantities import Quantities
    from .signals_read import SignalSummary

__all__ = ["Curves", "Verdict", "FindingRule", "Rule"]

_COLOUR = re.compile(r"#[0-9a-fA-F]{3}(?:[0-9a-fA-F]{3})?|[a-zA-Z]+")  # what a style="background:..." may hold
_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass
class Curves:
    """What a rule reads: one run's curves, measured (``features.py``), and its signals.

    ``main`` is the curve the verdicts are judged on: the training loss when the run has one, else
    the validation loss; a rule only runs when it has at least 5 finite points. ``train`` /
    ``val`` are None when the run has no such loss (``val`` may be ``main``'s own curve when
    there is no training loss). Features are measured on the smoothed curve: ``start``, ``end``,
    ``low`` (and ``low_step``), ``progress``, ``late_share``, ``early_share``, ``noise``,
    ``swing``, ``points``, ``at(step)``; see :class:`~savegame.doctor.features.CurveFeatures`.
    """

    run: RunData
    tags: dict[str, str]                # role -> tag: train_loss, val_loss, train_acc, val_acc, lr
    main: CurveFeatures
    main_tag: str
    main_series: Series
    train: CurveFeatures | None
    val: CurveFeatures | None
    train_series: Series | None
    val_series: Series | None
    acc_train: Series | None
    acc_val: Series | None
    signals: SignalSummary              # the doctor/... signals summed up (update ratio, dead ReLUs...)
    quantities: Quantities | None = None  # the named quantities (quantities.py) every definition reads
    decision: Decision | None = None      # which built-in definition holds (definitions.py), with its numbers


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """One primary verdict: the rule that decides it and everything that shows it.

    Attributes:
        name: the verdict as every output spells it (``Diagnosis.verdict``, ``--json``):
            lowercase words joined by ``_``.
        rule: ``rule(diagnosis, curves) -> bool``: True when the verdict holds, after filling
            ``diagnosis.confidence`` (0 to 1), ``evidence`` (sentences with steps and values),
            ``marks`` (what the plots draw, e.g. ``marks.low_step``) and any suggestion that
            depends on the run; False, changing nothing, otherwise. It need not set
            ``diagnosis.verdict``.
        order: rules are tried by ascending order, the first that holds wins. The built-in ones:
            diverged 100, plateau 200, lr_too_high 300, overfitting 400, lr_too_low 500,
            underfitting 600, still_improving 700, healthy 800 (it always holds: a rule ordered
            after it never runs).
        alarm: the live doctor warns about it (a ``DoctorWarning``) once it held at two
            validations in a row.
        colour: the report's badge colour, ``#rrggbb`` (or ``#rgb``, or a CSS colour name).
        style: the terminal table's rich style (``"bold red"``); None: ``colour``.
        description: one line: what it means.
        suggestions: what to do, added after the rule's own suggestions when it holds.
    """

    name: str
    rule: Callable[[Diagnosis, Curves], bool] = field(repr=False)
    order: float
    alarm: bool = False
    colour: str = "#455a64"
    style: str | None = None
    description: str = ""
    suggestions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(f"Verdict(name=...) must be lowercase words joined by '_' (e.g. 'lr_too_high'), "
                             f"but got name={self.name!r}.")
        if not callable(self.rule):
            raise TypeError(f"Verdict {self.name!r} needs rule=a function (diagnosis, curves) -> bool, "
                            f"but got rule={self.rule!r}.")
        if isinstance(self.order, bool) or not isinstance(self.order, (int, float)) or not math.isfinite(self.order):
            raise ValueError(f"Verdict {self.name!r} needs a finite number order=..., but got order={self.order!r}.")
        if not isinstance(self.colour, str) or not _COLOUR.fullmatch(self.colour):
            raise ValueError(f"Verdict {self.name!r} needs colour='#rrggbb' (or a CSS colour name), but got "
                             f"colour={self.colour!r}.")
        if self.style is not None and not isinstance(self.style, str):
            raise TypeError(f"Verdict {self.name!r} needs style=None or a rich style such as 'bold red', but got "
                            f"style={self.style!r}.")
        suggestions = (self.suggestions,) if isinstance(self.suggestions, str) else tuple(self.suggestions)
        if not all(isinstance(s, str) for s in suggestions):
            raise TypeError(f"Verdict {self.name!r} needs suggestions=a tuple of sentences, but got "
                            f"suggestions={self.suggestions!r}.")
        object.__setattr__(self, "suggestions", suggestions)

    @property
    def terminal_style(self) -> str:
        """The rich style of the terminal table: ``style``, else ``colour``."""
        return self.style if self.style is not None else self.colour


@dataclass(frozen=True, kw_only=True)
class FindingRule:
    """Secondary findings of your own, on top of the verdict.

    Attributes:
        name: the rule, as a ``rule_error`` finding names it should it raise.
        find: ``find(diagnosis, curves) -> iterable of Finding`` (or None): what it noticed. Give
            each finding a stable ``kind``; the live doctor warns once about each new kind of
            severity ``"warn"``.
        description: one line: what it looks for.
    """

    name: str
    find: Callable[[Diagnosis, Curves], Iterable[Finding] | None] = field(repr=False)
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"FindingRule(name=...) needs a name, but got name={self.name!r}.")
        if not callable(self.find):
            raise TypeError(f"FindingRule {self.name!r} needs find=a function (diagnosis, curves) -> findings, "
                            f"but got find={self.find!r}.")


Rule = Union[Verdict, FindingRule]
"""What ``rules=`` takes: verdicts and finding rules, in any order."""
