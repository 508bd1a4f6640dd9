"""Choosing the checkpoint a run resumes from, falling back past damaged ones, and what a resume
says about a changed config.

>>> kept_hyperparameters({"lr": [0.1, 0.5]}, [{"lr": 0.1, "momentum": 0.9}])
{'lr': 0.1}
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .checkpoint.layout import CheckpointInfo, metrics_from_json, quarantine
from .checkpoint.restore import CheckpointReader
from .errors import (CheckpointCorruptError, CheckpointNotFoundError, FormatVersionError, RunInfoDamagedError,
                     StateMismatchError)
from .folder import RunFolder
from .messages import warn
from .runinfo import config_as_json, config_changes, new_run_info, set_aside_run_info

RESERVED = "_savegame"  # the run's own state inside a checkpoint, beside the tracked objects


@dataclass
class Chosen:
    """The checkpoint to resume from (None: start fresh), the run's own state in it (``_savegame``
    and ``extras``), the reader that restores the tracked objects from it, and what changes on
    disk once the run begins: ``superseded`` (an explicit resume's newer checkpoints)."""

    checkpoint: CheckpointInfo | None = None
    state: dict[str, Any] | None = None
    reader: CheckpointReader | None = None
    remaining: list[CheckpointInfo] = field(default_factory=list)  # the checkpoints a resume may use
    superseded: list[CheckpointInfo] = field(default_factory=list)


def choose(run_dir: Path, checkpoints: list[CheckpointInfo], resume: str | int | Path) -> Chosen:
    """Read the checkpoint ``resume`` names: ``"auto"`` (the newest that verifies; a damaged one
    is renamed ``*.corrupt`` and the previous one tried), ``"never"``, a step or a path."""
    checkpoints = list(checkpoints)
    if resume == "never":
        if checkpoints:
            raise FileExistsError(
                f"{run_dir} already holds checkpoints ({checkpoints[-1].path.name} is the "
                "newest) and resume='never' would mix two runs in one folder. Use a new folder, "
                "delete this one, or resume='auto'.")
        return Chosen()
    if isinstance(resume, int) and not isinstance(resume, bool):
        matches = [c for c in checkpoints if c.step == resume]
        if not matches:
            raise CheckpointNotFoundError(f"{run_dir} has no committed checkpoint at step {resume}; it has "
                                          f"steps {[c.step for c in checkpoints]}")
        return _explicit(matches[0].path, checkpoints)
    if resume != "auto":
        return _explicit(Path(resume), checkpoints)
    while checkpoints:
        newest = checkpoints[-1]
        try:
            reader, state, info = _open(newest.path)
        except CheckpointCorruptError as error:
            set_aside(newest.path, error)
            checkpoints.pop()
            continue
        return Chosen(checkpoint=info, state=state, reader=reader, remaining=checkpoints)
    return Chosen()


class Resumption:
    """The resume side of a Run: the chosen checkpoint, the tracked objects restored from it so
    far, and the fall-back past a checkpoint that turns out damaged while restoring.

    >>> import tempfile
    >>> resumption = Resumption(Path(tempfile.mkdtemp()), [], "auto")
    >>> resumption.chosen.checkpoint is None, resumption.restored
    (True, set())
    """

    def __init__(self, run_dir: Path, checkpoints: list[CheckpointInfo], mode: str | int | Path) -> None:
        self.run_dir, self.mode = run_dir, mode
        self.chosen = choose(run_dir, checkpoints, mode)
        self.restored: set[str] = set()  # tracked objects whose state came from the checkpoint

    def restore(self, name: str, obj: Any, tracked: dict[str, Any], *, may_fall_back: bool) -> bool:
        """Read ``name``'s tensors from the checkpoint straight into ``obj``, verified as they
        arrive. A damaged checkpoint found here (perhaps after part of ``obj`` was overwritten)
        is set aside and every object restored so far (``tracked``) is restored again from the
        previous one. Returns True when that happened: the run's own state must be read again
        from ``chosen``."""
        if name in self.restored:
            raise ValueError(f"run.track({name}=...): {name!r} is tracked already and was restored from "
                             f"{self.chosen.checkpoint.path}; track each object once")
        fell_back = False
        try:
            restore_object(self.chosen, name, obj, restored=self.restored)
        except CheckpointCorruptError as error:
            self._fall_back(error, {**{n: tracked[n] for n in self.restored}, name: obj}, may_fall_back)
            fell_back = True
        self.restored.add(name)
        return fell_back

    def _fall_back(self, error: CheckpointCorruptError, objects: dict[str, Any], may_fall_back: bool) -> None:
        """With resume="auto" (before the run began), set the damaged checkpoint aside and restore
        every object from the previous one (a strict restore overwrites all of their state);
        else, or with none left, raise: the objects may be half-loaded and must not be trained."""
        damaged = self.chosen.checkpoint.path
        self.close()
        if self.mode != "auto" or not may_fall_back:
            raise CheckpointCorruptError(
                f"{damaged} turned out damaged while restoring {', '.join(objects)} ({error}); they may be "
                "half-loaded. Start the process again: resume='auto' falls back to an earlier checkpoint.") from error
        set_aside(damaged, error)
        self.chosen = choose(self.run_dir, [c for c in self.chosen.remaining if c.path != damaged], "auto")
        if self.chosen.checkpoint is None:
            raise CheckpointCorruptError(
                f"{damaged} was the last checkpoint and it is damaged ({error}); {', '.join(objects)} may be "
                "half-loaded. Nothing on disk was lost; start again (resume='never' in a new folder).") from error
        try:
            for tracked_name, obj in objects.items():
                restore_object(self.chosen, tracked_name, obj, restored=self.restored)
        except CheckpointCorruptError as again:
            self._fall_back(again, objects, may_fall_back)

    def supersede(self) -> None:
        """The run begins from an explicit resume: rename the folder's newer checkpoints
        ``*.superseded`` (kept, never resumed from again) and say so."""
        superseded = self.chosen.superseded
        for checkpoint in superseded:
            quarantine(checkpoint.path, "superseded")
        if superseded:
            warn(f"resuming {self.run_dir} from step {self.chosen.checkpoint.step}: its later checkpoints "
                 f"(steps {[c.step for c in superseded]}) are renamed *.superseded; they are "
                 "kept, but no longer resumed from")

    def close(self) -> None:
        """Release the checkpoint (the loop started: every object is tracked)."""
        if self.chosen.reader is not None:
            self.chosen.reader.close()
            self.chosen.reader = None


def check_resume_argument(resume: Any) -> None:
    """``Run(resume=...)`` takes "auto", "never", a step number or a checkpoint path."""
    if resume in ("auto", "never") or isinstance(resume, (Path, int)) and not isinstance(resume, bool):
        return
    if isinstance(resume, str) and resume:
        return  # a checkpoint path given as a string
    raise ValueError(f"resume must be 'auto', 'never', a step number or a checkpoint path, but got {resume!r}")


def set_aside(path: Path, error: BaseException) -> None:
    """A damaged checkpoint: rename it ``*.corrupt`` (kept for inspection) and say so."""
    moved = quarantine(path)
    warn(f"checkpoint {path} is damaged ({error}); moved it to {moved} and "
         "falling back to the previous one")


def _explicit(path: Path, checkpoints: list[CheckpointInfo]) -> Chosen:
    """An explicit resume from step S starts a new timeline at S: the folder's checkpoints after
    S belong to the old one; they are renamed ``*.superseded`` once the run begins."""
    reader, state, info = _open(path)
    newer = [c for c in checkpoints if c.step > info.step]
    return Chosen(checkpoint=info, state=state, reader=reader, remaining=[c for c in checkpoints if c not in newer],
                  superseded=newer)


def _open(path: Path) -> tuple[CheckpointReader, dict[str, Any], CheckpointInfo]:
    """Open ``path`` for restoring and read the run's own state from it. The tracked objects'
    tensors are read later, straight into them, by ``reader.restore_into`` (a checkpoint of the
    older format, with one hash for its whole file, is read and verified whole here)."""
    if not Path(path).exists():
        raise CheckpointNotFoundError(f"No checkpoint at {path}: the path does not exist.")
    reader = CheckpointReader(path)
    try:
        keys = reader.keys or []
        if RESERVED not in keys:
            raise FormatVersionError(
                f"{path} was written by savegame.save(), not by a Run; load it with "
                "savegame.load(path, into={...}) instead of resuming from it")
        state = reader.read([k for k in (RESERVED, "extras") if k in keys])
    except BaseException:
        reader.close()
        raise
    manifest = reader.manifest
    return reader, state, CheckpointInfo(path=Path(path), step=manifest["step"], epoch=manifest["epoch"],
                                         metrics=metrics_from_json(manifest.get("metrics", {})),
                                         created=manifest.get("created", 0.0), size=0)


def kept_hyperparameters(changes: dict[str, list[Any]], param_groups: Any) -> dict[str, Any]:
    """The changed config keys that name a hyperparameter of a restored optimizer (``lr``,
    ``weight_decay`` ...) whose restored value differs from the new config: ``{key: value in use}``."""
    if not changes or not isinstance(param_groups, list):
        return {}
    kept = {}
    for key, (_, new) in changes.items():
        field_name = key.rsplit(".", 1)[-1]
        used = [g[field_name] for g in param_groups if isinstance(g, dict) and field_name in g]
        if used and any(u != new for u in used):
            kept[key] = used[0] if len(set(map(repr, used))) == 1 else used
    return kept


def open_run_info(folder: RunFolder, config: dict[str, Any],
                  checkpoints: Sequence[CheckpointInfo] = ()) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """``run.json`` for a process that opens the run now, and what its config changed: a new one,
    or the existing one marked running by this pid and host, the change named key by key (a
    warning, and ``config_history``). A damaged one is set aside (a warning) and replaced by a
    new one that lists the committed ``checkpoints``' steps as saved."""
    try:
        info = folder.read_info()
    except FileNotFoundError:
        return new_run_info(folder.path.name, config=config), {}
    except RunInfoDamagedError as error:
        # run.json is rewritten whole and atomically, so damage is the disk's or a hand's. The
        # checkpoints hold what a resume needs; refusing would stop every requeued rerun of a job.
        aside = set_aside_run_info(folder.path)
        warn(f"{error}. Moved it to {aside.name} and started a new run.json: the run resumes from its "
             "checkpoints, but the history that file held (earlier resumes, config changes, status) is gone")
        info = new_run_info(folder.path.name, config=config)
        info["saved_steps"] = sorted({c.step for c in checkpoints})
        info["recovered_from"] = aside.name
        return info, {}
    changes = config_changes(info.get("config") or {}, config)
    if changes:
        listed = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())
        warn(
            f"{folder.path}/run.json: the config changed since the last process ({listed}); run.json "
            "records the new values and the change. State restored from the checkpoint (the "
            "optimizer's lr, the schedule ...) keeps its saved values unless you set them again "
            "after run.track()")
        info.setdefault("config_history", []).append({"time": time.time(), "step": None, "changed": changes})
    if info.get("status") == "stopped":
        best = info.get("best") or {}
        hint = f" To start again from the best checkpoint: Run(..., resume={best['step']})." if best.get("step") else ""
        warn(f"{folder.path} was stopped early: {info.get('message')} Resuming from its newest "
             f"checkpoint.{hint}")
    info["config"] = config_as_json(config)
    info["status"], info["message"] = "running", None
    # this process owns the run now: `savegame ls` judges liveness by this pid on this host
    info["pid"], info["host"] = os.getpid(), socket.gethostname()
    return info, changes


