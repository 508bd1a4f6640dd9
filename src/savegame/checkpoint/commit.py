"""Writing one checkpoint folder with a commit protocol: snapshot, then persist.

Everything, ``COMMIT`` last, is first written into ``step-000480.tmp-<pid>-<random>`` and
fsynced, then the folder is renamed into place: the rename is the commit point, so a crash at any
moment leaves either a complete checkpoint or an ignored temp folder (``layout.remove_stale_temps``
cleans it up). Five fsyncs a save: the three files, the temp folder, and its parent after the
rename. (Checkpoints written before COMMIT moved into the temp folder got it after the rename; a
folder left without it by a crash then is still ignored.)

>>> import tempfile, torch
>>> from pathlib import Path
>>> info = write_checkpoint(Path(tempfile.mkdtemp()) / "step-000480", {"w": torch.ones(2)}, step=480, epoch=3)
>>> info.step, sorted(p.name for p in info.path.iterdir())
(480, ['COMMIT', 'manifest.json', 'tensors.safetensors'])
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import xxhash

from savegame.checkpoint import codec
from savegame.checkpoint.host_buffers import HostBuffers
from savegame.checkpoint.layout import (COMMIT, aside_path, FORMAT, MANIFEST, TENSORS, CheckpointInfo, FileInfo,
                                        fsync_dir, is_committed, metrics_to_json, savegame_version)
from savegame.checkpoint.sharing import SharePlan, StoredCheckpoint, fingerprint, plan_sharing, written
from savegame.checkpoint.tensor_write import write_tensors
from savegame.errors import SaveFailedError

_log = logging.getLogger(__name__)
_DISK_PROBLEMS = {
    errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
    errno.EPERM: "permission denied", errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EIO: "the disk reported an I/O error",
    errno.EEXIST: "a part of the path is a file, not a folder",  # only mkdir of the parent can raise it
}


@dataclass(frozen=True)
class Snapshot:
    """A state ready to persist: its JSON tree and host-memory tensors, safe to pass to a thread;
    ``fingerprints`` of the original tensors when taken for an incremental save.

    >>> import torch
    >>> sorted(snapshot({"w": torch.ones(1)}).tensors)
    ['w']
    """

    tree: Any
    tensors: dict[str, torch.Tensor] = field(repr=False)
    fingerprints: dict[str, Any] = field(default_factory=dict, repr=False)


def snapshot(state: Any, *, copy: bool = True, buffers: HostBuffers | None = None,
             fingerprints: bool = False) -> Snapshot:
    """Encode ``state`` and copy its tensors to host memory (the part of a save that must run on
    the training thread). ``copy=False`` skips copying CPU tensors, for a save that persists at
    once on the same thread; ``buffers`` makes the copies into buffers kept from the last snapshot
    (and waits for CUDA copies to land); ``fingerprints`` notes each tensor's version counter
    (see ``sharing.fingerprint``). Raises ``NotSerializableError`` naming the key path.

    >>> import torch
    >>> w = torch.zeros(1); snap = snapshot({"w": w}); _ = w.add_(1)
    >>> snap.tensors["w"]
    tensor([0.])
    """
    prints: dict[str, Any] = {}
    noted = (lambda name, t: prints.__setitem__(name, fingerprint(t))) if fingerprints else None
    if buffers is None:
        tree, tensors = codec.encode(state, copy=copy, seen_tensor=noted)
        return Snapshot(tree=tree, tensors=tensors, fingerprints=prints)
    try:
        tree, tensors = codec.encode(state, copier=buffers.copy, seen_tensor=noted)
    finally:
        buffers.synchronize()
    return Snapshot(tree=tree, tensors=tensors, fingerprints=prints)


def plain_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """Metrics as ``{str: float}``; a 0-d tensor is read here (a device sync, once per real save)."""
    out = {}
    for key, value in (metrics or {}).items():
        if not isinstance(key, str):
            raise TypeError(f"Metric names must be str, but got {key!r}.")
        if isinstance(value, torch.Tensor) and value.numel() != 1 or isinstance(value, (str, bytes, bool)):
            ok = False
        else:
            try:
                value, ok = float(value), True
            except (TypeError, ValueError):
                ok = False
        if not ok:
            raise TypeError(f"Metric {key!r} must be a number (float, int, 0-d tensor or numpy scalar), "
                            f"but got {type(value).__name__} {str(value)[:80]}; pass float(...) of it.")
        out[key] = value
    return out


def write_small(path: Path, data: bytes) -> FileInfo:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    return FileInfo(size=len(data), hash=f"xxh3_128:{xxhash.xxh3_128_hexdigest(data)}")


def _check_target(path: Path, overwrite: bool) -> bool:
    """True if an old folder is in the way (to be moved aside); raises if it must not be."""
    if not os.path.lexists(path):
        return False
    if not path.is_dir():
        raise FileExistsError(f"Cannot save a checkpoint to {path}: a file of that name exists. "
                              "Choose another path or remove the file.")
    if is_committed(path) and not overwrite:
        raise FileExistsError(f"{path} already holds a committed checkpoint. Pass overwrite=True to "
                              "replace it (the new one is committed before the old one is removed).")
    if not is_committed(path) and not set(os.listdir(path)) <= {TENSORS, MANIFEST}:
        raise FileExistsError(f"Cannot save a checkpoint to {path}: the folder exists and is not a "
                              "savegame checkpoint. Choose another path or empty the folder.")
    return True  # committed with overwrite, or the leftover of a save interrupted before COMMIT


def persist(
    snap: Snapshot, path: str | os.PathLike, *, step: int, epoch: int,
    metrics: Mapping[str, Any] | None = None, info: Mapping[str, Any] | None = None, overwrite: bool = False,
) -> CheckpointInfo:
    """Write a snapshot as the committed checkpoint folder ``path`` (temp folder, fsync, rename,
    ``COMMIT``). Any disk failure removes the temp folder and raises ``SaveFailedError``; earlier
    checkpoints are never touched.

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "step-000010"
    >>> persist(snapshot({"w": torch.ones(1)}), path, step=10, epoch=1, metrics={"loss": 0.5}).metrics
    {'loss': 0.5}
    """
    return persist_incremental(snap, path, step=step, epoch=epoch, metrics=metrics, info=info,
                               overwrite=overwrite)[0]


def persist_incremental(
    snap: Snapshot, path: str | os.PathLike, *, step: int, epoch: int,
    metrics: Mapping[str, Any] | None = None, info: Mapping[str, Any] | None = None, overwrite: bool = False,
    previous: StoredCheckpoint | None = None, previous_fingerprints: Mapping[str, Any] | None = None,
    before_commit: Callable[[], None] | None = None, attach: Callable[[Path], dict[str, Any]] | None = None,
) -> tuple[CheckpointInfo, StoredCheckpoint]:
    """:func:`persist`, sharing with ``previous`` (the newest committed checkpoint) the tensors whose
    bytes did not change (``sharing.plan_sharing``: its files are hard-linked, not written again);
    returns the checkpoint and what it holds, to share with at the next save. ``before_commit``
    runs just before the commit (a background save fsyncs the run's event files there).
    ``attach(temp)`` moves files written elsewhere into the temp folder before the manifest is
    written and returns their record, kept as the manifest's ``sharded`` (the DCP files of a
    torchrun job's sharded state, ``savegame.sharded``); ``verify`` checks the files it lists.

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> root, frozen = Path(tempfile.mkdtemp()), torch.ones(1 << 20)
    >>> _, first = persist_incremental(snapshot({"frozen": frozen}), root / "a", step=1, epoch=0)
    >>> _, second = persist_incremental(snapshot({"frozen": frozen}), root / "b", step=2, epoch=0, previous=first)
    >>> second.tensors["frozen"].file.startswith("shared-")
    True
    """
    path = Path(path)
    for name, value in (("step", step), ("epoch", epoch)):
        if type(value) is not int or value < 0:
            raise ValueError(f"{name} must be an int >= 0, but got {name}={value!r}.")
    plain = plain_metrics(metrics)
    info_tree, info_tensors = codec.encode(dict(info or {}))  # fail before touching the disk
    if info_tensors:
        raise TypeError(f"info must hold plain values, not tensors (found {sorted(info_tensors)}); "
                        "put tensors in the state instead.")
    replace = _check_target(path, overwrite)
    temp, old, renamed, committed = aside_path(path, "tmp"), None, False, False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp.mkdir()
        plan = _link_shared(plan_sharing(snap.tensors, previous, fingerprints=snap.fingerprints,
                                         previous_fingerprints=previous_fingerprints), snap.tensors, temp)
        tensor_file = write_tensors(temp / TENSORS, plan.write, metadata={"format": FORMAT})
        # tensor_hashes: per-piece hashes, so a restore verifies each tensor as it reads it
        # (older readers ignore the key; the whole-file hash stays for them and for verify)
        files = {TENSORS: {"size": tensor_file.size, "hash": tensor_file.hash,
                           "tensor_hashes": tensor_file.tensor_hashes}}
        origin = previous.path.name if previous is not None else ""
        files.update((name, shared.record(origin)) for name, shared in plan.links.items())
        attached = attach(temp) if attach is not None else None
        manifest = {
            # version 2 only when it shares files: every checkpoint an older savegame could read stays readable
            "format": FORMAT, "version": 2 if plan.links else 1, "step": step, "epoch": epoch,
            "metrics": metrics_to_json(plain), "created": time.time(), "savegame_version": savegame_version(),
            "torch_version": torch.__version__, "info": info_tree, "files": files, "state": snap.tree,
        }
        if attached is not None:
            manifest["sharded"] = attached
        # compact: the C encoder (indent makes json fall back to Python, 1 ms a save here); `savegame show`
        # and `python -m json.tool` print it for a person
        data = json.dumps(manifest, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        manifest_file = write_small(temp / MANIFEST, data)
        commit = json.dumps({MANIFEST: {"size": manifest_file.size, "hash": manifest_file.hash}})
        commit_size = write_small(temp / COMMIT, commit.encode()).size
        if before_commit is not None:
            before_commit()
        fsync_dir(temp)  # the three files are durable, and their names (and the links) in the temp folder
        if replace:
            old = aside_path(path, "old")
            os.rename(path, old)
        os.rename(temp, path)  # the commit point: readers see the whole checkpoint or none of it
        renamed = True
        fsync_dir(path.parent)
        committed = True
    except BaseException as e:
        if not committed:
            _undo(path, temp, old, renamed=renamed)
        if isinstance(e, OSError) and not committed:
            raise _save_failed(e, path) from e
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)  # the new checkpoint is committed; the old is garbage
    size = sum(int(e["size"]) for e in files.values()) + manifest_file.size + commit_size
    size += sum(int(e["size"]) for e in (attached or {}).get("files", {}).values())
    stored = written(path, files, plan.write, previous, plan.links)
    return CheckpointInfo(path=path, step=step, epoch=epoch, metrics=plain, created=manifest["created"],
                          size=size), stored


def _link_shared(plan: SharePlan, tensors: Mapping[str, torch.Tensor], temp: Path) -> SharePlan:
    """Hard-link the plan's shared files into ``temp``. A file system without hard links (or a
    source that vanished) makes those tensors be written instead: always correct, only bigger."""
    for name, shared in list(plan.links.items()):
        try:
            os.link(shared.source, temp / name)
        except OSError as e:
            _log.info("savegame: writing %d unchanged tensors again: cannot hard-link %s (%s)",
                      len(shared.tensors), shared.source, e)
            del plan.links[name]
            plan.write.update((n, tensors[n]) for n in shared.tensors)
    if plan.links:  # the writer lays tensors out in the snapshot's order, as a full save does
        plan.write = {n: t for n, t in tensors.items() if n in plan.write}
    return plan


def _undo(path: Path, temp: Path, old: Path | None, *, renamed: bool = False) -> None:
    shutil.rmtree(temp, ignore_errors=True)
    if renamed or old is not None and os.path.lexists(path) and not is_committed(path):
        shutil.rmtree(path, ignore_errors=True)  # ours, not yet durable: the save failed
    if old is not None:
        try:
            os.rename(old, path)  # put the previous checkpoint back where it was
        except OSError:
            pass


def _save_failed(e: OSError, path: Path) -> SaveFailedError:
    problem = _DISK_PROBLEMS.get(e.errno, e.strerror or type(e).__name__)
    detail = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
    # OSError(errno, message) keeps .errno for callers and prints as "[Errno 28] message".
    return SaveFailedError(
        e.errno, f"Could not save checkpoint {path}: {problem} ({detail}). Previous checkpoints are intact "
        "and the partial save was removed. Fix: free disk space, check permissions, or save elsewhere."
    )


def write_checkpoint(
    path: str | os.PathLike, state: Any, *, step: int, epoch: int, metrics: Mapping[str, Any] | None = None,
    info: Mapping[str, Any] | None = None, overwrite: bool = False,
) -> CheckpointInfo:
    """Save ``state`` as the committed checkpoint folder ``path``: ``snapshot`` then ``persist``.

    The tensors are written straight from their memory (no host copy), since the save finishes
    before this returns.

    >>> import tempfile
    >>> from pathlib import Path
    >>> write_checkpoint(Path(tempfile.mkdtemp()) / "ckpt", {"lr": 0.1}, step=0, epoch=0).step
    0
    """
    return persist(snapshot(state, copy=False), path, step=step, epoch=epoch, metrics=metrics,
                   info=info, overwrite=overwrite)


