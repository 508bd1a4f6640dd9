"""The panels of a run's figure (``plot.py`` lays them out): the losses with the verdict's marks
and the checkpoints, the training signals, the accuracies. Each ``_draw_*`` draws into one
matplotlib ``Axes``; long series are bucketed to about 2,000 points per line (:func:`downsample`).

>>> import numpy as np
>>> x, y = downsample(np.arange(10), np.r_[np.arange(9.0), np.nan], max_points=4)
>>> len(x), float(y[0])
(4, 0.5)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .diagnosis import Diagnosis

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from .curves import RunData, Series

__all__ = ["downsample", "best_of", "MAX_POINTS"]

MAX_POINTS = 2000  # per drawn line; a screen has fewer pixels than that across a panel
TRAIN, VAL, BEST, BAD = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"
_SIGNAL_PREFIX = "doctor/"


def downsample(steps: np.ndarray, values: np.ndarray, *, max_points: int = MAX_POINTS,
               envelope: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The finite points of a series, at most ``max_points`` of them: bucket means, or with
    ``envelope=True`` each bucket's min and max (so spikes stay visible in a raw curve).

    >>> x, y = downsample(np.arange(100_000), np.arange(100_000.0), max_points=1000)
    >>> len(x), float(y[0]), float(y[-1]) > 99_000
    (1000, 49.5, True)
    """
    ok = np.isfinite(values)
    steps, values = np.asarray(steps, dtype=np.float64)[ok], values[ok]
    if len(steps) <= max_points:
        return steps, values
    buckets = max_points // 2 if envelope else max_points
    starts = np.linspace(0, len(steps), buckets + 1).astype(np.int64)[:-1]
    counts = np.diff(np.append(starts, len(steps)))
    centre = np.add.reduceat(steps, starts) / counts
    if not envelope:
        return centre, np.add.reduceat(values, starts) / counts
    low, high = np.minimum.reduceat(values, starts), np.maximum.reduceat(values, starts)
    # min then max at each bucket's centre: the line sweeps the bucket's whole range
    return np.repeat(centre, 2), np.column_stack([low, high]).ravel()


def _smooth(values: np.ndarray) -> np.ndarray:
    """Centred moving average over ~2% of the points (cumsum: no Python loop over 100k values)."""
    n, half = len(values), max(1, len(values) // 100)
    total = np.concatenate([[0.0], np.cumsum(values)])
    index = np.arange(n)
    lo, hi = np.clip(index - half, 0, n), np.clip(index + half + 1, 0, n)
    return (total[hi] - total[lo]) / (hi - lo)


def _series(run: RunData, diagnosis: Diagnosis, role: str) -> Series | None:
    tag = diagnosis.tags.get(role)
    return run.scalars.get(tag) if tag else None


def _mark_nonfinite(ax: Axes, series: Series, color: str) -> None:
    """Non-finite points sit on the panel's top edge: they have no y, but where they are matters.
    At most 60 markers: more would merge into a bar; the legend gives the count."""
    for kind, hit, marker in (("NaN", np.isnan(series.values), "x"), ("inf", np.isinf(series.values), "^")):
        if not hit.any():
            continue
        steps = series.steps[hit]
        steps = steps[np.unique(np.linspace(0, len(steps) - 1, min(len(steps), 60)).astype(int))]
        ax.plot(steps, np.ones(len(steps)), ls="none", marker=marker, ms=6, mew=1.5, color=color,
                transform=ax.get_xaxis_transform(), clip_on=False, label=f"{kind} ({int(hit.sum())})")


def _use_log_scale(ax: Axes, arrays: list[np.ndarray]) -> None:
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays] or [np.zeros(0)])
    if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 10 ** 1.5:
        ax.set_yscale("log")