def restore_object(chosen: Chosen, name: str, obj: Any, *, restored: set[str]) -> None:
    """Load ``name`` from the chosen checkpoint into ``obj`` (all mismatches listed first).
    Raises :class:`CheckpointCorruptError` (a ``PartiallyRestoredError`` when some of ``obj`` was
    overwritten already): the caller falls back to the previous checkpoint."""
    if chosen.reader is None:
        raise RuntimeError(
            f"run.track({name}=...) after the loop started: a resumed run restores tracked objects "
            "from its checkpoint before the first epochs()/iterate(), and has released it since. "
            "Call run.track() before the loop.")
    saved = [k for k in chosen.reader.keys or [] if k not in (RESERVED, "extras")]
    if name not in saved:
        raise StateMismatchError(
            f"checkpoint {chosen.checkpoint.path} has no state for {name!r}; it holds {sorted(saved)}. Track "
            "the same objects as the run that saved it, or start a new run folder (or resume='never' in an "
            "empty one).")
    chosen.reader.restore_into({name: obj}, strict=True)


def note_kept_hyperparameters(info: dict[str, Any], changes: dict[str, list[Any]], name: str, obj: Any,
                              checkpoint: Path) -> None:
    """A changed config value that a restored optimizer does not follow: say so, and record what
    the run really uses in ``config_history[-1]["kept_from_checkpoint"]``."""
    kept = kept_hyperparameters(changes, getattr(obj, "param_groups", None))
    if not kept:
        return
    info["config_history"][-1].setdefault("kept_from_checkpoint", {}).update(
        {f"{name}.{k}": v for k, v in config_as_json(kept).items()})
    listed = ", ".join(f"{key}={value!r} (config: {changes[key][1]!r})" for key, value in kept.items())
    warn(f"the restored {name} goes on with {listed} from {checkpoint}; to use the new value, set "
         f"it after run.track(), e.g. for g in {name}.param_groups: g[...] = ...")
