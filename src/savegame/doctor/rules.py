"""The verdict rules: one primary verdict per run, with evidence, suggestions and findings.

The rules are tried in a fixed order, the first that holds wins: **diverged** (NaN/inf, or the
loss ends far above its minimum, back at or above where it started) · **plateau** (the loss never
really left its starting value) · **lr_too_high** (the loss swings around its trend, or the
validation loss jumps between evaluations) · **overfitting** (validation loss bottomed out and
rose while training loss kept falling) · **lr_too_low** (a slow, almost
straight decline that is still going) · **underfitting** (converged, but train and validation
loss both stayed high and close) · **still_improving** (converging, not there yet) · otherwise
**healthy**. Training signals (``doctor/...`` tags, see ``signals.py``) back the learning-rate
and plateau verdicts when a run has them. Every threshold is a named constant below.

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

import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .curves import RunData, Series, best_checkpoint
from .diagnosis import Diagnosis, Finding
from .features import CurveFeatures, curve_features
from .signals_read import DEAD_RELU, VANISHING, SignalSummary, summarize_signals
from .tags import pick_tags

MIN_POINTS = 5             # fewer finite points than this: cannot judge a trend
CONVERGED_POINTS = 30      # "stuck" verdicts (plateau, underfitting) need at least this many points
EXPLODED = 1.5             # diverged: ends above start x this ...
EXPLODED_OVER_LOW = 3.0    # ... and above its own minimum x this
COLLAPSED_OVER_LOW = 5.0   # or diverged: ends above its minimum x this ...
COLLAPSED_NEAR_START = 0.7  # ... and back above this share of where it started
OVERFIT_RISE = 0.08        # overfitting: validation ends this much (relative) above its minimum ...
OVERFIT_GIVEBACK = 0.25    # ... giving back at least this share of what it had gained
OVERFIT_AFTER = 3          # ... with at least this many validation points after the minimum
PLATEAU_PROGRESS = 0.08    # plateau: less than this share of the starting loss removed, or ...
PLATEAU_SLOW = 0.2         # ... less than this share and no longer falling
LOW_LR_LATE = 0.15         # lr_too_low: the last quarter made at least this share of the drop ...
LOW_LR_EARLY = 0.45        # ... the first quarter at most this share (an almost straight line) ...
LOW_LR_LATE_MAX = 0.6      # ... the last quarter at most this share (more: it sped up, or went up and down) ...
LOW_LR_PROGRESS = 0.6      # ... and less than this share of the loss removed so far
UNDERFIT_PROGRESS = 0.8    # underfitting: less than this share removed (final >= 20% of start)
UNDERFIT_GAP = 0.25        # ... and validation within this (relative) of training ...
VAL_STILL_FALLING = 0.15   # ... and validation not still making this share of its drop in the last quarter
MIN_DROP = 0.05            # (a "share of the drop" means little when the whole drop is under this share)
STILL_LATE = 0.05          # still improving: the last quarter made at least this share of the drop
HIGH_LR_NOISE = 0.45       # lr_too_high: typical jump of the training loss around its trend, relative
HIGH_LR_VAL_NOISE = 0.2    # ... or of the validation loss (logged once per epoch: normally smooth)
NOISY = 0.25               # a "noisy" finding from here
MIN_SWING = 0.05           # ... all of them only when the jumps are also this share of the starting loss
HEALTHY_UPDATE = (1e-4, 1e-2)  # cs231n: update/weight ratios around 1e-3 are healthy


@dataclass
class _Curves:
    run: RunData
    train: CurveFeatures | None
    val: CurveFeatures | None
    train_series: Series | None
    val_series: Series | None
    acc_train: Series | None
    acc_val: Series | None
    signals: SignalSummary


def diagnose(run: RunData, *, train_tag: str | None = None, val_tag: str | None = None) -> Diagnosis:
    """The diagnosis of one run. Never raises on odd data: it says "cannot judge" instead."""
    try:
        return _diagnose(run, train_tag=train_tag, val_tag=val_tag)
    except Exception as error:  # a rule's bug must not cost the other runs (or a training run) anything
        return _cannot(Diagnosis(run=run.name), f"the doctor failed on this run ({type(error).__name__}: {error}); "
                                                "please report it with the run's event files")


def _diagnose(run: RunData, *, train_tag: str | None, val_tag: str | None) -> Diagnosis:
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
    main_tag = tags["train_loss"] if curves.train_series is not None else tags["val_loss"]
    main_series = run.scalars[main_tag]
    main = curves.train if curves.train_series is not None else curves.val
    early_bad = _early_nonfinite(main_series)
    if early_bad is not None:  # broken from (almost) the first step: nothing else to judge
        step, finite = early_bad
        diagnosis.verdict, diagnosis.confidence = "diverged", 0.9
        diagnosis.marks.diverged_step = step
        diagnosis.evidence.append(f"{main_tag} is NaN/inf from step {step:,}, after only {finite} finite value(s)")
        diagnosis.suggestions += ["the loss is broken from the start: check the data for NaN/inf (savegame "
                                  "preflight), the loss for log(0) or division by zero, and the learning rate"]
        return diagnosis
    if main is None or main.points < MIN_POINTS:
        n = int(np.isfinite(main_series.values).sum())
        return _cannot(diagnosis, f"only {n} finite point(s) of {main_tag}; a trend needs at least {MIN_POINTS}")
    for rule in (_diverged, _plateau, _lr_too_high, _overfitting, _lr_too_low, _underfitting,
                 _still_improving, _healthy):
        if rule(diagnosis, curves, main, main_series):
            break
    _secondary(diagnosis, curves, tags)
    if "val_loss" not in tags and diagnosis.judged:
        diagnosis.confidence *= 0.85
        diagnosis.findings.append(Finding(
            "no_validation", "no validation loss found: overfitting cannot be seen; log one "
            "(e.g. loss/val) or name it with --val-tag", severity="info"))
    return diagnosis


# -- the rules, in order -----------------------------------------------------------------------
def _diverged(d: Diagnosis, c: _Curves, main: CurveFeatures, series: Series) -> bool:
    first_bad = _first_nonfinite(c)
    exploded = main.end > max(main.start * EXPLODED, main.low * EXPLODED_OVER_LOW) and main.start > 0
    # fell, then climbed back to the untrained level (a collapse: e.g. the lr jumped)
    collapsed = main.end > main.low * COLLAPSED_OVER_LOW and main.end > main.start * COLLAPSED_NEAR_START
    if first_bad is None and not ((exploded or collapsed) and _sustained(main)):
        return False
    if first_bad is not None:
        step, name, bad = first_bad
        d.marks.diverged_step = step
        d.evidence.append(f"{name} became NaN/inf at step {step:,} and stayed so, after falling to "
                          f"{bad.low:.4g} (smoothed) at step {bad.low_step:,}")
        d.confidence = 0.95
    else:
        level = (max(main.start * EXPLODED, main.low * EXPLODED_OVER_LOW) if exploded else
                 max(main.low * COLLAPSED_OVER_LOW, main.start * COLLAPSED_NEAR_START))
        step = _first_step_above(main, level)
        d.marks.diverged_step = step
        d.evidence.append(f"the loss fell to {main.low:.4g} (smoothed) at step {main.low_step:,}, then "
                          f"{'exploded' if exploded else 'climbed back'} from step {step:,} to {main.end:.4g} "
                          f"at the end (it started at {main.start:.4g})")
        d.confidence = 0.85
    if c.signals.grad_growth is not None and c.signals.grad_growth > 100:
        d.evidence.append(f"gradient norm grew {c.signals.grad_growth:.3g}x during the run")
        d.confidence = min(0.98, d.confidence + 0.05)
    d.verdict = "diverged"
    d.marks.low_step, d.marks.low_value = _low(c)
    best = d.best_checkpoint
    before = (f" (the run's best checkpoint, step {best['step']:,}, is one: Run(..., resume={best['step']}))"
              if best is not None and best["step"] < d.marks.diverged_step else "")
    d.suggestions += [
        f"resume from a checkpoint before step {d.marks.diverged_step:,}{before} with a lower learning rate "
        "(try 1/3 to 1/10 of it) or a warmup",
        "clip gradients: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0) before optimizer.step()",
        "look for log(0), division by zero or a too-small eps; with AMP keep the GradScaler",
    ]
    return True


def _overfitting(d: Diagnosis, c: _Curves, main: CurveFeatures, series: Series) -> bool:
    v = c.val
    if v is None or c.val_series is None or v.points < MIN_POINTS - 1:
        return False
    after = int(np.sum(c.val_series.steps > v.low_step))
    rise = (v.end - v.low) / abs(v.low) if v.low else 0.0
    gained = max(v.high_before_low - v.low, 1e-30)
    if after < OVERFIT_AFTER or rise < OVERFIT_RISE or (v.end - v.low) / gained < OVERFIT_GIVEBACK:
        return False
    t = c.train
    if t is not None and t.end > t.at(v.low_step) * 1.02:
        return False  # training loss rose too: not memorization (lr or data trouble)
    d.verdict = "overfitting"
    d.confidence = min(0.97, 0.6 + rise)
    d.marks.low_step, d.marks.low_value = v.low_step, v.low
    d.evidence.append(f"validation loss (smoothed) bottomed out at {v.low:.4g} at step {v.low_step:,}, then rose "
                      f"{rise:.0%} to {v.end:.4g} by step {int(c.val_series.steps[-1]):,}")
    if t is not None:
        d.evidence.append(f"meanwhile training loss kept falling, from {t.at(v.low_step):.4g} to {t.end:.4g}")
        d.marks.gap_step, d.marks.gap = int(c.val_series.steps[-1]), v.end - t.end
    d.suggestions += [
        _keep_suggestion(d, c.run, "validation"),
        "stop earlier: Run(..., doctor=Doctor(overfit_patience=5)) stops and saves once it is past the minimum",
        "regularize: weight decay (AdamW weight_decay=0.05), dropout, data augmentation; or get more "
        "data / use a smaller model",
    ]
    return True


def _lr_too_high(d: Diagnosis, c: _Curves, main: CurveFeatures, series: Series) -> bool:
    ratio = c.signals.update_ratio
    v = c.val if c.val is not main else None
    # Jumps count relative to the level (noise) and to the whole curve (swing): near a loss of 0 any
    # jitter is a large share of the level, yet harmless.
    noisy = main.noise > HIGH_LR_NOISE and main.swing > MIN_SWING
    val_noisy = v is not None and v.noise > HIGH_LR_VAL_NOISE and v.swing > MIN_SWING
    big_updates = ratio is not None and ratio > HEALTHY_UPDATE[1]
    # Big updates alone are a finding (young nets have them too); with a jumpy loss they confirm it.
    jumpy = ((main.noise > NOISY and main.swing > MIN_SWING)
             or (v is not None and v.noise > HIGH_LR_VAL_NOISE / 2 and v.swing > MIN_SWING))
    if not (noisy or val_noisy or (big_updates and jumpy)):
        return False
    d.verdict = "lr_too_high"
    d.confidence = min(0.95, 0.55 + 0.15 * (noisy + val_noisy + big_updates))
    if noisy:
        low, high = np.percentile(main.raw[len(main.raw) // 2:], [5, 95])
        d.evidence.append(f"the training loss swings between {low:.3g} and {high:.3g} in the second half of "
                          f"the run (typical jump {main.noise:.0%} of its trend)")
    if val_noisy:
        d.evidence.append(f"the validation loss jumps {v.noise:.0%} from one evaluation to the next")
    return _learning_rate_verdict(d, c, ["lower the learning rate 3-10x (or add a warmup and a decay schedule)",
                                         "a larger batch also calms the updates; clip gradients if spikes remain"])


def _learning_rate_verdict(d: Diagnosis, c: _Curves, suggestions: list[str]) -> bool:
    """The common end of both learning-rate verdicts: the signals' word on it, the lowest point."""
    if c.signals.update_ratio is not None:
        d.evidence.append(f"median update/weight ratio {c.signals.update_ratio:.1e} per step (healthy: about 1e-3)")
    d.marks.low_step, d.marks.low_value = _low(c)
    d.suggestions += suggestions
    return True


