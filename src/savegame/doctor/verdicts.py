"""The verdict table: every built-in verdict as ONE :class:`~savegame.doctor._base.Verdict` (its
rule, its place in the order, whether the live doctor warns about it, its colours, what it means
and what to do). The rules (``rules.py``), the terminal table (``command.py``), the HTML report
(``html.py``), the live doctor (``live.py``) and ``--json`` read verdicts from here, so adding a
built-in verdict is a rule function in ``verdict_rules.py`` and a row below (and its section in
docs/doctor.md); a verdict of your own is one ``Verdict`` passed as ``rules=[...]``.

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
from .verdict_rules import (diverged, healthy, lr_too_high, lr_too_low, overfitting, plateau,
                            still_improving, underfitting)

if TYPE_CHECKING:
    from .diagnosis import Diagnosis

__all__ = ["BUILTIN", "VERDICTS", "CANNOT_JUDGE_COLOUR", "verdict_table", "verdict_of", "badge_colour",
           "terminal_style", "is_alarm", "HEALTHY", "OVERFITTING", "UNDERFITTING", "DIVERGED", "PLATEAU",
           "LR_TOO_HIGH", "LR_TOO_LOW", "STILL_IMPROVING"]

# The badge colours: red for broken, amber for wasteful, green for fine.
HEALTHY = Verdict(
    name="healthy", rule=healthy, order=800, colour="#2e7d32", style="green",
    description="the loss converged and nothing else held: nothing is wrong")
OVERFITTING = Verdict(
    name="overfitting", rule=overfitting, order=400, alarm=True, colour="#ef6c00", style="yellow",
    description="the validation loss bottomed out and rose while the training loss kept falling",
    suggestions=("stop earlier: Run(..., doctor=Doctor(overfit_patience=5)) stops and saves once it is past the "
                 "minimum",
                 "regularize: weight decay (AdamW weight_decay=0.05), dropout, data augmentation; or get more "
                 "data / use a smaller model"))
UNDERFITTING = Verdict(
    name="underfitting", rule=underfitting, order=600, alarm=True, colour="#f9a825", style="yellow",
    description="converged, but the training and validation losses both stayed high and close",
    suggestions=("the model cannot fit even the training data: make it bigger (width/depth) or better suited "
                 "(features, architecture)",
                 "lower regularization (weight decay, dropout) and train longer with a decaying lr"))
DIVERGED = Verdict(
    name="diverged", rule=diverged, order=100, alarm=True, colour="#b71c1c", style="bold red",
    description="the loss became NaN/inf, or climbed far above its minimum back to where it started",
    suggestions=("clip gradients: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0) before optimizer.step()",
                 "look for log(0), division by zero or a too-small eps; with AMP keep the GradScaler"))
PLATEAU = Verdict(
    name="plateau", rule=plateau, order=200, alarm=True, colour="#6d6d6d", style="yellow",
    description="the loss never really left its starting value: the network is not learning",
    suggestions=("the network is not learning: check the gradients reach every layer (savegame preflight)",
                 "dead ReLUs or saturated sigmoids/tanh: use a standard init (kaiming), LeakyReLU/GELU, "
                 "normalization layers, or a smaller learning rate if the units died after a big step",
                 "if the learning rate is tiny or decayed to ~0, raise it"))
LR_TOO_HIGH = Verdict(
    name="lr_too_high", rule=lr_too_high, order=300, alarm=True, colour="#c62828", style="red",
    description="the loss swings around its trend, or the validation loss jumps between evaluations",
    suggestions=("lower the learning rate 3-10x (or add a warmup and a decay schedule)",
                 "a larger batch also calms the updates; clip gradients if spikes remain"))
LR_TOO_LOW = Verdict(
    name="lr_too_low", rule=lr_too_low, order=500, alarm=True, colour="#6a1b9a", style="yellow",
    description="a slow, almost straight decline that is still going",
    suggestions=("raise the learning rate 3-10x (an LR range test finds the largest stable one)",
                 "Adam/AdamW with lr around 1e-3 is a forgiving default"))
STILL_IMPROVING = Verdict(
    name="still_improving", rule=still_improving, order=700, colour="#00897b", style="cyan",
    description="the loss is still clearly falling at the end: not there yet",
    suggestions=("train longer: rerun the same command with more epochs; the run resumes from its last checkpoint",))

BUILTIN: tuple[Verdict, ...] = (HEALTHY, OVERFITTING, UNDERFITTING, DIVERGED, PLATEAU, LR_TOO_HIGH, LR_TOO_LOW,
                                STILL_IMPROVING)
"""Every built-in verdict (in the order of :data:`VERDICTS`; the rules try them by ``order``)."""
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
