"""The diagnosis of one run: one primary verdict, with evidence, suggestions and findings.

``diagnose`` measures the curves (:func:`measure`), then tries the verdicts of the table
(``verdicts.py``: diverged, plateau, lr_too_high, overfitting, lr_too_low, underfitting,
still_improving, otherwise healthy; the rules are in ``verdict_rules.py``) in order, the first
that holds wins, and adds the secondary findings. ``rules=[...]`` adds verdicts and finding
rules of your own (``_base.py``).

"Best" means one thing: the run's best checkpoint, the kept one ``savegame export RUN --best``
writes (``Diagnosis.best_checkpoint``, from a savegame run's ``run.json``). The minimum the rules
read off a curve is "the lowest (smoothed) loss at step N" (``Marks.low_step``): curves are
smoothed with a running median, and that step's checkpoint may well have been deleted.

>>> import numpy as np
>>> from savegame.doctor.curves import RunData, Series
>>> steps = np.arange(1, 201)
>>> train = 2 * np.exp(-steps / 30) + 0.05
>>> val = 2 * np.exp(-steps / 30) + 0.2 + np.maximum(steps - 80, 0) * 0.01
>>> run = RunData("r", None, {"loss/train": Series(steps, train), "loss/val": Series(steps, val)})
>>> d = diagnose(run)
>>> d.verdict, 75 < d.marks.low_step < 90, d.best_checkpoint is None   # no run.json: no checkpoints
('overfitting', True, True)
>>> d.suggestions[0].startswith(f"lowest validation loss (smoothed) at step {d.marks.low_step:,}")
True
"""

from __future__ import annotations

import copy
from typing import Iterable

import numpy as np

from ._base import Curves, FindingRule, Verdict
from .curves import RunData, Series, best_checkpoint
from .definitions import decide
from .diagnosis import Diagnosis, Finding
from .features import CurveFeatures, curve_features
from .quantities import quantities
from .signals_read import summarize_signals
from .tags import pick_tags
from .verdict_rules import MIN_POINTS, MIN_SWING, NOISY  # every threshold is named in verdict_rules.py
from .verdicts import BUILTIN, DIVERGED, verdict_table

__all__ = ["diagnose", "measure"]

_BUILTIN_RULES = frozenset(v.rule for v in BUILTIN)  # they change nothing unless they hold: no copy needed


def diagnose(run: RunData, *, train_tag: str | None = None, val_tag: str | None = None,
             rules: Iterable[Verdict | FindingRule] = (), classes: int | None = None) -> Diagnosis:
    """The diagnosis of one run. Never raises on odd data: it says "cannot judge" instead.

    ``train_tag`` / ``val_tag`` name the losses when their tags are not recognized. ``rules``
    adds :class:`~savegame.doctor.Verdict` and :class:`~savegame.doctor.FindingRule` objects of
    your own to the built-in ones (see ``savegame.doctor._base``); a rule of yours that raises
    is skipped and named by a ``rule_error`` finding. ``classes`` (C) sets the chance level ``ln C``
    when the run's config does not name it (see ``quantities.py``). Raises ``TypeError`` /
    ``ValueError`` only for a malformed ``rules`` list or ``classes``, before reading anything."""
    verdicts, finders = verdict_table(rules)
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int) or classes < 2):
        raise ValueError(f"classes={classes!r}: give the number of classes, an int of at least 2 (or None)")
    try:
        return _diagnose(run, train_tag=train_tag, val_tag=val_tag, verdicts=verdicts, finders=finders,
                         classes=classes)
    except Exception as error:  # a rule's bug must not cost the other runs (or a training run) anything
        return _cannot(Diagnosis(run=run.name), f"the doctor failed on this run ({type(error).__name__}: {error}); "
                                                "please report it with the run's event files")


def measure(run: RunData, *, train_tag: str | None = None, val_tag: str | None = None) -> Curves:
    """The :class:`~savegame.doctor._base.Curves` the rules read for ``run``, its tags picked as
    :func:`diagnose` picks them: to try a rule of your own on a run. ``ValueError`` when no tag
    looks like a loss (``diagnose`` says "cannot judge" there)."""
    tags = pick_tags({t: len(s) for t, s in run.scalars.items()}, train_tag=train_tag, val_tag=val_tag)
    if "train_loss" not in tags and "val_loss" not in tags:
        raise ValueError(f"no tag of run {run.name!r} looks like a training or validation loss (it has "
                         f"{_tag_list(run)}); name them with train_tag= / val_tag=.")
    return _curves(run, tags)