def _plateau(d: Diagnosis, c: _Curves, main: CurveFeatures, series: Series) -> bool:
    v = c.val if c.val is not main else None
    stuck = main.progress < PLATEAU_PROGRESS or (main.progress < PLATEAU_SLOW and main.late_share < STILL_LATE)
    # training creeps, validation does not move at all: stuck too (what it learns does not generalize)
    stuck = stuck or (v is not None and v.points >= MIN_POINTS and main.progress < PLATEAU_SLOW
                      and v.progress < PLATEAU_PROGRESS / 2)
    if main.points < CONVERGED_POINTS or not stuck:
        return False
    d.verdict = "plateau"
    d.confidence = 0.7 + min(0.25, (PLATEAU_PROGRESS - main.progress))
    d.marks.plateau_start = _flat_since(main)
    if np.ptp(main.raw) == 0:
        d.evidence.append(f"the loss is exactly {main.end:.4g} at every step: is it computed from the model's "
                          "output (not a constant or a detached tensor), and logged from the right variable?")
    else:
        d.evidence.append(f"the loss stayed near its starting value {main.start:.4g} (ended at {main.end:.4g}, "
                          f"{max(main.progress, 0):.0%} lower), flat since step {d.marks.plateau_start:,}")
    s = c.signals
    if s.grad_total_end is not None and s.grad_total_end < VANISHING:
        d.evidence.append(f"gradient norm is tiny ({s.grad_total_end:.1e}): vanishing gradients")
        d.confidence = min(0.97, d.confidence + 0.05)
    if s.dead_relu is not None and s.dead_relu > DEAD_RELU:
        d.evidence.append(f"{s.dead_relu:.0%} of ReLU units are dead in the worst layer")
        d.confidence = min(0.97, d.confidence + 0.05)
    d.suggestions += [
        "the network is not learning: check the gradients reach every layer (savegame preflight)",
        "dead ReLUs or saturated sigmoids/tanh: use a standard init (kaiming), LeakyReLU/GELU, "
        "normalization layers, or a smaller learning rate if the units died after a big step",
        "if the learning rate is tiny or decayed to ~0, raise it",
    ]
    return True


