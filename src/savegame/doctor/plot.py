"""Draw a run's curves with the doctor's verdict on them, as a matplotlib ``Figure``.

The top panel holds the losses (raw training loss light, a smoothed line over it, the validation
loss), the verdict's marks (the lowest point of the smoothed loss, divergence, plateau, train/val
gap) and the checkpoint steps (kept, deleted, and the run's best checkpoint: the one
``savegame export RUN --best`` writes); a second panel the training signals (gradient norm,
update ratio, dead ReLUs) when the run logged them; a third the accuracies when present. Long
series are bucketed to about 2,000 points per line, so a 100k-step run draws in a blink.
matplotlib is imported inside the functions (only the plots need it) and only ``Figure`` objects
are built: no pyplot, no global backend switch, nothing left open.

>>> import numpy as np
>>> from savegame.doctor.curves import RunData, Series
>>> from savegame.doctor.diagnosis import Diagnosis
>>> steps = np.arange(1, 101)
>>> run = RunData("cnn", path=None, scalars={"loss": Series(steps, 1 / steps)})
>>> fig = run_figure(run, Diagnosis("cnn", verdict="healthy", confidence=0.9, tags={"train_loss": "loss"}))
>>> fig.axes[0].get_title(loc="left")
'cnn — healthy (90%)'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import MissingDependencyError
from .diagnosis import Diagnosis

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .curves import RunData, Series

__all__ = ["run_figure", "save_plot", "downsample", "best_of", "require_matplotlib", "MAX_POINTS", "MAX_RUNS"]

MAX_POINTS = 2000  # per drawn line; a screen has fewer pixels than that across a panel
MAX_RUNS = 12      # rows of one --plot image; more would be unreadable slivers
TRAIN, VAL, BEST, BAD = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"
_SIGNAL_PREFIX = "doctor/"


def require_matplotlib(feature: str = "savegame doctor's plots") -> None:
    """Import the parts of matplotlib the figures use, or raise :class:`MissingDependencyError`
    naming ``feature`` and what to install: a clear one-line error before any work is done, never a
    bare ``ModuleNotFoundError`` halfway through (``savegame report``, ``doctor --plot``, the demo)."""
    import importlib

    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise MissingDependencyError(f"{feature} needs matplotlib, which could not be imported ({error}); "
                                         "install it with: pip install matplotlib") from None


def _figure_class() -> type:
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure


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
        from ..checkpoint.store import list_checkpoints

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


def title_of(run: RunData, diagnosis: Diagnosis) -> str:
    """``"<run> — <verdict> (<confidence>)"``, or the reason it could not be judged."""
    if not diagnosis.judged:
        return f"{run.name} — cannot judge: {diagnosis.cannot_judge}"
    return f"{run.name} — {diagnosis.verdict} ({diagnosis.confidence:.0%})"


def _panels(run: RunData, diagnosis: Diagnosis) -> list[str]:
    return ["loss"] + (["signals"] if _has_signals(run) else []) + (
        ["accuracy"] if _has_accuracy(run, diagnosis) else [])


def _draw_run(container: Any, run: RunData, diagnosis: Diagnosis, checkpoints: Any, *,
              columns: list[str] | None = None) -> None:
    """Draw one run into a Figure or SubFigure: panels stacked, or side by side in ``columns``
    (the same columns for every row of a multi-run image, so the panels line up)."""
    panels = _panels(run, diagnosis)
    if columns is None:
        heights = {"loss": 3.0, "signals": 1.6, "accuracy": 1.4}
        axes = container.subplots(len(panels), 1, squeeze=False, sharex=True,
                                  height_ratios=[heights[p] for p in panels])[:, 0]
    else:
        grid = container.add_gridspec(1, len(columns), width_ratios=[2.0 if c == "loss" else 1.0 for c in columns])
        first = container.add_subplot(grid[0])
        axes = [first] + [container.add_subplot(grid[columns.index(p)], sharex=first) for p in panels[1:]]
    for ax, panel in zip(axes, panels):
        if panel == "loss":
            _draw_losses(ax, run, diagnosis)
            _draw_marks(ax, run, diagnosis)
            _draw_checkpoints(ax, run, diagnosis, checkpoints)
            ax.set_title(title_of(run, diagnosis), fontsize=11, loc="left",
                         color="0.1" if diagnosis.judged else BAD)
        elif panel == "signals":
            _draw_signals(ax, run)
        else:
            _draw_accuracy(ax, run, diagnosis)
        ax.grid(True, alpha=0.3, lw=0.5)
        ax.tick_params(labelsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
        if not ax.has_data():
            ax.text(0.5, 0.5, "no scalar data", ha="center", va="center", transform=ax.transAxes, color="0.4")
    for ax in axes if columns else axes[-1:]:
        ax.set_xlabel("step", fontsize=8)


def run_figure(run: RunData, diagnosis: Diagnosis, *, checkpoints: Sequence[Any] | None = None) -> Figure:
    """One run's figure: losses with the verdict drawn on them, then signals and accuracy panels
    when the run logged them. ``checkpoints`` are ``CheckpointInfo`` of the kept checkpoints;
    None reads them from ``<run.path>/checkpoints`` for a savegame run.

    >>> import numpy as np
    >>> from savegame.doctor.curves import RunData, Series
    >>> run = RunData("r", path=None, scalars={"doctor/grad_norm/total": Series(np.arange(3), np.ones(3))})
    >>> len(run_figure(run, Diagnosis("r", cannot_judge="no loss")).axes)
    2
    """
    figure_cls = _figure_class()
    rows = 1 + _has_signals(run) + _has_accuracy(run, diagnosis)
    fig = figure_cls(figsize=(10, 3.3 + 1.8 * (rows - 1)), layout="constrained")
    _draw_run(fig, run, diagnosis, checkpoints)
    return fig


def save_plot(runs: Sequence[RunData], diagnoses: Sequence[Diagnosis], path: str | os.PathLike,
              *, dpi: int = 100) -> Path:
    """One PNG with a row per run (at most :data:`MAX_RUNS`; the image says how many were left
    out), for ``savegame doctor --plot out.png``. Returns the path written.

    >>> import tempfile, numpy as np
    >>> from savegame.doctor.curves import RunData, Series
    >>> run = RunData("a", path=None, scalars={"loss": Series(np.arange(5), np.ones(5))})
    >>> save_plot([run], [Diagnosis("a", cannot_judge="too short")], Path(tempfile.mkdtemp()) / "p.png").suffix
    '.png'
    """
    if len(runs) != len(diagnoses):
        raise ValueError(f"save_plot needs one diagnosis per run, but got {len(runs)} runs and "
                         f"{len(diagnoses)} diagnoses; pass diagnose(run) for each run, in the same order.")
    if not runs:
        raise ValueError("save_plot got no runs to draw; give it the runs that load_runs(logdir) returned.")
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    shown = list(zip(runs, diagnoses))[:MAX_RUNS]
    fig = _figure_class()(figsize=(16, 3.2 * len(shown) + (0.4 if len(runs) > MAX_RUNS else 0)),
                          layout="constrained")
    if len(runs) > MAX_RUNS:
        fig.suptitle(f"showing the first {MAX_RUNS} of {len(runs)} runs; pass a narrower logdir to see the others",
                     color=BAD, fontsize=12)
    present = {p for run, diagnosis in shown for p in _panels(run, diagnosis)}
    columns = [p for p in ("loss", "signals", "accuracy") if p in present]
    for sub, (run, diagnosis) in zip(np.atleast_1d(fig.subfigures(len(shown), 1)), shown):
        _draw_run(sub, run, diagnosis, None, columns=columns)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)  # Agg explicitly: never touches pyplot's global backend
    fig.savefig(path, dpi=dpi)
    return path
