"""The verdict table: the built-in verdicts (each defined once, rule and row together, in
``verdict_rules.py``) with a user's ``rules=[...]`` added, and what the outputs ask of a verdict.
The rules (``rules.py``), the terminal table (``command.py``), the HTML report (``html.py``), the
live doctor (``live.py``) and ``--json`` read verdicts from here; a verdict of your own is one
``Verdict`` passed as ``rules=[...]``.

>>> [v.name for v in verdict_table()[0]]          # the order the rules are tried in
['diverged', 'plateau', 'lr_too_high', 'overfitting', 'lr_too_low', 'underfitting', 'still_improving', 'healthy']
>>> from savegame.doctor.diagnosis import Diagnosis
>>> badge_colour(Diagnosis("r", verdict="overfitting")), terminal_style(Diagnosis("r", verdict="diverged"))
('#ef6c00', 'bold red')
>>> [v.name for v in BUILTIN if v.alarm]
['overfitting', 'underfitting', 'diverged', 'plateau', 'lr_too_high', 'lr_too_low']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from ._base import FindingRule, Verdict
from .verdict_rules import (BUILTIN, DIVERGED, HEALTHY, LR_TOO_HIGH, LR_TOO_LOW, OVERFITTING, PLATEAU,
                            STILL_IMPROVING, UNDERFITTING)

if TYPE_CHECKING:
    from .diagnosis import Diagnosis

__all__ = ["BUILTIN", "VERDICTS", "CANNOT_JUDGE_COLOUR", "verdict_table", "verdict_of", "badge_colour",
           "terminal_style", "is_alarm", "HEALTHY", "OVERFITTING", "UNDERFITTING", "DIVERGED", "PLATEAU",
           "LR_TOO_HIGH", "LR_TOO_LOW", "STILL_IMPROVING"]

VERDICTS: tuple[str, ...] = tuple(v.name for v in BUILTIN)
"""Every built-in primary verdict's name."""
CANNOT_JUDGE_COLOUR = "#455a64"  # the badge of "cannot judge" (and of a verdict the table does not know)
_BY_NAME = {v.name: v for v in BUILTIN}


def verdict_table(rules: Iterable[Verdict | FindingRule] = ()) -> tuple[list[Verdict], list[FindingRule]]:
    """(the verdicts in the order their rules are tried, the user's finding rules): the built-in
    verdicts with ``rules`` added; a user verdict named like a built-in one replaces it, and one
    of the same order as another comes after it. ``TypeError`` / ``ValueError`` for what is no
    rule, or for two user rules of one name."""
    if isinstance(rules, (Verdict, FindingRule, str)) or not isinstance(rules, Iterable):
        raise TypeError(f"rules=... takes a list of savegame.doctor.Verdict and FindingRule objects, but got "
                        f"{rules!r}; wrap one rule in a list: rules=[my_verdict].")
    verdicts, finders, names = dict(_BY_NAME), [], set()
    for i, rule in enumerate(rules):
        if not isinstance(rule, (Verdict, FindingRule)):
            raise TypeError(f"rules=... entry {i} is {rule!r}, not a savegame.doctor.Verdict or FindingRule; a "
                            "function becomes one with Verdict(name=..., rule=function, order=...) or "
                            "FindingRule(name=..., find=function).")
        if rule.name in names:
            raise ValueError(f"rules=... entry {i} is named {rule.name!r}, like an earlier one; give each rule a "
                             "name of its own.")
        names.add(rule.name)
        if isinstance(rule, Verdict):
            verdicts[rule.name] = rule  # replaces the built-in one of that name, tried at its own order
        else:
            finders.append(rule)
    return sorted(verdicts.values(), key=lambda v: v.order), finders


def verdict_of(diagnosis: Diagnosis) -> Verdict | None:
    """The :class:`Verdict` behind ``diagnosis.verdict``: the one its rule held for (a user's
    included), else the built-in one of that name; None when not judged or unknown."""
    if not diagnosis.judged:
        return None
    found = diagnosis.verdict_info
    if found is not None and found.name == diagnosis.verdict:
        return found
    return _BY_NAME.get(diagnosis.verdict)


def badge_colour(diagnosis: Diagnosis) -> str:
    """The report's badge colour of the diagnosis's verdict (:data:`CANNOT_JUDGE_COLOUR` without one)."""
    verdict = verdict_of(diagnosis)
    return verdict.colour if verdict is not None else CANNOT_JUDGE_COLOUR


def terminal_style(diagnosis: Diagnosis) -> str:
    """The terminal table's rich style of the diagnosis's verdict (``""`` without one)."""
    verdict = verdict_of(diagnosis)
    return verdict.terminal_style if verdict is not None else ""


def is_alarm(diagnosis: Diagnosis) -> bool:
    """Whether the live doctor warns about the diagnosis's verdict."""
    verdict = verdict_of(diagnosis)
    return verdict is not None and verdict.alarm