def _lr_too_low(d: Diagnosis, c: _Curves, main: CurveFeatures, series: Series) -> bool:
    ratio = c.signals.update_ratio
    # A minibatch training loss can hide a slow straight fall in its noise; the validation loss
    # (one smooth point per epoch) then shows it.
    v = c.val if c.val is not main and c.val is not None and c.val.points >= 2 * MIN_POINTS else None
    shown_by = next((f for f in (main, v) if f is not None and _straight(f)), None)
    tiny_updates = ratio is not None and ratio < HEALTHY_UPDATE[0] and main.late_share >= STILL_LATE
    if not (shown_by or tiny_updates):
        return False
    d.verdict = "lr_too_low"
    d.confidence = 0.65 + 0.15 * (shown_by is not None) + 0.15 * tiny_updates
    f = shown_by or main
    name = "validation loss" if f is v else "loss"
    d.evidence.append(f"the {name} fell slowly and almost in a straight line, {f.start:.4g} to {f.end:.4g} "
                      f"({f.progress:.0%}), and the last quarter of the run still made "
                      f"{f.late_share:.0%} of that progress")
    return _learning_rate_verdict(d, c, ["raise the learning rate 3-10x (an LR range test finds the largest "
                                         "stable one)", "Adam/AdamW with lr around 1e-3 is a forgiving default"])


