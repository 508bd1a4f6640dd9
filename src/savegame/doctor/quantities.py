"""The named quantities every verdict is defined over, computed once per run.

A person reading a learning curve asks a few questions before naming what went wrong: where did
the loss start, where would a blind guess sit (the **chance level**: ``ln C`` for a cross-entropy
over C classes, accuracy ``1/C``), how low did training and validation get and where did they
end, how far apart are they (the **generalization gap**), is the end still moving, how noisy is
it, did anything go NaN, is the accuracy any better than chance. :class:`Quantities` holds those
answers; ``docs/doctor.md`` states each verdict over them, and the verdict's evidence quotes them.

The chance level is known when the caller names the classes (``classes=``, ``--classes``), when
the run's config or hparams do (``num_classes``, ``n_classes``, ``classes``, ``num_labels``), or
when two independent readings agree: the starting loss is within 10% of ``ln C`` and the first
accuracy within a third of ``1/C`` for the same C. Otherwise it is unknown, and the definitions
fall back on the starting loss (which is where an untrained classifier sits).

>>> import numpy as np
>>> from savegame.doctor.curves import RunData, Series
>>> from savegame.doctor.rules import measure
>>> steps = np.arange(1, 201)
>>> train = np.log(10) * np.exp(-steps / 40) + 1e-3
>>> val = np.log(10) * np.exp(-steps / 40) + 0.3
>>> run = RunData("r", None, {"loss/train": Series(steps, train), "loss/val": Series(steps, val)},
...               hparams={"num_classes": 10})
>>> q = quantities(measure(run))
>>> round(q.chance_loss, 3), q.chance_source, round(q.start, 2), round(q.gap_ratio)
(2.303, 'num_classes=10 in the hparams', 2.19, 17)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from ._base import Curves
from .curves import Series
from .features import CurveFeatures

__all__ = ["Quantities", "quantities", "tail_start", "CLASS_KEYS", "TAIL"]

CLASS_KEYS = ("num_classes", "n_classes", "classes", "num_labels", "nclasses", "n_class")
TAIL = 0.2  # "the end of the run": its last fifth of steps, where trend and noise are read


@dataclass
class Quantities:
    """One run's named quantities (None: the logs do not hold it). Losses are smoothed values of
    ``features.py`` (a running median), so one spike does not move them."""

    start: float                      # the main loss's first value (median of the first 3)
    peak: float                       # the main loss's highest finite value (raw), and its step
    peak_step: int
    best_before_peak: float           # the main loss's lowest smoothed value before its peak / start: it
                                      # had learned (well under 1) before it jumped, or not (about 1)
    train_best: float | None          # lowest smoothed training loss
    train_final: float | None
    val_best: float | None            # lowest smoothed validation loss, and its step
    val_best_step: int | None
    val_final: float | None
    val_rise: float | None            # (val_final - val_best) / (start - val_best): share of the gain given back
    train_fall_after: float | None    # (train at the validation best - train_final) / start: training kept
                                      # falling (+) after validation's best, or not
    gap: float | None                 # val_final - the training loss at the last validation
    gap_ratio: float | None           # val_final / that training loss
    gap_share: float | None           # gap / start: the gap against the whole scale of the problem
    progress: float                   # (start - final) / start, main loss
    val_progress: float | None        # the same for the validation loss
    tail_drop: float                  # (value at 80% of steps - final) / start: still falling (+), rising (-)
    tail_share: float | None          # the last fifth's share of the whole drop
    tail_gain: float                  # (value at 80% of steps - final) / |final| of the validation loss (else
                                      # the main one): what the last fifth cut off the level it ends at
    noise: float                      # median |raw - smooth| / level over the second half, main loss
    val_bounce: float | None          # the validation loss's path length / the shortest path from its start
                                      # down to its best and on to its end: 1 for a curve that goes
                                      # straight there, 2 when it travels twice that (it bounces)
    val_jump: float | None            # mean |change| between evaluations over the validation loss's second
                                      # half / start: how big its bounces are against the whole curve
    swing: float                      # 90th percentile |raw - smooth| over the second half / start
    nonfinite: int                    # NaN/inf values in either loss
    ends_nonfinite: bool              # the training or validation loss ends NaN/inf (never recovered)
    first_nonfinite_step: int | None
    classes: int | None               # C, where known
    chance_loss: float | None         # ln C, where known
    chance_source: str | None         # how C was found
    final_over_chance: float | None   # main final / ln C (about 1: stuck at a guess)
    acc_final: float | None           # the last validation (else training) accuracy, 0..1
    acc_chance: float | None          # 1/C
    train_points: int
    val_points: int
    half_share: float | None = None   # the share of the whole drop made by the middle of the steps: about 0.5
                                      # for a straight decline, 0.8 or more for one that converged early

    def to_dict(self) -> dict[str, Any]:
        """The quantities as JSON-ready numbers (NaN/inf become None), rounded to 4 significant
        digits: what ``--json`` prints under ``quantities``."""
        return {k: _round(v) for k, v in asdict(self).items()}


def quantities(curves: Curves, *, classes: int | None = None) -> Quantities:
    """The :class:`Quantities` of one measured run (``rules.measure``). ``classes`` names C
    when the caller knows it; else the run's config/hparams, else the agreeing readings."""
    main, train, val = curves.main, curves.train, curves.val
    start = main.start
    scale = abs(start) if start else 1.0
    peak, peak_step = _peak(curves.main_series)
    val_final = val.end if val is not None else None
    train_at_val = train.at(int(val.steps[-1])) if train is not None and val is not None else None
    gap = val_final - train_at_val if val_final is not None and train_at_val is not None else None
    gap_ratio = (val_final / train_at_val if gap is not None and train_at_val and train_at_val > 0 else None)
    val_rise = None
    if val is not None and val.start - val.low > 1e-12 * scale:
        val_rise = (val.end - val.low) / (val.start - val.low)
    total_drop = start - main.end
    at_tail = main.at(tail_start(main))
    acc = curves.acc_val if curves.acc_val is not None else curves.acc_train
    acc_first, acc_final = _first_last(acc)
    acc_scale = 100.0 if acc_final is not None and acc_final > 1.0 else 1.0  # a percentage
    acc_first = acc_first / acc_scale if acc_first is not None else None
    acc_final = acc_final / acc_scale if acc_final is not None else None
    found, source = _classes(curves, classes, acc_first)
    chance = math.log(found) if found else None
    nonfinite = sum(f.nonfinite_count for f in (train, val) if f is not None)
    first_bad = min((f.first_nonfinite_step for f in (train, val) if f is not None and f.first_nonfinite_step
                     is not None), default=None)
    return Quantities(
        start=start, peak=peak, peak_step=peak_step, best_before_peak=_best_before(main, peak_step, scale),
        train_best=train.low if train is not None else None, train_final=train.end if train is not None else None,
        val_best=val.low if val is not None else None, val_best_step=val.low_step if val is not None else None,
        val_final=val_final, val_rise=val_rise,
        train_fall_after=((train.at(val.low_step) - train.end) / scale if train is not None and val is not None
                          and val is not main else None),
        gap=gap, gap_ratio=gap_ratio,
        gap_share=gap / scale if gap is not None else None,
        progress=total_drop / scale, val_progress=val.progress if val is not None and val is not main else None,
        tail_drop=(at_tail - main.end) / scale,
        tail_share=(at_tail - main.end) / total_drop if total_drop > 1e-12 * scale else None,
        tail_gain=_tail_gain(val if val is not None else main),
        noise=main.noise, val_bounce=_bounce(curves.val_series) if val is not None and val is not main else None,
        val_jump=_jump(curves.val_series, scale) if val is not None and val is not main else None,
        swing=main.swing, nonfinite=nonfinite, ends_nonfinite=any(f.nonfinite_step is not None for f in (train, val, main) if f is not None),
        first_nonfinite_step=first_bad, classes=found, chance_loss=chance, chance_source=source,
        final_over_chance=main.end / chance if chance else None,
        acc_final=acc_final, acc_chance=1.0 / found if found else None,
        train_points=train.points if train is not None else 0, val_points=val.points if val is not None else 0,
        half_share=((start - main.at(_step_at(main, 0.5))) / total_drop if total_drop > 1e-12 * scale else None))


