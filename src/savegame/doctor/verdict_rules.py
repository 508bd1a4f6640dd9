"""The built-in verdict rules, tried in this order (the first that holds wins): **diverged** (NaN/inf,
or the loss ends far above its minimum, back at or above where it started) · **plateau** (the
loss never really left its starting value) · **lr_too_high** (the loss swings around its trend,
or the validation loss jumps between evaluations) · **overfitting** (validation loss bottomed
out and rose while training loss kept falling) · **lr_too_low** (a slow, almost straight decline
that is still going) · **underfitting** (converged, but train and validation loss both stayed
high and close) · **still_improving** (converging, not there yet) · otherwise **healthy**.

Each verdict is in ONE place, here: its rule ``rule(diagnosis, curves) -> bool`` (it fills the
confidence, the evidence, the marks and the suggestions that depend on the run, and holds or
not) and, right below it, its :class:`~savegame.doctor._base.Verdict` row (its place in the order,
whether the live doctor warns, its colours, what it means, its fixed suggestions), gathered in
:data:`BUILTIN`. Everything else (the rules engine, the terminal table, the report, the live
doctor, ``--json``, ``verdicts.py``) reads that tuple; ``test_user_rules.py`` checks that
docs/doctor.md describes every verdict in it. Training signals (``doctor/...`` tags, see ``signals.py``) back the
learning-rate and plateau verdicts when a run has them. Every threshold is a named constant below.

>>> import numpy as np
>>> from savegame.doctor.curves import RunData, Series
>>> from savegame.doctor.diagnosis import Diagnosis
>>> from savegame.doctor.rules import measure
>>> steps = np.arange(1, 101)
>>> curves = measure(RunData("r", None, {"loss": Series(steps, np.full(100, 0.7))}))
>>> d = Diagnosis("r")
>>> plateau(d, curves), d.evidence[0].startswith("the loss is exactly 0.7"), diverged(Diagnosis("r"), curves)
(True, True, False)
"""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np

from ._base import Curves, Verdict
from .curves import RunData, Series
from .diagnosis import Diagnosis
from .features import CurveFeatures
from .signals_read import DEAD_RELU, VANISHING

__all__ = ["diverged", "plateau", "lr_too_high", "overfitting", "lr_too_low", "underfitting", "still_improving",
           "healthy", "BUILTIN", "HEALTHY", "OVERFITTING", "UNDERFITTING", "DIVERGED", "PLATEAU", "LR_TOO_HIGH",
           "LR_TOO_LOW", "STILL_IMPROVING"]

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


def diverged(d: Diagnosis, c: Curves) -> bool:
    main = c.main
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
    d.marks.low_step, d.marks.low_value = _low(c)
    best = d.best_checkpoint
    before = (f" (the run's best checkpoint, step {best['step']:,}, is one: Run(..., resume={best['step']}))"
              if best is not None and best["step"] < d.marks.diverged_step else "")
    d.suggestions.append(f"resume from a checkpoint before step {d.marks.diverged_step:,}{before} with a lower "
                         "learning rate (try 1/3 to 1/10 of it) or a warmup")
    return True


DIVERGED = Verdict(
    name="diverged", rule=diverged, order=100, alarm=True, colour="#b71c1c", style="bold red",
    description="the loss became NaN/inf, or climbed far above its minimum back to where it started",
    suggestions=("clip gradients: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0) before optimizer.step()",
                 "look for log(0), division by zero or a too-small eps; with AMP keep the GradScaler"))


def overfitting(d: Diagnosis, c: Curves) -> bool:
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
    d.confidence = min(0.97, 0.6 + rise)
    d.marks.low_step, d.marks.low_value = v.low_step, v.low
    d.evidence.append(f"validation loss (smoothed) bottomed out at {v.low:.4g} at step {v.low_step:,}, then rose "
                      f"{rise:.0%} to {v.end:.4g} by step {int(c.val_series.steps[-1]):,}")
    if t is not None:
        d.evidence.append(f"meanwhile training loss kept falling, from {t.at(v.low_step):.4g} to {t.end:.4g}")
        d.marks.gap_step, d.marks.gap = int(c.val_series.steps[-1]), v.end - t.end
    d.suggestions.append(_keep_suggestion(d, c.run, "validation"))
    return True