def _underfitting(d: Diagnosis, c: _Curves, main: CurveFeatures, series: Series) -> bool:
    t, v = c.train or main, c.val
    if t.points < CONVERGED_POINTS or t.progress >= UNDERFIT_PROGRESS or t.late_share >= STILL_LATE * 2:
        return False
    if v is not None and v is not t and v.late_share >= VAL_STILL_FALLING and v.progress >= MIN_DROP:
        return False  # validation is still falling (by a drop worth the name): not converged yet
    if v is not None and abs(v.end - t.end) > UNDERFIT_GAP * abs(t.end):
        return False  # a clear gap: not a capacity problem
    acc = _last(c.acc_train) if c.acc_train is not None else _last(c.acc_val)
    if acc is not None and acc >= 0.9:  # it fits the data: a high loss is the task's, not the model's
        return False
    d.verdict = "underfitting"
    d.confidence = 0.6 + min(0.3, UNDERFIT_PROGRESS - t.progress)
    gap = "" if v is None else f"; validation ends at {v.end:.4g}, close to it"
    share = f", still {t.end / t.start:.0%} of its start {t.start:.4g}" if t.start > 0 else ""
    d.evidence.append(f"training loss converged at {t.end:.4g}{share}{gap}")
    if acc is not None:
        d.evidence.append(f"{'training' if c.acc_train is not None else 'validation'} accuracy only {acc:.1%}")
    d.marks.low_step, d.marks.low_value = _low(c)
    d.suggestions += ["the model cannot fit even the training data: make it bigger (width/depth) or "
                      "better suited (features, architecture)",
                      "lower regularization (weight decay, dropout) and train longer with a decaying lr"]
    return True


