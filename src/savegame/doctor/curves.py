"""Every run under a TensorBoard logdir, read fast and cleaned into one value per step.

Reads event files written by savegame, ``torch.utils.tensorboard``, tensorboardX, Lightning or
TensorFlow (``simple_value`` scalars and the newer scalar tensors). A "run" is a folder holding
event files, as TensorBoard counts them, with two of torch's habits folded back into their run:
``add_scalars("loss", {"train": ...})`` writes ``loss_train/`` sub-folders (read here as the tag
``loss/train`` of the parent), and ``add_hparams`` writes a timestamped sub-folder (read here as
the parent's hparams).

A resumed run that logged the same steps again (torch's writer appends a second file) is read
the way the rerun meant it: when a series steps backwards, the earlier points at or after that
step belong to the abandoned timeline and are dropped; a repeated step keeps its last value.

>>> import tempfile
>>> from torch.utils.tensorboard import SummaryWriter
>>> root = tempfile.mkdtemp()
>>> with SummaryWriter(f"{root}/a") as w:
...     for step in (1, 2, 3, 2, 3, 4):        # died after step 3, resumed from step 1
...         w.add_scalar("loss", float(step * 10), step)
>>> [run] = load_runs(root)
>>> run.name, run.scalars["loss"].steps.tolist(), run.notes[0].kind
('a', [1, 2, 3, 4], 'restarted')

Runs are named by their path under the root; a root that is itself a run is named after its
folder (``savegame doctor runs/demo`` calls it ``demo``, also when given as ``.``):

>>> [r.name for r in load_runs(f"{root}/a")]
['a']
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import SavegameError
from ..folder import RunFolder
from .diagnosis import Finding

_SKIP_DIRS = {"checkpoints", "discarded-logs", "__pycache__", ".git"}
_HPARAMS_TAG = "_hparams_/session_start_info"


@dataclass
class Series:
    """One scalar curve: ``steps`` strictly increasing (int64), ``values`` float64 (NaN/inf kept)."""

    steps: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.steps)


@dataclass
class RunData:
    """One run: its scalars, its hparams, its ``run.json`` (savegame runs only), reading notes."""

    name: str
    path: Path
    scalars: dict[str, Series] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] | None = None
    notes: list[Finding] = field(default_factory=list)


class LogdirError(SavegameError, FileNotFoundError):
    """The path to read is missing, not a folder, or holds no event files."""


def load_runs(root: str | os.PathLike) -> list[RunData]:
    """Every run under ``root`` (``root`` itself may be one), sorted by name.

    Raises :class:`LogdirError` when ``root`` does not exist or is not a folder; an existing
    folder without event files gives ``[]``.
    """
    root = Path(root)
    if not root.exists():
        raise LogdirError(f"{root} does not exist; give a TensorBoard logdir (a folder of event files)")
    if not root.is_dir():
        raise LogdirError(f"{root} is a file; give the folder that holds the event files (its parent)")
    folders = sorted(_event_folders(root))
    runs: dict[Path, RunData] = {}
    for folder in folders:
        parent = folder.parent
        if parent in runs:  # folded into the parent: add_scalars children and add_hparams folders
            scalars, hparams = _read_folder(folder)
            if hparams:
                runs[parent].hparams = {**hparams, **runs[parent].hparams}
                continue
            child = _add_scalars_child(folder.name, scalars)
            if child is not None:
                main_tag, key = child
                runs[parent].scalars[f"{main_tag}/{key}"] = _clean(scalars[main_tag], f"{main_tag}/{key}",
                                                                    runs[parent].notes)
                continue
        runs[folder] = _read_run(root, folder)
    return sorted(runs.values(), key=lambda r: r.name)


def read_run(path: str | os.PathLike, name: str | None = None) -> RunData:
    """One run folder (its own event files, plus the sub-folders ``load_runs`` folds into it)."""
    path = Path(path)
    for run in load_runs(path):
        if run.path == path:
            if name is not None:
                run.name = name
            return run
    return RunData(name=name or path.name, path=path, info=_run_info(path))


def _event_folders(root: Path) -> Iterable[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".")]
        if any("tfevents" in f for f in files):
            yield Path(folder)


def _event_files(folder: Path) -> list[Path]:
    # Names hold the creation time, then a per-process counter (torch: ...<time>.<host>.<pid>.<n>):
    # numbers compared as numbers give the write order, also past file 9 of one second.
    return sorted((p for p in folder.iterdir() if "tfevents" in p.name and p.is_file()),
                  key=lambda p: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", p.name)])


def folder_name(path: str | os.PathLike) -> str:
    """The name of the folder ``path`` points to, also for ``.`` or ``..`` (resolved), else the path."""
    path = Path(path)
    return path.name if path.name not in ("", ".", "..") else (path.resolve().name or str(path))


def root_labels(roots: Sequence[str | os.PathLike]) -> list[str]:
    """A short, distinct label per root, for naming runs of several roots: each folder's name, with
    as many parent folders as it takes to tell apart roots of the same name.

    >>> root_labels(["runs/exp1", "/data/runs/demo", "old/demo"])
    ['exp1', 'runs/demo', 'old/demo']
    """
    parts = [Path(os.path.abspath(r)).parts[1:] or (str(r),) for r in roots]
    depth = [1] * len(parts)
    while True:
        labels = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        clash = [i for i, label in enumerate(labels) if labels.count(label) > 1 and depth[i] < len(parts[i])]
        if not clash:
            return labels
        for i in clash:
            depth[i] += 1


def best_checkpoint(run: RunData) -> dict[str, Any] | None:
    """The run's best checkpoint, the one ``savegame export RUN --best`` writes, as
    ``{"step", "metric", "mode", "value", "checkpoint"}``: ``run.json``'s ``best`` (the best of the
    kept checkpoints by the keep policy's metric, see :mod:`savegame.ranking`) while its folder is
    on disk; if it was deleted since, the best of the checkpoints on disk by the same metric. None
    for a run without ``run.json`` or without a recorded best.

    >>> best_checkpoint(RunData("r", None, info={"best": {"metric": "loss/val", "mode": "min",
    ...                                                    "value": 0.2, "step": 30}}))["step"]
    30
    """
    from ..ranking import MODES

    best = (run.info or {}).get("best")
    if not isinstance(best, dict) or not isinstance(best.get("metric"), str) or best.get("mode") not in MODES \
            or isinstance(best.get("step"), bool) or not isinstance(best.get("step"), int):
        return None
    found = {"step": best["step"], "metric": best["metric"], "mode": best["mode"], "value": best.get("value"),
             "checkpoint": best.get("checkpoint")}
    if run.path is None:
        return found
    folder = RunFolder(run.path)
    if isinstance(found["checkpoint"], str) and (folder.checkpoint_root / found["checkpoint"]).is_dir():
        return found  # the common case: no need to read every manifest
    kept = folder.checkpoints()
    same = next((c for c in kept if c.step == found["step"]), None)
    if same is not None:  # renamed since, e.g. by an older savegame: the same checkpoint
        return {**found, "checkpoint": same.path.name}
    on_disk = folder.best({"ranking": {"metric": found["metric"], "mode": found["mode"]}}, kept)
    return {**found, **on_disk} if on_disk is not None and on_disk["step"] is not None else None


def _read_run(root: Path, folder: Path) -> RunData:
    name = folder.relative_to(root).as_posix() if folder != root else folder_name(root)
    run = RunData(name=name, path=folder, info=_run_info(folder))
    raw, hparams = _read_folder(folder, run.notes)
    run.scalars = {tag: _clean(points, tag, run.notes) for tag, points in raw.items()}
    run.hparams = _config_hparams(run.info) or hparams
    return run


def _run_info(folder: Path) -> dict[str, Any] | None:
    """``run.json`` checked as a savegame run file, else None: the doctor reads any logdir, and a
    run file that is damaged or not savegame's costs only the run facts the report shows."""
    try:
        return RunFolder(folder).read_info()
    except (OSError, ValueError):  # FormatVersionError is a ValueError
        return None


