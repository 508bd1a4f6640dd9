"""Every run under a TensorBoard logdir, read fast and cleaned into one value per step.

Reads event files written by savegame, ``torch.utils.tensorboard``, tensorboardX, Lightning, the
HF Trainer, Keras or TensorFlow (``simple_value`` scalars and the newer scalar tensors). A "run"
is a folder holding event files, as TensorBoard counts them, with three habits folded back into
their run:

- ``add_scalars("loss", {"train": ...})`` writes sub-folders, ``loss_train/`` (torch) or
  ``loss/train/`` (tensorboardX), each with the one tag ``loss``: read as the tag ``loss/train``
  of the run above;
- torch's ``add_hparams`` writes a timestamped sub-folder (read here as the parent's hparams);
- Keras writes ``train/`` and ``validation/`` sub-folders with the same tags (``epoch_loss``):
  read as one run named after their parent, each tag prefixed with its folder's name
  (``train/epoch_loss``, ``validation/epoch_loss``). Only when the parent has no scalars of its
  own, holds no other event folders, and the two share a loss tag with no split word: two
  experiments that happen to be called ``train`` and ``val`` log different tags and stay two runs.

Lightning's ``hparams.yaml`` beside the event files is read into the run's hparams (with
PyYAML, which Lightning installs), its exact values over the ones in the event file.

A resumed run that logged the same steps again (torch's writer appends a second file) is read
the way the rerun meant it: when a series steps backwards, the earlier points at or after that
step belong to the abandoned timeline and are dropped; a repeated step keeps its last value
(without a note when it never stepped backwards: Lightning logs ``epoch`` two or three times at
an epoch's last step, the HF Trainer ``train/epoch`` at each evaluation).

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

Keras's layout, as ``keras.callbacks.TensorBoard("logs/fit")`` writes it:

>>> for split, losses in (("train", (1.0, 0.6, 0.4)), ("validation", (1.1, 0.8, 0.7))):
...     with SummaryWriter(f"{root}/fit/{split}") as w:
...         for epoch, loss in enumerate(losses):
...             w.add_scalar("epoch_loss", loss, epoch)
>>> [run] = load_runs(f"{root}/fit")
>>> run.name, sorted(run.scalars)
('fit', ['train/epoch_loss', 'validation/epoch_loss'])
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
_SPLIT_VAL = ("validation", "val", "eval", "test")  # Keras: train/ + validation/


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
    found = set(folders)
    runs: dict[Path, RunData] = {}
    for parent, (train, val) in _split_candidates(folders).items():
        run = _read_split_run(root, parent, train, val, own=parent in found)
        if run is not None:
            runs[parent] = run
            folders = [f for f in folders if f not in (parent, train, val)]
    for folder in folders:
        notes: list[Finding] = []
        read = None
        owner = next((p for p in folder.parents if p in runs), None)  # tensorboardX nests: run/loss/train
        if owner is not None:  # folded into the run: add_scalars children and add_hparams folders
            scalars, hparams = read = _read_folder(folder, notes)
            if hparams and owner == folder.parent:
                runs[owner].hparams = {**hparams, **runs[owner].hparams}
                continue
            child = _add_scalars_child(folder.relative_to(owner).as_posix(), scalars)
            if child is not None:
                main_tag, key = child
                runs[owner].notes += notes
                runs[owner].scalars[f"{main_tag}/{key}"] = _clean(scalars[main_tag], f"{main_tag}/{key}",
                                                                   runs[owner].notes)
                continue
        runs[folder] = _read_run(root, folder, read, notes)
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


def _split_candidates(folders: list[Path]) -> dict[Path, tuple[Path, Path]]:
    """{parent: (its train/, its validation/)} where these two are the only event folders below it."""
    out: dict[Path, tuple[Path, Path]] = {}
    for train in folders:
        if train.name != "train":
            continue
        below = [f for f in folders if train.parent in f.parents]
        vals = [f for f in below if f.parent == train.parent and f.name in _SPLIT_VAL]
        if len(below) == 2 and len(vals) == 1:
            out[train.parent] = (train, vals[0])
    return out


def _read_split_run(root: Path, parent: Path, train: Path, val: Path, own: bool) -> RunData | None:
    """Keras's ``train/`` and ``validation/`` as one run, or None when they are not that layout."""
    from .tags import plain_loss

    run = RunData(name=_run_name(root, parent), path=parent, info=_run_info(parent))
    scalars, hparams = _read_folder(parent, run.notes) if own else ({}, {})
    if scalars:  # the parent logs its own curves: a run of its own, and so are its sub-folders
        return None
    raw = {}
    for folder in (train, val):
        raw[folder], folder_hparams = _read_folder(folder, run.notes)
        hparams = {**folder_hparams, **hparams}
    if not any(plain_loss(tag) for tag in raw[train].keys() & raw[val].keys()):
        return None
    # With update_freq="batch" (or N) the train loss read is batch_loss, on the optimizer's
    # iteration axis; the validation loss on that axis is evaluation_loss_vs_iterations, not
    # epoch_loss (steps 0, 1, 2 ... are epochs). Named plainer, it is the one picked.
    per_batch = any(tag.startswith("batch_") for tag in raw[train])
    for folder in (train, val):
        for tag, points in raw[folder].items():
            if per_batch and folder == val and tag.startswith("evaluation_") and tag.endswith("_vs_iterations"):
                tag = tag[:-len("_vs_iterations")]
            run.scalars[f"{folder.name}/{tag}"] = _clean(points, f"{folder.name}/{tag}", run.notes)
    run.hparams = _config_hparams(run.info) or hparams
    return run


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


