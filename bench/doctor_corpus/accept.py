"""Acceptance checks: did a recipe really plant its pathology in this run?

Labels are by construction (the recipe), but a recipe can miss for some seed: an "lr_too_high"
that happens to settle, an "overfitting" whose validation loss never turns up. Each check below
looks only at the raw numbers the run logged (the training-loss points, the validation losses),
never at savegame's doctor, and is deliberately crude: it only rejects runs where the recipe
visibly failed. These are NOT the doctor's definitions of the verdicts, and passing them says
nothing about how hard a run is to judge.

Words used below (all on the logged values):

- ``first``: the median of the first 2% of the training-loss points (at least 3: one batch can be
  unlucky); ``start``: the mean of the first 5% (plateau only);
- ``end``: the mean of the last 10% of the training-loss points;
- ``low``: the lowest mean over a sliding window of 5% of the training-loss points;
- ``v0``, ``vend``, ``vmin``: the first, last and lowest validation loss; ``vtail``: the mean of the
  last 3 (a validation loss under a constant lr jitters by ~10%);
- ``late``: how much the last 20% of the validations lowered the validation loss,
  ``min(validations before the last 20%) - vend``, as a fraction of the whole drop ``v0 - vend``;
- ``ref``: ln C for a classification family, else ``first`` (``v0`` for lr_too_low).

The checks (every label but diverged also needs finite values and ``end <= 3 * first``):

- diverged: a non-finite value, or ``end > 3 * first``, or ``vend > 3 * v0``;
- plateau: ``vmin >= 0.9 * v0`` and ``end >= 0.8 * start``;
- healthy: ``end < healthy * first``, ``vtail <= 1.15 * vmin``, ``late < 0.1``;
- still_improving: ``vend < 0.9 * v0``, ``vend <= 1.02 * vmin``, ``late >= 0.1``;
- overfitting: ``vend >= 1.2 * vmin`` (minimum not at the first validation), or ``vend >= 5 * end``
  with ``end <= 0.05 * first`` (a training loss near 0);
- underfitting: ``end >= high * ref``, ``low < 0.95 * first`` (it moved), ``|vend - end| <= 0.25 *
  max(vend, end)``, ``late < 0.1``;
- lr_too_high: the second half of the validations swings (``_bounces``);
- lr_too_low: ``vend <= 0.97 * v0``, ``vend >= high * ref``, ``late >= 0.12``.

Two thresholds depend on the family's loss scale (``Family.accept``): ``high`` (default 0.5) and
``healthy`` (default 0.5). A 4-class problem with 30% wrong labels cannot go below ~0.68 ln 4, so
there they are 0.8 and 0.85. ``chance`` (ln C) is passed in by the caller for classification.
"""

from __future__ import annotations

import math
import statistics


def _numbers(out: dict) -> dict:
    train = [v for _, v in out["train"]]
    val = [v for _, v in out["val"]]
    d = {"train": train, "val": val, "finite": all(math.isfinite(v) for v in train + val),
         "first": statistics.median(train[:max(3, len(train) // 50)]), "v0": val[0], "vend": val[-1]}
    if not d["finite"]:
        return d
    k = max(1, len(train) // 20)
    d["start"] = statistics.fmean(train[:max(3, k)])
    d["end"] = statistics.fmean(train[-max(1, len(train) // 10):])
    d["low"] = min(statistics.fmean(train[i:i + k]) for i in range(0, len(train) - k + 1))
    d["vmin"], d["vtail"] = min(val), statistics.fmean(val[-3:])
    cut, drop = max(1, int(0.8 * len(val))), val[0] - val[-1]
    d["late"] = (min(val[:cut]) - val[-1]) / drop if drop > 0 else 0.0
    return d


def _bounces(val: list[float]) -> bool:
    """The second half of the validation losses swings: at least 2 rises of >= 10% of its scale and
    a range of >= 30% of it. The scale is the smaller of its median and the whole drop ``v0 - vmin``
    (with a high floor, 30% wrong labels, a swing is large next to the drop, small next to the level)."""
    half = val[len(val) // 2:]
    mid = statistics.median(half)
    scale = min(mid, val[0] - min(val)) if val[0] > min(val) else mid
    rises = sum(b - a >= 0.1 * scale for a, b in zip(half, half[1:]))
    return rises >= 2 and max(half) - min(half) >= 0.3 * scale


def check(label: str, out: dict, accept: dict | None = None) -> tuple[bool, str]:
    """(accepted, the check in words) for one run's logged numbers (train.py's output) and its label."""
    accept = accept or {}
    high, healthy, chance = accept.get("high", 0.5), accept.get("healthy", 0.5), accept.get("chance")
    d = _numbers(out)
    if label == "diverged":
        ok = not d["finite"] or d["end"] > 3 * d["first"] or d["vend"] > 3 * d["v0"]
        return ok, "a non-finite loss, or a final loss > 3x the first"
    if not d["finite"] or d["end"] > 3 * d["first"]:
        return False, "a non-finite loss, or a final loss > 3x the first, in a run that should not diverge"
    first, start, end, low = d["first"], d["start"], d["end"], d["low"]
    v0, vend, vmin, vtail, late = d["v0"], d["vend"], d["vmin"], d["vtail"], d["late"]
    if label == "plateau":
        # on the validation loss (a full pass: no batch noise) and on means of the training loss: the
        # minimum of a noisy training loss (or its first few points) can be off by 30% without learning
        return (vmin >= 0.9 * v0 and end >= 0.8 * start,
                "validation never below 0.9x its first value, final train >= 0.8x its start")
    if label == "healthy":
        return (end < healthy * first and vtail <= 1.15 * vmin and late < 0.1,
                f"final < {healthy}x start, validation not rising (last 3 <= 1.15x its min), last 20% flat")
    if label == "still_improving":
        return (vend < 0.9 * v0 and vend <= 1.02 * vmin and late >= 0.1,
                "validation fell >= 10%, ends at its minimum, and the last 20% removed >= 10% of the drop")
    if label == "overfitting":
        rises = vend >= 1.2 * vmin and min(range(len(d["val"])), key=d["val"].__getitem__) > 0
        return (rises or (vend >= 5 * end and end <= 0.05 * first),
                "final validation >= 1.2x its minimum, or validation >= 5x a training loss near 0")
    if label == "underfitting":
        close = abs(vend - end) <= 0.25 * max(vend, end)
        return (end >= high * (chance or first) and low < 0.95 * first and close and late < 0.1,
                f"final train >= {high}x ln C (regression: its start) but it moved, validation close, flat")
    if label == "lr_too_high":
        return _bounces(d["val"]), "finite, below 3x its start, and the validation loss swings"
    if label == "lr_too_low":
        return (vend <= 0.97 * v0 and vend >= high * (chance or v0) and late >= 0.12,
                f"validation fell >= 3%, still >= {high}x ln C (regression: its start), still falling at the end")
    raise ValueError(f"unknown label {label!r}")