def _config_hparams(info: dict[str, Any] | None) -> dict[str, Any]:
    if not info or not isinstance(info.get("config"), dict):
        return {}
    from ..runinfo import hparams_from_config

    return hparams_from_config(info["config"])


def _read_folder(folder: Path, notes: list[Finding] | None = None
                 ) -> tuple[dict[str, tuple[list[int], list[float]]], dict[str, Any]]:
    """{tag: (steps, values)} in write order, and the hparams of a session start, if any; an
    event file with no valid record at all is named in ``notes``."""
    from tensorboard.compat.proto import event_pb2

    from .eventscan import scan_scalars

    scalars: dict[str, tuple[list[int], list[float]]] = {}
    hparams: dict[str, Any] = {}

    def other(record: bytes) -> None:  # everything but plain scalars, in file order: protobuf
        try:
            event = event_pb2.Event.FromString(record)
        except Exception:  # a damaged record: skip it, as TensorBoard's loader does
            return
        for value in event.summary.value:
            kind = value.WhichOneof("value")
            if value.tag == _HPARAMS_TAG:
                hparams.update(_session_hparams(value))
                continue
            number = (value.simple_value if kind == "simple_value" else
                      _scalar_tensor(value.tensor) if kind == "tensor" else None)
            if number is not None:
                steps, values = scalars.setdefault(value.tag, ([], []))
                steps.append(event.step)
                values.append(number)

    for path in _event_files(folder):
        try:
            blob = path.read_bytes()
        except OSError:
            continue  # unreadable: the folder's other files still count
        if not scan_scalars(blob, scalars, other) and blob and notes is not None:  # stops at a torn tail
            notes.append(Finding("unreadable", f"{path.name} holds no valid event record (damaged, or not "
                                 "an event file): it was skipped"))
    return scalars, hparams