def _diagnose(run: RunData, *, train_tag: str | None, val_tag: str | None, verdicts: list[Verdict],
              finders: list[FindingRule], classes: int | None = None) -> Diagnosis:
    diagnosis = Diagnosis(run=run.name)
    diagnosis.findings.extend(run.notes)
    try:
        diagnosis.best_checkpoint = best_checkpoint(run)
    except OSError:  # an unreadable checkpoints folder: judge the curves all the same
        diagnosis.best_checkpoint = None
    missing = [t for t in (train_tag, val_tag) if t is not None and t not in run.scalars]
    if missing:
        return _cannot(diagnosis, f"no scalar tag {missing[0]!r} in this run; it has {_tag_list(run)}")
    tags = pick_tags({t: len(s) for t, s in run.scalars.items()}, train_tag=train_tag, val_tag=val_tag)
    diagnosis.tags = tags
    if "train_loss" not in tags and "val_loss" not in tags:
        if not run.scalars:
            return _cannot(diagnosis, "the run has no scalar data")
        return _cannot(diagnosis, f"no tag looks like a training or validation loss (it has "
                                  f"{_tag_list(run)}); name them with --train-tag / --val-tag")
    curves = _curves(run, tags)
    main, main_tag, main_series = curves.main, curves.main_tag, curves.main_series
    early_bad = _early_nonfinite(main_series)
    if early_bad is not None:  # broken from (almost) the first step: nothing else to judge
        step, finite = early_bad
        diagnosis.verdict, diagnosis.verdict_info, diagnosis.confidence = DIVERGED.name, DIVERGED, 0.9
        diagnosis.marks.diverged_step = step
        diagnosis.evidence.append(f"{main_tag} is NaN/inf from step {step:,}, after only {finite} finite value(s)")
        diagnosis.suggestions += ["the loss is broken from the start: check the data for NaN/inf (savegame "
                                  "preflight), the loss for log(0) or division by zero, and the learning rate"]
        return diagnosis
    if main is None or main.points < MIN_POINTS:
        n = int(np.isfinite(main_series.values).sum())
        return _cannot(diagnosis, f"only {n} finite point(s) of {main_tag}; a trend needs at least {MIN_POINTS}")
    curves.quantities = quantities(curves, classes=classes)
    diagnosis.quantities = curves.quantities.to_dict()
    curves.decision = decide(curves.quantities, among={v.name for v in verdicts if v.rule in _BUILTIN_RULES})
    for verdict in verdicts:
        held, diagnosis = _try(verdict, diagnosis, curves)
        if held:
            diagnosis.verdict, diagnosis.verdict_info = verdict.name, verdict
            diagnosis.suggestions += verdict.suggestions
            break
    else:  # no verdict holds: the definitions say why the logs cannot support one
        _cannot(diagnosis, curves.decision.why)
        diagnosis.decided_by = dict(curves.decision.numbers)
    _secondary(diagnosis, curves, tags)
    if "val_loss" not in tags and diagnosis.judged:
        diagnosis.confidence *= 0.85
        diagnosis.findings.append(Finding(
            "no_validation", "no validation loss found: overfitting cannot be seen; log one "
            "(e.g. loss/val) or name it with --val-tag", severity="info"))
    for finder in finders:
        diagnosis.findings.extend(_find(finder, diagnosis, curves))
    return diagnosis


def _try(verdict: Verdict, d: Diagnosis, c: Curves) -> tuple[bool, Diagnosis]:
    """(whether the verdict's rule holds, the diagnosis it filled). The built-in rules change
    nothing unless they hold; a user's rule works on a copy, so one that does not hold (or
    raises: a ``rule_error`` finding) leaves no trace."""
    if verdict.rule in _BUILTIN_RULES:
        return bool(verdict.rule(d, c)), d
    trial = copy.deepcopy(d)
    try:
        held = bool(verdict.rule(trial, c))
    except Exception as error:  # noqa: BLE001 - the user's rule: skipped, said, never fatal
        d.findings.append(_rule_error("verdict", verdict.name, error))
        return False, d
    return (True, trial) if held else (False, d)