def _still_improving(d: Diagnosis, c: _Curves, main: CurveFeatures, series: Series) -> bool:
    judged = c.val or main
    if judged.late_share < STILL_LATE or judged.end >= judged.start:
        return False
    d.verdict = "still_improving"
    d.confidence = 0.6 + min(0.35, judged.late_share)
    name = "validation" if c.val is not None else "training"
    d.evidence.append(f"{name} loss is still falling: the last quarter of the run made "
                      f"{judged.late_share:.0%} of its progress ({judged.start:.4g} to {judged.end:.4g})")
    d.marks.low_step, d.marks.low_value = _low(c)
    d.suggestions += ["train longer: rerun the same command with more epochs; the run resumes from its "
                      "last checkpoint"]
    return True


def _healthy(d: Diagnosis, c: _Curves, main: CurveFeatures, series: Series) -> bool:
    d.verdict = "healthy"
    d.confidence = 0.8
    d.marks.low_step, d.marks.low_value = _low(c)
    judged = c.val or main
    d.evidence.append(f"{'validation' if c.val else 'training'} loss converged: {judged.start:.4g} to "
                      f"{judged.end:.4g}, flat over the last quarter")
    if d.marks.low_step is not None:
        d.suggestions.append(_keep_suggestion(d, c.run, "validation" if c.val else "training"))
    return True