def _draw_losses(ax: Axes, run: RunData, diagnosis: Diagnosis) -> None:
    train, val = _series(run, diagnosis, "train_loss"), _series(run, diagnosis, "val_loss")
    drawn = []
    if train is None and val is None:  # nothing named by the rules: show whatever the run logged
        for i, (tag, series) in enumerate(sorted(_plain_scalars(run).items())[:6]):
            ax.plot(*downsample(series.steps, series.values), lw=1.2, color=f"C{i}", label=tag)
            _mark_nonfinite(ax, series, f"C{i}")
            drawn.append(series.values)
    if train is not None and len(train):
        ok = np.isfinite(train.values)
        ax.plot(*downsample(train.steps, train.values, envelope=True), lw=0.8, color=TRAIN, alpha=0.3)
        if ok.sum() > 1:
            ax.plot(*downsample(train.steps[ok], _smooth(train.values[ok])), lw=1.6, color=TRAIN,
                    label=f"train {diagnosis.tags['train_loss']}")
        _mark_nonfinite(ax, train, BAD)
        drawn.append(train.values)
    if val is not None and len(val):
        few = np.isfinite(val.values).sum() <= 60
        ax.plot(*downsample(val.steps, val.values), lw=1.8, color=VAL, marker="o" if few else None, ms=3,
                label=f"val {diagnosis.tags['val_loss']}")
        _mark_nonfinite(ax, val, BAD)
        drawn.append(val.values)
    _use_log_scale(ax, drawn)
    ax.set_ylabel("loss")


def _plain_scalars(run: RunData) -> dict[str, Series]:
    return {t: s for t, s in run.scalars.items() if not t.startswith(_SIGNAL_PREFIX) and len(s)}


def _value_at(series: Series | None, step: int) -> float | None:
    if series is None or not len(series):
        return None
    i = int(np.clip(np.searchsorted(series.steps, step, side="right") - 1, 0, len(series) - 1))
    return float(series.values[i]) if np.isfinite(series.values[i]) else None


def _draw_marks(ax: Axes, run: RunData, diagnosis: Diagnosis) -> None:
    m, val = diagnosis.marks, _series(run, diagnosis, "val_loss")
    last = max((int(s.steps[-1]) for s in run.scalars.values() if len(s)), default=None)
    q = diagnosis.quantities
    if isinstance(q.get("start"), float):
        ax.axhline(q["start"], color="0.35", ls=":", lw=1, label=f"start {q['start']:.4g}")
    if isinstance(q.get("chance_loss"), float):
        ax.axhline(q["chance_loss"], color="#ad1457", ls="-.", lw=1,
                   label=f"chance ln {q['classes']} = {q['chance_loss']:.3g}")
    if m.region is not None and m.region[1] > m.region[0]:
        ax.axvspan(*m.region, color="#ffb300", alpha=0.12, lw=0, label=f"decided here: {m.region_label}")
    if m.plateau_start is not None and last is not None and last > m.plateau_start:
        ax.axvspan(m.plateau_start, last, color="0.5", alpha=0.15, lw=0, label=f"plateau from {m.plateau_start:,}")
    if m.diverged_step is not None:
        ax.axvline(m.diverged_step, color=BAD, lw=1.6, label=f"diverged at {m.diverged_step:,}")
    if m.low_step is not None:
        ax.axvline(m.low_step, color=BEST, lw=1, ls="--")
        low = m.low_value if m.low_value is not None else _value_at(
            val if val is not None else _series(run, diagnosis, "train_loss"), m.low_step)
        if low is not None and np.isfinite(low):
            name = "val" if val is not None else "train"
            ax.plot([m.low_step], [low], marker="*", ms=14, color=BEST, mec="k", mew=0.6, ls="none",
                    zorder=5, label=f"lowest {name} loss (smoothed) {low:.4g} @ {m.low_step:,}")
    _draw_gap(ax, run, diagnosis)