def _find(finder: FindingRule, d: Diagnosis, c: Curves) -> list[Finding]:
    try:
        found = list(finder.find(d, c) or ())
        bad = [f for f in found if not isinstance(f, Finding)]
        if bad:
            raise TypeError(f"it gave {type(bad[0]).__name__}, not savegame.doctor.Finding")
    except Exception as error:  # noqa: BLE001 - the user's rule: skipped, said, never fatal
        return [_rule_error("finding rule", finder.name, error)]
    return found


def _rule_error(what: str, name: str, error: BaseException) -> Finding:
    return Finding("rule_error", f"the {what} {name!r} failed ({type(error).__name__}: {error}) and was skipped; "
                                 "fix it (savegame.doctor.rules.measure(run) gives the curves it reads)")


# -- secondary findings ------------------------------------------------------------------------
def _secondary(d: Diagnosis, c: Curves, tags: dict[str, str]) -> None:
    for features, role in ((c.train, "train_loss"), (c.val, "val_loss")):
        if features is not None and features.nonfinite_count:
            recovered = "" if features.nonfinite_step is not None else "; the curve recovered, they are skipped"
            d.findings.append(Finding("nan", f"{tags[role]} holds {features.nonfinite_count} NaN/inf value(s), "
                                             f"the first at step {features.first_nonfinite_step:,}{recovered}",
                                      step=features.first_nonfinite_step))
    if c.train is not None and c.train.noise > NOISY and c.train.swing > MIN_SWING / 5:
        d.findings.append(Finding("noisy", f"{tags['train_loss']} is noisy: it jumps {c.train.noise:.0%} around "
                                           "its trend (small batches or a high learning rate)", severity="info"))
    if c.train is not None and c.val is not None and c.val_series is not None and d.verdict != "diverged":
        step = int(c.val.steps[-1])  # the last finite validation
        gap = c.val.end - c.train.at(step)
        d.marks.gap_step, d.marks.gap = step, gap
        if c.train.end > 0 and gap > 0.5 * c.train.end and gap > 0.02:
            d.findings.append(Finding("gap", f"validation loss {c.val.end:.4g} is {c.val.end / c.train.end:.1f}x "
                                             f"the training loss {c.train.end:.4g} at step {step:,}", step=step,
                                      severity="info"))
        elif gap < -0.1 * abs(c.train.end):
            d.findings.append(Finding("val_below_train", f"validation loss {c.val.end:.4g} sits below training "
                                      f"loss {c.train.end:.4g}: expected with dropout or augmentation on in "
                                      "training", step=step, severity="info"))
    d.findings.extend(c.signals.findings)


# -- helpers -----------------------------------------------------------------------------------
def _curves(run: RunData, tags: dict[str, str]) -> Curves:
    def series(role: str) -> Series | None:
        tag = tags.get(role)
        return run.scalars.get(tag) if tag else None

    def features(role: str) -> CurveFeatures | None:
        s = series(role)
        return curve_features(s.steps, s.values) if s is not None and len(s) else None

    train, val, train_series = features("train_loss"), features("val_loss"), series("train_loss")
    # the main curve: the training loss when there is one, else the validation loss
    main_tag = tags["train_loss"] if train_series is not None else tags["val_loss"]
    return Curves(run=run, tags=tags, main=train if train_series is not None else val, main_tag=main_tag,
                  main_series=run.scalars[main_tag], train=train, val=val, train_series=train_series,
                  val_series=series("val_loss"), acc_train=series("train_acc"), acc_val=series("val_acc"),
                  signals=summarize_signals(run.scalars))


def _cannot(d: Diagnosis, why: str) -> Diagnosis:
    d.verdict, d.confidence, d.cannot_judge = None, 0.0, why
    return d


def _tag_list(run: RunData) -> str:
    tags = sorted(run.scalars)
    return ", ".join(tags[:12]) + (f" and {len(tags) - 12} more" if len(tags) > 12 else "") if tags else "no tags"


def _early_nonfinite(series: Series) -> tuple[int, int] | None:
    """(step, finite points before it) when the series ends in NaN/inf that began so early that
    too few finite points are left to judge."""
    finite = np.isfinite(series.values)
    if not len(finite) or finite[-1]:
        return None  # it ends finite: any NaN/inf was transient
    cut = len(finite)
    while cut > 0 and not finite[cut - 1]:
        cut -= 1
    if int(finite[:cut].sum()) < MIN_POINTS:
        return int(series.steps[cut]), int(finite[:cut].sum())
    return None
