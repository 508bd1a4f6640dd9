"""Reading run folders for the commands: find them, check them, and sum each one up.

Listing, liveness and ranking go through :class:`savegame.RunFolder`, which needs no torch, so
``savegame ls`` and ``show`` start in a fraction of a second.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..checkpoint.layout import CheckpointInfo
from ..folder import CHECKPOINTS, RunFolder
from ..runinfo import is_run_dir, read_run_info
from ._common import RUN_HINT, CliError, folder_arg


def run_dir(path: str) -> Path:
    """``path`` if it is a run folder (it holds a run.json); else a :class:`CliError` saying what
    to pass instead."""
    run = folder_arg(path, RUN_HINT)
    if not is_run_dir(run):
        hint = ("it is a checkpoint folder; pass the run folder two levels up"
                if (run / "manifest.json").is_file() else "list the runs with `savegame ls`")
        raise CliError(f"{run} is not a savegame run folder (it has no run.json); {hint}")
    return run


def run_info(run: Path) -> dict[str, Any]:
    """The run's checked run.json; a damaged one is a :class:`CliError` naming the problem."""
    try:
        return read_run_info(run)
    except (OSError, ValueError) as error:
        raise CliError(str(error)) from None


def run_checkpoints(run: Path) -> list[CheckpointInfo]:
    """The run's committed checkpoints, oldest first."""
    return RunFolder(run).checkpoints()


def run_status(run: Path, info: dict[str, Any]) -> str:
    """The status, with "running" turned into "crashed" when its process is gone from this host."""
    return RunFolder(run).status(info)


def best_of(run: Path, info: dict[str, Any], checkpoints: list[CheckpointInfo]) -> dict[str, Any] | None:
    """The best of the checkpoints on disk (:meth:`RunFolder.best`, ranked as
    :mod:`savegame.ranking` defines it); None when the run records no metric to rank by."""
    return RunFolder(run).best(info, checkpoints)


def _disk_size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass  # deleted while we walk: a running keep policy
    return total


def find_runs(root: Path, depth: int = 2) -> list[Path]:
    """The run folders at ``root`` and up to ``depth`` levels below it (hidden folders skipped)."""
    if is_run_dir(root):
        return [root]
    if depth == 0 or not root.is_dir():
        return []
    found: list[Path] = []
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            found += find_runs(child, depth - 1)
    return found


def summary(run: Path) -> dict[str, Any]:
    """One row of ``savegame ls``: status, progress, best, checkpoints, size, last update. A run
    whose run.json cannot be read (damaged, of a newer savegame) is a row too, of status
    "unreadable", with the ``problem`` named: one bad folder does not hide the others."""
    try:
        info, problem = run_info(run), None
    except CliError as error:
        info, problem = {}, str(error)
    checkpoints = run_checkpoints(run)
    newest = checkpoints[-1] if checkpoints else None
    row = {
        "run": str(run), "name": info.get("name"), "status": "unreadable" if problem else run_status(run, info),
        "epoch": newest.epoch if newest else None, "step": newest.step if newest else None,
        "best": best_of(run, info, checkpoints) if info else None, "checkpoints": len(checkpoints),
        "size": _disk_size(run), "updated": info.get("updated"),
    }
    if problem:
        row["problem"] = problem
    return row


def checkpoint_rows(run: Path, info: dict[str, Any]) -> tuple[list[dict[str, Any]], dict | None]:
    """One dict per committed checkpoint (name, path, step, epoch, metrics, size, created, whether
    it is the best and the newest), and the best as :func:`best_of` gives it."""
    checkpoints = run_checkpoints(run)
    best = best_of(run, info, checkpoints)
    rows = [{"name": c.path.name, "path": str(c.path), "step": c.step, "epoch": c.epoch,
             "metrics": dict(c.metrics), "size": c.size, "created": c.created,
             "best": bool(best) and c.step == best.get("step"),
             "newest": i == len(checkpoints) - 1} for i, c in enumerate(checkpoints)]
    return rows, best