def _draw_gap(ax: Axes, run: RunData, diagnosis: Diagnosis) -> None:
    """The train/val gap as an arrow between the two drawn curves at the gap's step, inside this
    panel only: from the validation point down (or up) to the smoothed training line there."""
    m = diagnosis.marks
    train, val = _series(run, diagnosis, "train_loss"), _series(run, diagnosis, "val_loss")
    if m.gap_step is None or m.gap is None or not np.isfinite(m.gap) or train is None:
        return
    top, bottom = _value_at(val, m.gap_step), _smoothed_at(train, m.gap_step)
    if top is None or bottom is None or top == bottom or (ax.get_yscale() == "log" and min(top, bottom) <= 0):
        return  # (the measured gap is the rules' smoothed one; the arrow joins what is drawn)
    arrow = ax.annotate("", xy=(m.gap_step, top), xytext=(m.gap_step, bottom), annotation_clip=True,
                        arrowprops=dict(arrowstyle="<->", color="0.2", lw=1.2, shrinkA=0, shrinkB=0))
    arrow.arrow_patch.set_clip_path(ax.patch)  # never out of the panel, whatever the limits become
    middle = float(np.sqrt(top * bottom)) if ax.get_yscale() == "log" else (top + bottom) / 2
    ax.annotate(f"gap {m.gap:.3g}", xy=(m.gap_step, middle), xytext=(-6, 0), textcoords="offset points",
                ha="right", va="center", fontsize=8, color="0.2", annotation_clip=True)


def _smoothed_at(series: Series, step: int) -> float | None:
    """The smoothed training line as drawn (:func:`_smooth` of the finite points) at ``step``."""
    ok = np.isfinite(series.values)
    if ok.sum() < 2:
        return _value_at(series, step)
    steps, smooth = series.steps[ok], _smooth(series.values[ok])
    i = int(np.clip(np.searchsorted(steps, step, side="right") - 1, 0, len(steps) - 1))
    return float(smooth[i])


def _checkpoint_steps(run: RunData, diagnosis: Diagnosis, checkpoints: Any
                      ) -> tuple[list[int], list[int], int | None]:
    """(every saved step, the kept steps, the best checkpoint's step) of a savegame run."""
    info = run.info or {}
    if checkpoints is None and run.info is not None and run.path is not None:
        from ..checkpoint.layout import list_checkpoints

        checkpoints = list_checkpoints(Path(run.path) / "checkpoints")
    kept = sorted(int(c.step) for c in checkpoints or [])
    saved = sorted(set(int(s) for s in info.get("saved_steps") or []) | set(kept))
    best = best_of(run, diagnosis, kept)
    return saved, kept, best["step"] if best is not None else None


def best_of(run: RunData, diagnosis: Diagnosis, kept: Sequence[int]) -> dict[str, Any] | None:
    """The run's best checkpoint, ``{"step", "metric", "value", ...}``: the diagnosis's (from
    ``run.json``, see :func:`savegame.doctor.curves.best_checkpoint`), else ``run.json``'s own
    record when its step is among the ``kept`` steps (a diagnosis made by hand); else None."""
    if diagnosis.best_checkpoint is not None:
        return diagnosis.best_checkpoint
    best = (run.info or {}).get("best")
    if isinstance(best, dict) and isinstance(best.get("step"), int) and best["step"] in set(kept):
        return best
    return None


def _draw_checkpoints(ax: Axes, run: RunData, diagnosis: Diagnosis, checkpoints: Any) -> None:
    saved, kept, best = _checkpoint_steps(run, diagnosis, checkpoints)
    if not saved:
        return
    foot = ax.get_xaxis_transform()  # x in steps, y in panel fractions: ticks hug the x axis
    gone = [s for s in saved if s not in set(kept)]
    if gone:
        ax.vlines(gone, 0, 0.035, transform=foot, color="0.6", lw=1, label="checkpoint (deleted)")
    if kept:
        ax.vlines(kept, 0, 0.06, transform=foot, color="#17becf", lw=2, label="checkpoint (kept)")
    if best is not None:
        ax.plot([best], [0.06], marker="v", ms=8, color=BEST, mec="k", mew=0.5, transform=foot,
                clip_on=False, ls="none", label=f"best checkpoint @ {best:,}")


