"""Draw a run's curves with the doctor's verdict on them, as a matplotlib ``Figure``.

The top panel holds the losses (raw training loss light, a smoothed line over it, the validation
loss), the verdict's marks (the lowest point of the smoothed loss, divergence, plateau, train/val
gap) and the checkpoint steps (kept, deleted, and the run's best checkpoint: the one
``savegame export RUN --best`` writes); a second panel the training signals (gradient norm,
update ratio, dead ReLUs) when the run logged them; a third the accuracies when present. Long
series are bucketed to about 2,000 points per line, so a 100k-step run draws in a blink.
matplotlib is imported inside the functions (only the plots need it) and only ``Figure`` objects
are built: no pyplot, no global backend switch, nothing left open. This module lays the panels
out; ``plot_panels.py`` draws each. A figure reads the verdict's name and the diagnosis's marks,
never a verdict by name, so a verdict of your own (``savegame.doctor.Verdict``) draws as any.

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

from ..optional import require
from .diagnosis import Diagnosis
from .plot_panels import (BAD, MAX_POINTS, _draw_accuracy, _draw_checkpoints, _draw_losses, _draw_marks,
                          _draw_signals, _has_accuracy, _has_signals, best_of, downsample)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .curves import RunData

__all__ = ["run_figure", "save_plot", "downsample", "best_of", "require_matplotlib", "MAX_POINTS", "MAX_RUNS"]

MAX_RUNS = 12      # rows of one --plot image; more would be unreadable slivers


def require_matplotlib(feature: str = "savegame doctor's plots") -> None:
    """Import the parts of matplotlib the figures use, or raise :class:`MissingDependencyError`
    naming ``feature`` and what to install: a clear one-line error before any work is done, never a
    bare ``ModuleNotFoundError`` halfway through (``savegame report``, ``doctor --plot``, the demo)."""
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        require(module, feature, "matplotlib")


def _figure_class() -> type:
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure


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