def _run_name(root: Path, folder: Path) -> str:
    return folder.relative_to(root).as_posix() if folder != root else folder_name(root)


def _read_run(root: Path, folder: Path, read: tuple[dict, dict] | None = None,
              notes: Sequence[Finding] = ()) -> RunData:
    """The run in ``folder``; ``read``: its ``_read_folder`` result (with ``notes``) if already read."""
    run = RunData(name=_run_name(root, folder), path=folder, info=_run_info(folder), notes=list(notes))
    raw, hparams = read if read is not None else _read_folder(folder, run.notes)
    run.scalars = {tag: _clean(points, tag, run.notes) for tag, points in raw.items()}
    run.hparams = _config_hparams(run.info) or {**hparams, **_hparams_yaml(folder)}
    return run


def _hparams_yaml(folder: Path) -> dict[str, Any]:
    """Lightning's ``hparams.yaml``, nested keys joined with ``/`` as Lightning's event file has
    them; {} when there is none, PyYAML is missing, or it does not parse.

    Its values are exact where the event file's are not (``num_classes: 3``, not 3.0). Lightning
    writes it with ``yaml.dump``, so a tuple hparam reads ``!!python/tuple``: such tags are read
    as the plain list, mapping or string they hold, never as Python objects.
    """
    path = folder / "hparams.yaml"
    try:
        import yaml
    except ImportError:
        return {}
    if not path.is_file():
        return {}

    class Loader(yaml.SafeLoader):
        pass

    def plain(loader: Any, suffix: str, node: Any) -> Any:
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        return loader.construct_scalar(node)

    Loader.add_multi_constructor("", plain)  # any tag SafeLoader does not know
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return _flat(data) if isinstance(data, dict) else {}


def _flat(mapping: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


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


def _add_scalars_child(rel: str, scalars: dict[str, Any]) -> tuple[str, str] | None:
    """(main tag, key) when this folder, at ``rel`` below its run, is what
    ``add_scalars(main_tag, {key: ...})`` writes: one tag, and the folder at
    ``<main_tag with / as _>_<key>`` (torch) or ``<main_tag>/<key>`` (tensorboardX).

    >>> _add_scalars_child("loss_train", {"loss": ...}), _add_scalars_child("loss/all/val", {"loss/all": ...})
    (('loss', 'train'), ('loss/all', 'val'))
    """
    if len(scalars) != 1:
        return None
    [main_tag] = scalars
    for prefix in (main_tag.replace("/", "_") + "_", main_tag + "/"):
        if rel.startswith(prefix) and len(rel) > len(prefix):
            return main_tag, rel[len(prefix):]
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
    # A step only ever repeated, never gone back to, is a framework's habit (Lightning's `epoch`), not a resume.
    if dropped and bool(np.any(steps[1:] < steps[:-1])):
        notes.append(Finding(
            "restarted", f"{tag}: {dropped} point(s) were logged again for the same steps (a resumed "
            "run); the later values are used", severity="info"))
    return Series(steps[index], values[index])