def _scalar_tensor(tensor: Any) -> float | None:
    """The number in a 0-d float tensor (TF2 / new-style scalars), else None."""
    if tensor.tensor_shape.dim:
        return None
    if tensor.float_val:
        return float(tensor.float_val[0])
    if tensor.double_val:
        return float(tensor.double_val[0])
    if tensor.tensor_content and tensor.dtype in (1, 2):  # DT_FLOAT, DT_DOUBLE
        return float(np.frombuffer(tensor.tensor_content, "<f4" if tensor.dtype == 1 else "<f8")[0])
    return None


def _session_hparams(value: Any) -> dict[str, Any]:
    from tensorboard.plugins.hparams import plugin_data_pb2

    try:
        data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    except Exception:
        return {}
    if not data.HasField("session_start_info"):
        return {}
    out: dict[str, Any] = {}
    for key, v in data.session_start_info.hparams.items():
        kind = v.WhichOneof("kind")
        out[key] = getattr(v, kind) if kind else None
    return out


def _add_scalars_child(folder_name: str, scalars: dict[str, Any]) -> tuple[str, str] | None:
    """(main tag, key) when this folder is what torch's ``add_scalars(main_tag, {key: ...})``
    writes: one tag, and the folder named ``<main_tag with / as _>_<key>``."""
    if len(scalars) != 1:
        return None
    [main_tag] = scalars
    prefix = main_tag.replace("/", "_") + "_"
    if folder_name.startswith(prefix) and len(folder_name) > len(prefix):
        return main_tag, folder_name[len(prefix):]
    return None


def _clean(points: tuple[list[int], list[float]], tag: str, notes: list[Finding]) -> Series:
    steps = np.asarray(points[0], dtype=np.int64)
    values = np.asarray(points[1], dtype=np.float64)
    if len(steps) < 2 or bool(np.all(steps[1:] > steps[:-1])):
        return Series(steps, values)
    keep: list[int] = []  # indices, a stack: a step going back drops the abandoned timeline
    dropped = 0
    for i, step in enumerate(steps.tolist()):
        while keep and steps[keep[-1]] >= step:
            keep.pop()
            dropped += 1
        keep.append(i)
    index = np.asarray(keep, dtype=np.int64)
    if dropped:
        notes.append(Finding(
            "restarted", f"{tag}: {dropped} point(s) were logged again for the same steps (a resumed "
            "run); the later values are used", severity="info"))
    return Series(steps[index], values[index])
