"""A sweep's trials as rows: what ``savegame sweep show``, ``sweep best`` and the report print.

Each row: ``number``, ``state`` (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``, ``WAITING``),
``value``, ``params``, ``dir``, ``resumes`` (how many times its run folder was resumed, from its
``run.json``), ``step`` (the last step it reached: its newest checkpoint or last report) and
``reason`` (why it was pruned or failed). Rows are sorted by the objective, best first, then the
trials without a value by number. Surplus trials (asked, never run: ``worker.py``) are left out.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..folder import RunFolder
from .trial import REASON, trial_dir
from .worker import counted

__all__ = ["trial_rows", "best_row"]


def trial_rows(study: Any, sweep_dir: Path) -> list[dict[str, Any]]:
    """The sweep's trials, best first (see the module docstring)."""
    rows = [_row(trial, sweep_dir) for trial in counted(study.get_trials(deepcopy=False))]
    maximize = study.direction.name == "MAXIMIZE"

    def key(row: dict[str, Any]) -> tuple:
        value = row["value"]
        if value is None or not math.isfinite(value):
            return (1, 0.0, row["number"])
        return (0, -value if maximize else value, row["number"])

    return sorted(rows, key=key)


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best COMPLETE trial's row of :func:`trial_rows`, or None before one completed."""
    return next((row for row in rows if row["state"] == "COMPLETE"), None)


def _row(trial: Any, sweep_dir: Path) -> dict[str, Any]:
    folder = trial_dir(sweep_dir, trial.number)
    resumes, step = 0, max(trial.intermediate_values, default=None)
    run = RunFolder(folder)
    if run.is_run():
        try:
            resumes = len(run.read_info().get("resumes", []))
            checkpoints = run.checkpoints()
        except (OSError, ValueError):
            checkpoints = []
        if checkpoints:
            step = max(step or 0, checkpoints[-1].step)
    return {"number": trial.number, "state": trial.state.name, "value": trial.value, "params": dict(trial.params),
            "dir": str(folder), "resumes": resumes, "step": step, "reason": trial.system_attrs.get(REASON)}