def _draw_signals(ax: Axes, run: RunData) -> bool:
    grouped: dict[str, dict[str, Series]] = {}
    for tag, series in run.scalars.items():
        parts = tag.split("/", 2)
        if len(parts) >= 2 and parts[0] == "doctor" and len(series):
            grouped.setdefault(parts[1], {})[parts[2] if len(parts) == 3 else ""] = series
    if not grouped:
        return False
    total = grouped.get("grad_norm", {}).get("total")
    if total is not None:
        ax.plot(*downsample(total.steps, total.values), color="#9467bd", lw=1.2, label="grad norm (total)")
    ratios = grouped.get("update_ratio", {})
    if ratios:
        steps, stack = _align(list(ratios.values()))
        with np.errstate(all="ignore"):
            low, mid, high = np.nanmin(stack, 0), np.nanmedian(stack, 0), np.nanmax(stack, 0)
        x, y = downsample(steps, mid)
        ax.plot(x, y, color="#8c564b", lw=1.2, label=f"update ratio (median of {len(ratios)})")
        _, lo = downsample(steps, low)
        _, hi = downsample(steps, high)
        if len(lo) == len(hi) == len(x):
            ax.fill_between(x, lo, hi, color="#8c564b", alpha=0.2, lw=0)
        ax.axhline(1e-3, color="#8c564b", ls=":", lw=1, label="update ratio 1e-3")
    if total is not None or ratios:
        ax.set_yscale("log")
    bad = grouped.get("nonfinite_grads", {}).get("")
    if bad is not None and (bad.values > 0).any():
        ax.plot(bad.steps[bad.values > 0], np.ones((bad.values > 0).sum()), "x", color=BAD,
                transform=ax.get_xaxis_transform(), clip_on=False, label="non-finite grads")
    dead = grouped.get("dead_relu", {})
    if dead:
        twin = ax.twinx()
        for i, (name, series) in enumerate(sorted(dead.items())[:4]):
            twin.plot(*downsample(series.steps, series.values), color="#7f7f7f", lw=1,
                      ls=("-", "--", "-.", ":")[i], label=f"dead ReLU {name}")
        twin.set_ylim(0, 1)
        twin.set_ylabel("dead fraction", fontsize=8)
        twin.legend(loc="upper left", fontsize=7, framealpha=0.8)
    ax.set_ylabel("signals")
    return True


def _align(series: list[Series]) -> tuple[np.ndarray, np.ndarray]:
    """Layers logged at slightly different steps, as one (layers, steps) array with NaN holes."""
    steps = np.unique(np.concatenate([s.steps for s in series]))
    stack = np.full((len(series), len(steps)), np.nan)
    for row, s in zip(stack, series):
        row[np.searchsorted(steps, s.steps)] = np.where(np.isfinite(s.values), s.values, np.nan)
    return steps, stack


def _draw_accuracy(ax: Axes, run: RunData, diagnosis: Diagnosis) -> None:
    for role, color, label in (("train_acc", TRAIN, "train"), ("val_acc", VAL, "val")):
        series = _series(run, diagnosis, role)
        if series is not None and len(series):
            ax.plot(*downsample(series.steps, series.values), color=color, lw=1.4,
                    label=f"{label} {diagnosis.tags[role]}")
    ax.set_ylabel("accuracy")


def _has_signals(run: RunData) -> bool:
    return any(t.startswith(_SIGNAL_PREFIX) and len(s) for t, s in run.scalars.items())


def _has_accuracy(run: RunData, diagnosis: Diagnosis) -> bool:
    return any(_series(run, diagnosis, r) is not None for r in ("train_acc", "val_acc"))