OVERFITTING = Verdict(
    name="overfitting", rule=overfitting, order=400, alarm=True, colour="#ef6c00", style="yellow",
    description="the validation loss bottomed out and rose while the training loss kept falling",
    suggestions=("stop earlier: Run(..., doctor=Doctor(overfit_patience=5)) stops and saves once it is past the "
                 "minimum",
                 "regularize: weight decay (AdamW weight_decay=0.05), dropout, data augmentation; or get more "
                 "data / use a smaller model"))


def lr_too_high(d: Diagnosis, c: Curves) -> bool:
    main = c.main
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
    d.confidence = min(0.95, 0.55 + 0.15 * (noisy + val_noisy + big_updates))
    if noisy:
        low, high = np.percentile(main.raw[len(main.raw) // 2:], [5, 95])
        d.evidence.append(f"the training loss swings between {low:.3g} and {high:.3g} in the second half of "
                          f"the run (typical jump {main.noise:.0%} of its trend)")
    if val_noisy:
        d.evidence.append(f"the validation loss jumps {v.noise:.0%} from one evaluation to the next")
    return _learning_rate_verdict(d, c)


LR_TOO_HIGH = Verdict(
    name="lr_too_high", rule=lr_too_high, order=300, alarm=True, colour="#c62828", style="red",
    description="the loss swings around its trend, or the validation loss jumps between evaluations",
    suggestions=("lower the learning rate 3-10x (or add a warmup and a decay schedule)",
                 "a larger batch also calms the updates; clip gradients if spikes remain"))


def _learning_rate_verdict(d: Diagnosis, c: Curves) -> bool:
    """The common end of both learning-rate verdicts: the signals' word on it, the lowest point."""
    if c.signals.update_ratio is not None:
        d.evidence.append(f"median update/weight ratio {c.signals.update_ratio:.1e} per step (healthy: about 1e-3)")
    d.marks.low_step, d.marks.low_value = _low(c)
    return True


def plateau(d: Diagnosis, c: Curves) -> bool:
    main = c.main
    v = c.val if c.val is not main else None
    stuck = main.progress < PLATEAU_PROGRESS or (main.progress < PLATEAU_SLOW and main.late_share < STILL_LATE)
    # training creeps, validation does not move at all: stuck too (what it learns does not generalize)
    stuck = stuck or (v is not None and v.points >= MIN_POINTS and main.progress < PLATEAU_SLOW
                      and v.progress < PLATEAU_PROGRESS / 2)
    if main.points < CONVERGED_POINTS or not stuck:
        return False
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
    return True


PLATEAU = Verdict(
    name="plateau", rule=plateau, order=200, alarm=True, colour="#6d6d6d", style="yellow",
    description="the loss never really left its starting value: the network is not learning",
    suggestions=("the network is not learning: check the gradients reach every layer (savegame preflight)",
                 "dead ReLUs or saturated sigmoids/tanh: use a standard init (kaiming), LeakyReLU/GELU, "
                 "normalization layers, or a smaller learning rate if the units died after a big step",
                 "if the learning rate is tiny or decayed to ~0, raise it"))


def lr_too_low(d: Diagnosis, c: Curves) -> bool:
    main = c.main
    ratio = c.signals.update_ratio
    # A minibatch training loss can hide a slow straight fall in its noise; the validation loss
    # (one smooth point per epoch) then shows it.
    v = c.val if c.val is not main and c.val is not None and c.val.points >= 2 * MIN_POINTS else None
    shown_by = next((f for f in (main, v) if f is not None and _straight(f)), None)
    tiny_updates = ratio is not None and ratio < HEALTHY_UPDATE[0] and main.late_share >= STILL_LATE
    if not (shown_by or tiny_updates):
        return False
    d.confidence = 0.65 + 0.15 * (shown_by is not None) + 0.15 * tiny_updates
    f = shown_by or main
    name = "validation loss" if f is v else "loss"
    d.evidence.append(f"the {name} fell slowly and almost in a straight line, {f.start:.4g} to {f.end:.4g} "
                      f"({f.progress:.0%}), and the last quarter of the run still made "
                      f"{f.late_share:.0%} of that progress")
    return _learning_rate_verdict(d, c)


LR_TOO_LOW = Verdict(
    name="lr_too_low", rule=lr_too_low, order=500, alarm=True, colour="#6a1b9a", style="yellow",
    description="a slow, almost straight decline that is still going",
    suggestions=("raise the learning rate 3-10x (an LR range test finds the largest stable one)",
                 "Adam/AdamW with lr around 1e-3 is a forgiving default"))


def underfitting(d: Diagnosis, c: Curves) -> bool:
    main = c.main
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
    d.confidence = 0.6 + min(0.3, UNDERFIT_PROGRESS - t.progress)
    gap = "" if v is None else f"; validation ends at {v.end:.4g}, close to it"
    share = f", still {t.end / t.start:.0%} of its start {t.start:.4g}" if t.start > 0 else ""
    d.evidence.append(f"training loss converged at {t.end:.4g}{share}{gap}")
    if acc is not None:
        d.evidence.append(f"{'training' if c.acc_train is not None else 'validation'} accuracy only {acc:.1%}")
    d.marks.low_step, d.marks.low_value = _low(c)
    return True


UNDERFITTING = Verdict(
    name="underfitting", rule=underfitting, order=600, alarm=True, colour="#f9a825", style="yellow",
    description="converged, but the training and validation losses both stayed high and close",
    suggestions=("the model cannot fit even the training data: make it bigger (width/depth) or better suited "
                 "(features, architecture)",
                 "lower regularization (weight decay, dropout) and train longer with a decaying lr"))


def still_improving(d: Diagnosis, c: Curves) -> bool:
    main = c.main
    judged = c.val or main
    if judged.late_share < STILL_LATE or judged.end >= judged.start:
        return False
    d.confidence = 0.6 + min(0.35, judged.late_share)
    name = "validation" if c.val is not None else "training"
    d.evidence.append(f"{name} loss is still falling: the last quarter of the run made "
                      f"{judged.late_share:.0%} of its progress ({judged.start:.4g} to {judged.end:.4g})")
    d.marks.low_step, d.marks.low_value = _low(c)
    return True


STILL_IMPROVING = Verdict(
    name="still_improving", rule=still_improving, order=700, colour="#00897b", style="cyan",
    description="the loss is still clearly falling at the end: not there yet",
    suggestions=("train longer: rerun the same command with more epochs; the run resumes from its last checkpoint",))


def healthy(d: Diagnosis, c: Curves) -> bool:
    main = c.main
    d.confidence = 0.8
    d.marks.low_step, d.marks.low_value = _low(c)
    judged = c.val or main
    d.evidence.append(f"{'validation' if c.val else 'training'} loss converged: {judged.start:.4g} to "
                      f"{judged.end:.4g}, flat over the last quarter")
    if d.marks.low_step is not None:
        d.suggestions.append(_keep_suggestion(d, c.run, "validation" if c.val else "training"))
    return True


# -- helpers -----------------------------------------------------------------------------------
def _first_nonfinite(c: Curves) -> tuple[int, str, CurveFeatures] | None:
    """(step, name, features) of the first curve that ends in NaN/inf, if any."""
    found = [(f.nonfinite_step, name, f) for f, name in ((c.train, "training loss"), (c.val, "validation loss"))
             if f is not None and f.nonfinite_step is not None]
    return min(found, key=lambda item: item[0]) if found else None


HEALTHY = Verdict(
    name="healthy", rule=healthy, order=800, colour="#2e7d32", style="green",
    description="the loss converged and nothing else held: nothing is wrong")


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


def _low(c: Curves) -> tuple[int | None, float | None]:
    f = c.val or c.train
    return (f.low_step, f.low) if f is not None else (None, None)


def _last(s: Series | None) -> float | None:
    if s is None or not len(s):
        return None
    finite = s.values[np.isfinite(s.values)]
    return float(np.median(finite[-3:])) if len(finite) else None


# Every row above, in the order of VERDICTS (the badge colours: red for broken, amber for wasteful,
# green for fine).
BUILTIN: tuple[Verdict, ...] = (HEALTHY, OVERFITTING, UNDERFITTING, DIVERGED, PLATEAU, LR_TOO_HIGH, LR_TOO_LOW,
                                STILL_IMPROVING)
"""Every built-in verdict (in the order of :data:`VERDICTS`; the rules try them by ``order``)."""