def _bounce(series: Series | None) -> float | None:
    if series is None:
        return None
    v = series.values[np.isfinite(series.values)]
    if len(v) < 5:  # a bounce needs a few evaluations to show
        return None
    shortest = abs(v[0] - v.min()) + abs(v[-1] - v.min())
    return float(np.abs(np.diff(v)).sum() / shortest) if shortest > 0 else None


def _jump(series: Series | None, scale: float) -> float | None:
    if series is None:
        return None
    v = series.values[np.isfinite(series.values)]
    half = v[len(v) // 2:]
    return float(np.abs(np.diff(half)).mean() / scale) if len(half) >= 3 else None


def _best_before(f: CurveFeatures, step: int, scale: float) -> float:
    before = f.smooth[f.steps < step]
    return float(before.min()) / scale if len(before) else 1.0


def tail_start(f: CurveFeatures) -> int:
    """The first step of the curve's last fifth (:data:`TAIL`), where the end is read."""
    return _step_at(f, 1 - TAIL)


def _step_at(f: CurveFeatures, fraction: float) -> int:
    """The step ``fraction`` of the way through the curve's steps."""
    return int(f.steps[0] + fraction * (f.steps[-1] - f.steps[0]))


def _tail_gain(f: CurveFeatures) -> float:
    at_tail = f.at(tail_start(f))
    return (at_tail - f.end) / abs(f.end) if f.end else 0.0


def _peak(series: Series) -> tuple[float, int]:
    finite = np.isfinite(series.values)
    if not finite.any():
        return math.nan, int(series.steps[0]) if len(series) else 0
    i = int(np.argmax(np.where(finite, series.values, -np.inf)))
    return float(series.values[i]), int(series.steps[i])


def _first_last(series: Series | None) -> tuple[float | None, float | None]:
    if series is None:
        return None, None
    values = series.values[np.isfinite(series.values)]
    if not len(values):
        return None, None
    return float(values[0]), float(np.median(values[-3:]))


def _classes(curves: Curves, given: int | None, acc_first: float | None) -> tuple[int | None, str | None]:
    """(C, how it was found): given, from the run's config or hparams, or two readings agreeing."""
    if given is not None:
        return int(given), f"classes={int(given)} given"
    for where, mapping in (("run config", _config(curves)), ("hparams", curves.run.hparams)):
        for key in CLASS_KEYS:
            value = _int(mapping.get(key)) if isinstance(mapping, Mapping) else None
            if value is not None and value >= 2:
                return value, f"{key}={value} in the {where}"
    start = curves.main.start
    if acc_first is None or not math.isfinite(start) or start <= 0.3:
        return None, None
    guess = int(round(math.exp(start)))
    if guess >= 2 and abs(start - math.log(guess)) <= 0.1 * math.log(guess) \
            and abs(acc_first - 1.0 / guess) <= (1.0 / guess) / 3:
        return guess, (f"inferred: the starting loss {start:.3g} is near ln {guess} and the first accuracy "
                       f"{acc_first:.3g} near 1/{guess}")
    return None, None


def _config(curves: Curves) -> Mapping[str, Any]:
    info = curves.run.info or {}
    config = info.get("config")
    return config if isinstance(config, Mapping) else {}


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.4g}") if math.isfinite(value) else None
    return value