# -- secondary findings ------------------------------------------------------------------------
def _secondary(d: Diagnosis, c: _Curves, tags: dict[str, str]) -> None:
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
def _curves(run: RunData, tags: dict[str, str]) -> _Curves:
    def series(role: str) -> Series | None:
        tag = tags.get(role)
        return run.scalars.get(tag) if tag else None

    def features(role: str) -> CurveFeatures | None:
        s = series(role)
        return curve_features(s.steps, s.values) if s is not None and len(s) else None

    return _Curves(run=run, train=features("train_loss"), val=features("val_loss"),
                   train_series=series("train_loss"), val_series=series("val_loss"), acc_train=series("train_acc"), acc_val=series("val_acc"),
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


def _first_nonfinite(c: _Curves) -> tuple[int, str, CurveFeatures] | None:
    """(step, name, features) of the first curve that ends in NaN/inf, if any."""
    found = [(f.nonfinite_step, name, f) for f, name in ((c.train, "training loss"), (c.val, "validation loss"))
             if f is not None and f.nonfinite_step is not None]
    return min(found, key=lambda item: item[0]) if found else None


def _straight(f: CurveFeatures) -> bool:
    """A slow fall at an even pace: late as steep as early, and not much of the loss removed."""
    # shares outside [0, 1] (or a last quarter with most of the drop) mean a curve that went up
    # and down or sped up: not an even fall
    return (LOW_LR_LATE <= f.late_share <= LOW_LR_LATE_MAX and 0 <= f.early_share <= LOW_LR_EARLY
            and MIN_DROP <= f.progress < LOW_LR_PROGRESS)


def _flat_since(f: CurveFeatures) -> int:
    """The first step from which the smoothed loss stays within 5% (of its start) of its end."""
    band = 0.05 * abs(f.start) + 1e-12
    outside = np.flatnonzero(np.abs(f.smooth - f.end) > band)
    return int(f.steps[outside[-1] + 1]) if len(outside) and outside[-1] + 1 < len(f.steps) else int(f.steps[0])


def _sustained(f: CurveFeatures) -> bool:
    """At least two points after the minimum are up there: one spike is not a divergence."""
    level = max(f.low * COLLAPSED_OVER_LOW, f.start * COLLAPSED_NEAR_START, f.low * EXPLODED_OVER_LOW)
    return int(np.sum(f.raw[f.steps > f.low_step] > min(level, f.end))) >= 2


def _first_step_above(f: CurveFeatures, level: float) -> int:
    after = np.flatnonzero((f.smooth > level) & (f.steps > f.low_step))
    return int(f.steps[after[0]]) if len(after) else int(f.steps[-1])


def _keep_suggestion(d: Diagnosis, run: RunData, curve: str) -> str:
    """Which checkpoint to keep: the run's best one when it has one (named with its step, value and
    the export command); otherwise the lowest point, and how to keep the best checkpoint from now on."""
    low = f"lowest {curve} loss (smoothed) at step {d.marks.low_step:,}"
    best = d.best_checkpoint
    if best is not None:
        value = f" {best['value']:.4g}" if isinstance(best.get("value"), (int, float)) else ""
        place = shlex.quote(Path(run.path).as_posix()) if run.path is not None else "RUN"
        export = f"savegame export {place} --best -o model.safetensors"
        if best["step"] == d.marks.low_step:
            return (f"the run's best checkpoint is step {best['step']:,} ({best['metric']}{value}), where the "
                    f"smoothed {curve} loss is lowest too: {export}")
        return (f"{low}; the run's best checkpoint is step {best['step']:,} ({best['metric']}{value}, the best "
                f"of the kept checkpoints): {export}")
    tag = d.tags.get("val_loss", "loss/val")
    how = (f"Keep(best=1, metric={tag!r}) with run.save(metrics={{{tag!r}: val_loss}}) keeps the best "
           "checkpoint by validation loss, savegame export RUN --best -o model.safetensors writes it")
    if run.info is not None:  # a savegame run whose checkpoints rank by no metric
        return f"{low}; this run records no best checkpoint (its keep policy ranks none): {how}"
    return f"{low}; these logs have no checkpoints: save with savegame, where {how}"


def _low(c: _Curves) -> tuple[int | None, float | None]:
    f = c.val or c.train
    return (f.low_step, f.low) if f is not None else (None, None)


def _last(s: Series | None) -> float | None:
    if s is None or not len(s):
        return None
    finite = s.values[np.isfinite(s.values)]
    return float(np.median(finite[-3:])) if len(finite) else None
