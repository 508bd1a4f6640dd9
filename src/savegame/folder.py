"""``RunFolder``: one run folder on disk, without torch — its lock, ``run.json``, its committed
checkpoints, whether its process is alive, and its best checkpoint.

The training side (``savegame.Run``) writes through it; ``savegame ls/show/export``, the doctor,
the report and the sweeps read through it, so listing and ranking never import torch.

>>> import tempfile
>>> folder = RunFolder(tempfile.mkdtemp())
>>> folder.is_run(), folder.checkpoints()
(False, [])
>>> folder.write_info({"format": "savegame.run", "version": 1, "status": "finished",
...                    "ranking": {"metric": "loss/val", "mode": "min"}})
>>> folder.status(), folder.ranking()
('finished', ('loss/val', 'min'))
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Sequence

from . import ranking
from .checkpoint import layout
from .checkpoint.layout import CheckpointInfo
from .lock import RunLock
from .runinfo import RUN_FILE, read_run_info, write_run_info

CHECKPOINTS = "checkpoints"
MAX_SAVED_STEPS = 10_000  # run.json lists at most this many saved steps (the newest)


class RunFolder:
    """A run folder: ``run.json``, ``checkpoints/``, ``LOCK``, event files."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.checkpoint_root = self.path / CHECKPOINTS

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- run.json ----------------------------------------------------------------------------
    def is_run(self) -> bool:
        """Whether the folder holds a ``run.json``."""
        return (self.path / RUN_FILE).is_file()

    def read_info(self) -> dict[str, Any]:
        """``run.json``, checked (errors name the file and what is wrong)."""
        return read_run_info(self.path)

    def write_info(self, info: dict[str, Any], *, durable: bool = True) -> None:
        """Replace ``run.json`` atomically (temp file, fsync unless not ``durable``, rename)."""
        write_run_info(self.path, info, durable=durable)

    def record_save(self, info: dict[str, Any], step: int, checkpoints: Sequence[CheckpointInfo],
                    ranks_by: tuple[str, str] | None) -> None:
        """A checkpoint of ``step`` committed (and retention ran): note it in ``info``'s
        ``saved_steps`` (the report shows what the keep policy dropped), record how "best" ranks
        and the best kept checkpoint, and write ``run.json``.

        >>> import tempfile
        >>> folder, info = RunFolder(tempfile.mkdtemp()), {"saved_steps": [5, 10]}
        >>> folder.record_save(info, 7, [], ("loss", "min"))  # a resume from step 5 saved 7
        >>> info["saved_steps"], info["ranking"]
        ([5, 7], {'metric': 'loss', 'mode': 'min'})
        """
        saved = info.setdefault("saved_steps", [])
        saved[:] = [s for s in saved if s < step][-(MAX_SAVED_STEPS - 1):] + [step]
        if ranks_by is not None:
            info["ranking"] = {"metric": ranks_by[0], "mode": ranks_by[1]}
            info["best"] = ranking.best_record(checkpoints, *ranks_by)
        # Not fsynced: what a save adds here (its step, the best) the checkpoints record durably
        # themselves, and a power cut that rolls run.json back to the last save's is mended by the
        # next one. Two fsyncs of the five or seven a save costs otherwise.
        self.write_info(info, durable=False)

    def lock(self) -> RunLock:
        """The folder's lock (one writing process per run); call ``acquire()`` on it."""
        return RunLock(self.path / "LOCK")

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoints(self, *, damaged: list | None = None) -> list[CheckpointInfo]:
        """The committed checkpoints, by step, from their manifests alone; with a ``damaged``
        list, the damaged ones skipped go into it (see ``layout.list_checkpoints``)."""
        return layout.list_checkpoints(self.checkpoint_root, damaged=damaged)

    def clean_temps(self, *, include_live: bool = False) -> list[Path]:
        """Remove the leftovers of interrupted saves (all of them with ``include_live``: the
        caller holds the lock, so none is in flight); an interrupted overwrite is put back."""
        return layout.remove_stale_temps(self.checkpoint_root, include_live=include_live)

    # -- liveness ----------------------------------------------------------------------------
    def status(self, info: dict[str, Any] | None = None) -> str:
        """``run.json``'s status, with ``running`` turned into ``crashed`` when the process it
        names is gone from this host (killed without a chance to write its status)."""
        info = self.read_info() if info is None else info
        status = info.get("status", "?")
        pid = info.get("pid")
        if status == "running" and info.get("host") == socket.gethostname() and isinstance(pid, int):
            if not layout.pid_alive(pid):
                return "crashed"
        return status

    # -- best --------------------------------------------------------------------------------
    def ranking(self, info: dict[str, Any] | None = None,
                checkpoints: Sequence[CheckpointInfo] | None = None) -> tuple[str, str] | None:
        """``(metric, mode)`` that "best" ranks by: run.json's ``ranking`` (recorded by the Run
        from its start), else its ``best``, else the keep or save policy recorded in the newest
        readable manifest (runs written before ``ranking`` existed); None: nothing ranks."""
        info = self.read_info() if info is None else info
        for recorded in (info.get("ranking"), info.get("best")):
            if (isinstance(recorded, dict) and isinstance(recorded.get("metric"), str)
                    and recorded["metric"] and recorded.get("mode") in ranking.MODES):
                return recorded["metric"], recorded["mode"]
        return _manifest_ranking(self.checkpoints() if checkpoints is None else checkpoints)

    def best(self, info: dict[str, Any] | None = None,
             checkpoints: Sequence[CheckpointInfo] | None = None) -> dict[str, Any] | None:
        """The best of the checkpoints on disk, as run.json records it (``{"metric", "mode",
        "value", "step", "checkpoint"}``; value, step and checkpoint None while none ranks), or
        None when the run records no metric to rank by. See :mod:`savegame.ranking`."""
        info = self.read_info() if info is None else info
        checkpoints = self.checkpoints() if checkpoints is None else checkpoints
        found = self.ranking(info, checkpoints)
        if found is None:
            return None
        metric, mode = found
        return (ranking.best_record(checkpoints, metric, mode)
                or {"metric": metric, "mode": mode, "value": None, "step": None, "checkpoint": None})


def _manifest_ranking(checkpoints: Sequence[CheckpointInfo]) -> tuple[str, str] | None:
    for checkpoint in reversed(checkpoints):
        try:
            manifest = layout.read_manifest(checkpoint.path)
        except (OSError, ValueError):
            continue
        info = manifest.get("info") if isinstance(manifest.get("info"), dict) else {}
        state = manifest.get("state") if isinstance(manifest.get("state"), dict) else {}
        own = state.get("_savegame") if isinstance(state.get("_savegame"), dict) else {}
        for node in (info.get("keep"), own.get("keep"), own.get("save_policy")):
            if found := _find_ranking(node):
                return found
    return None


def _find_ranking(node: Any) -> tuple[str, str] | None:
    if isinstance(node, dict):
        if node.get("metric") and node.get("mode") in ranking.MODES:
            return node["metric"], node["mode"]
        node = list(node.values())
    if isinstance(node, list):
        for child in node:
            if found := _find_ranking(child):
                return found
    return None
