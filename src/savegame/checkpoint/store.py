"""One checkpoint folder on disk, written with a commit protocol and read back verified.

A checkpoint ``<root>/step-000480/`` holds ``tensors.safetensors``, ``manifest.json`` (format
version, step, epoch, metrics, file sizes and hashes, the JSON half of the state) and ``COMMIT``,
written last. Everything is first written into ``step-000480.tmp-<pid>-<random>``, fsynced and
renamed into place, so a crash at any moment leaves either a complete checkpoint or an ignored
temp folder. Only folders holding ``COMMIT`` count.

>>> import tempfile, torch
>>> from pathlib import Path
>>> root = Path(tempfile.mkdtemp())
>>> info = write_checkpoint(root / checkpoint_dirname(480), {"w": torch.ones(2)}, step=480, epoch=3)
>>> [c.step for c in list_checkpoints(root)]
[480]
>>> read_checkpoint(info.path)[0]["w"]
tensor([1., 1.])
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import xxhash

from savegame.checkpoint import codec
from savegame.checkpoint.safetensors_io import FileInfo, hash_file, read_header, read_tensors, write_tensors
from savegame.errors import CheckpointCorruptError, CheckpointNotFoundError, FormatVersionError, SaveFailedError

__all__ = [
    "CheckpointInfo", "Snapshot", "checkpoint_dirname", "snapshot", "persist", "write_checkpoint",
    "is_committed", "read_manifest", "read_checkpoint", "verify_checkpoint", "list_checkpoints",
    "quarantine", "delete_checkpoint", "remove_stale_temps",
]

FORMAT = "savegame.checkpoint"
VERSION = 1
TENSORS, MANIFEST, COMMIT = "tensors.safetensors", "manifest.json", "COMMIT"
_TEMP = re.compile(r"^(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]+$")
_DISK_PROBLEMS = {
    errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
    errno.EPERM: "permission denied", errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EIO: "the disk reported an I/O error",
    errno.EEXIST: "a part of the path is a file, not a folder",  # only mkdir of the parent can raise it
}


@dataclass(frozen=True)
class CheckpointInfo:
    """What ``list_checkpoints`` knows about a committed checkpoint, from its manifest alone.

    >>> CheckpointInfo(Path("step-000001"), step=1, epoch=0, metrics={}, created=0.0, size=0).step
    1
    """

    path: Path
    step: int
    epoch: int
    metrics: dict[str, float]
    created: float  # unix time of the save
    size: int  # bytes of all its files


@dataclass(frozen=True)
class Snapshot:
    """A state ready to persist: its JSON tree and host-memory tensors, safe to pass to a thread.

    >>> import torch
    >>> sorted(snapshot({"w": torch.ones(1)}).tensors)
    ['w']
    """

    tree: Any
    tensors: dict[str, torch.Tensor] = field(repr=False)


def checkpoint_dirname(step: int) -> str:
    """The folder name of the checkpoint at ``step``: at least six digits, so names sort by step.

    >>> checkpoint_dirname(480), checkpoint_dirname(12345678)
    ('step-000480', 'step-12345678')
    """
    return f"step-{step:06d}"


def snapshot(state: Any, *, copy: bool = True) -> Snapshot:
    """Encode ``state`` and copy its tensors to host memory (the part of a save that must run on
    the training thread). ``copy=False`` skips copying CPU tensors, for a save that persists at
    once on the same thread. Raises ``NotSerializableError`` naming the key path.

    >>> import torch
    >>> w = torch.zeros(1); snap = snapshot({"w": w}); _ = w.add_(1)
    >>> snap.tensors["w"]
    tensor([0.])
    """
    tree, tensors = codec.encode(state, copy=copy)
    return Snapshot(tree=tree, tensors=tensors)


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


def metrics_to_json(metrics: Mapping[str, float]) -> dict[str, Any]:
    """Strict JSON has no NaN/inf, but a diverged run's validation loss is one: those are stored
    as the strings "nan", "inf", "-inf" (``metrics_from_json`` reads them back).

    >>> metrics_from_json(metrics_to_json({"loss": float("nan"), "acc": 0.5}))
    {'loss': nan, 'acc': 0.5}
    """
    return {k: v if math.isfinite(v) else repr(v) for k, v in metrics.items()}


def metrics_from_json(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: float(v) if v in ("nan", "inf", "-inf") else v for k, v in metrics.items()}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_small(path: Path, data: bytes) -> FileInfo:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    return FileInfo(size=len(data), hash=f"xxh3_128:{xxhash.xxh3_128_hexdigest(data)}")


def _savegame_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("savegame")
    except PackageNotFoundError:
        return "unknown"


def _aside(path: Path, kind: str) -> Path:
    return path.with_name(f"{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


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
    temp, old, committed = _aside(path, "tmp"), None, False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp.mkdir()
        tensor_file = write_tensors(temp / TENSORS, snap.tensors, metadata={"format": FORMAT})
        manifest = {
            "format": FORMAT, "version": VERSION, "step": step, "epoch": epoch, "metrics": metrics_to_json(plain),
            "created": time.time(), "savegame_version": _savegame_version(),
            "torch_version": torch.__version__, "info": info_tree,
            "files": {TENSORS: {"size": tensor_file.size, "hash": tensor_file.hash}},
            "state": snap.tree,
        }
        data = json.dumps(manifest, allow_nan=False, ensure_ascii=False, indent=1).encode("utf-8")
        manifest_file = _write_small(temp / MANIFEST, data)
        _fsync_dir(temp)
        if replace:
            old = _aside(path, "old")
            os.rename(path, old)
        os.rename(temp, path)
        _fsync_dir(path.parent)
        commit = json.dumps({MANIFEST: {"size": manifest_file.size, "hash": manifest_file.hash}})
        commit_size = _write_small(path / COMMIT, commit.encode()).size
        committed = True
        _fsync_dir(path)
    except BaseException as e:
        if not committed:
            _undo(path, temp, old)
        if isinstance(e, OSError) and not committed:
            raise _save_failed(e, path) from e
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)  # the new checkpoint is committed; the old is garbage
    return CheckpointInfo(path=path, step=step, epoch=epoch, metrics=plain, created=manifest["created"],
                          size=tensor_file.size + manifest_file.size + commit_size)


def _undo(path: Path, temp: Path, old: Path | None) -> None:
    shutil.rmtree(temp, ignore_errors=True)
    if old is not None:
        if os.path.lexists(path) and not is_committed(path):
            shutil.rmtree(path, ignore_errors=True)
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


def is_committed(path: str | os.PathLike) -> bool:
    """True if ``path`` is a checkpoint folder whose save finished (it holds ``COMMIT``).

    >>> is_committed("/nonexistent")
    False
    """
    return os.path.isfile(os.path.join(path, COMMIT))


def _not_savegame(path: Path) -> FormatVersionError:
    with open(path, "rb") as f:
        first = f.read(4)
    if first.startswith(b"PK\x03\x04") or first[:1] == b"\x80" or path.suffix in (".pt", ".pth"):
        return FormatVersionError(
            f"{path} is a file, and this looks like a torch.save file; a savegame checkpoint is a folder. "
            "savegame never unpickles files; to read weights from it use savegame.import_weights(...)."
        )
    return FormatVersionError(f"{path} is a file; a savegame checkpoint is a folder holding {MANIFEST}.")


def read_manifest(path: str | os.PathLike) -> dict:
    """Read and validate ``manifest.json`` of a committed checkpoint (checked against ``COMMIT``).

    >>> import tempfile
    >>> from pathlib import Path
    >>> info = write_checkpoint(Path(tempfile.mkdtemp()) / "c", {"x": 1}, step=5, epoch=0)
    >>> read_manifest(info.path)["step"]
    5
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"No checkpoint at {path}: the path does not exist.")
    if not path.is_dir():
        raise _not_savegame(path)
    if not (path / MANIFEST).is_file() and is_committed(path):
        raise CheckpointCorruptError(f"{path / MANIFEST} is missing from a committed checkpoint; "
                                     "use another checkpoint.")
    if not (path / MANIFEST).is_file():
        raise FormatVersionError(f"{path} is not a savegame checkpoint: it has no {MANIFEST}.")
    data = (path / MANIFEST).read_bytes()
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        manifest = None
    # Check the format first: a newer savegame may also have changed what COMMIT holds.
    if isinstance(manifest, dict) and manifest.get("format") not in (None, FORMAT):
        raise FormatVersionError(f"{path} is not a savegame checkpoint: its {MANIFEST} has format "
                                 f"{manifest.get('format')!r}, expected {FORMAT!r}.")
    version = manifest.get("version") if isinstance(manifest, dict) else None
    if type(version) is int and version > VERSION:
        raise FormatVersionError(
            f"{path} was written by savegame {manifest.get('savegame_version', '?')} in checkpoint format "
            f"version {version}; this savegame ({_savegame_version()}) reads version {VERSION}. "
            "Fix: pip install -U savegame."
        )
    if not is_committed(path):
        raise CheckpointCorruptError(f"{path} is not committed (a save was interrupted): it has no "
                                     f"{COMMIT} file. Use an earlier checkpoint; this one is incomplete.")
    try:
        recorded = json.loads((path / COMMIT).read_bytes())[MANIFEST]
        recorded = FileInfo(size=recorded["size"], hash=recorded["hash"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointCorruptError(f"{path / COMMIT} is damaged ({e}); the checkpoint cannot be "
                                     "verified. Use another checkpoint.") from e
    found = FileInfo(size=len(data), hash=f"xxh3_128:{xxhash.xxh3_128_hexdigest(data)}")  # the bytes parsed
    if found != recorded:
        raise CheckpointCorruptError(
            f"{path / MANIFEST} does not match {COMMIT}: expected size {recorded.size} and hash "
            f"{recorded.hash}, found size {found.size} and hash {found.hash}. The manifest was altered "
            "or damaged; use another checkpoint."
        )
    if not isinstance(manifest, dict) or version != VERSION or not {"step", "epoch", "files", "state"} <= manifest.keys():
        raise CheckpointCorruptError(f"{path / MANIFEST} is not a valid version-{VERSION} manifest.")
    return manifest


def read_checkpoint(path: str | os.PathLike, *, verify: bool = True, map_location: Any = None) -> tuple[Any, dict]:
    """Read a committed checkpoint: ``(state, manifest)``. ``verify`` checks the tensor file's
    size and hash in the same pass that reads it (the manifest is always checked).

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> info = write_checkpoint(Path(tempfile.mkdtemp()) / "c", {"t": (1, 2)}, step=1, epoch=0)
    >>> read_checkpoint(info.path)[0]
    {'t': (1, 2)}
    """
    path = Path(path)
    manifest = read_manifest(path)
    entry = manifest["files"].get(TENSORS)
    if not isinstance(entry, dict) or not (path / TENSORS).is_file():
        raise CheckpointCorruptError(f"{path / TENSORS} is missing: the checkpoint lost its tensors. "
                                     "Restore it from a backup or use another checkpoint.")
    expected = FileInfo(size=entry["size"], hash=entry["hash"]) if verify else None
    tensors = read_tensors(path / TENSORS, expected=expected)
    try:
        state = codec.decode(manifest["state"], tensors, map_location=map_location)
    except CheckpointCorruptError as e:
        raise CheckpointCorruptError(f"{path / MANIFEST}: {e}") from e
    return state, manifest


def verify_checkpoint(path: str | os.PathLike) -> list[str]:
    """Check every file of a checkpoint against its recorded size and hash; never raises for
    damage. Returns human-readable problems naming the files (empty: the checkpoint is good).

    >>> import tempfile
    >>> from pathlib import Path
    >>> verify_checkpoint(write_checkpoint(Path(tempfile.mkdtemp()) / "c", {}, step=0, epoch=0).path)
    []
    """
    path = Path(path)
    try:
        manifest = read_manifest(path)
    except (ValueError, OSError) as e:
        return [str(e)]
    problems = []
    for name, entry in manifest["files"].items():
        file = path / name
        if not file.is_file():
            problems.append(f"{file} is missing.")
            continue
        try:
            found = hash_file(file)
        except OSError as e:
            problems.append(f"{file} cannot be read: {e}.")
            continue
        if found != FileInfo(size=entry.get("size"), hash=entry.get("hash")):
            problems.append(f"{file} does not match the manifest: expected size {entry.get('size')} and "
                            f"hash {entry.get('hash')}, found size {found.size} and hash {found.hash}.")
    if not problems:
        try:
            names = set(read_header(path / TENSORS)[0]) - {"__metadata__"}
            codec.decode(manifest["state"], {n: torch.empty(0) for n in names})
        except (ValueError, OSError) as e:
            problems.append(str(e))
    return problems


def list_checkpoints(root: str | os.PathLike) -> list[CheckpointInfo]:
    """The committed checkpoints directly under ``root``, sorted by step, from their manifests
    alone (no tensor hashing). Temp, quarantined and uncommitted folders are skipped; a committed
    one whose manifest is damaged is skipped with a warning.

    >>> list_checkpoints("/nonexistent")
    []
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in sorted(root.iterdir()):
        if _TEMP.match(child.name) or any(f".{label}" in child.name for label in SET_ASIDE) \
                or not is_committed(child):
            continue
        try:
            m = read_manifest(child)
            size = sum(int(e["size"]) for e in m["files"].values())
            size += (child / MANIFEST).stat().st_size + (child / COMMIT).stat().st_size
            found.append(CheckpointInfo(path=child, step=int(m["step"]), epoch=int(m["epoch"]),
                                        metrics=metrics_from_json(m.get("metrics", {})), created=float(m.get("created", 0)),
                                        size=size))
        except (ValueError, OSError, KeyError, TypeError) as e:
            warnings.warn(f"Skipping checkpoint {child}: {e}", stacklevel=2)
    return sorted(found, key=lambda c: (c.step, c.created))


SET_ASIDE = ("corrupt", "superseded")


def quarantine(path: str | os.PathLike, label: str = "corrupt") -> Path:
    """Rename a checkpoint to ``<name>.<label>`` (``.<label>-2``... if taken) so it is ignored
    but kept for inspection; returns the new path. Labels: ``corrupt`` (damaged), ``superseded``
    (newer than the checkpoint a run was explicitly resumed from).

    >>> import tempfile
    >>> from pathlib import Path
    >>> quarantine(write_checkpoint(Path(tempfile.mkdtemp()) / "c", {}, step=0, epoch=0).path).name
    'c.corrupt'
    """
    path = Path(path)
    if label not in SET_ASIDE:
        raise ValueError(f"quarantine(label=...) must be one of {SET_ASIDE}, got {label!r}")
    target, n = path.with_name(f"{path.name}.{label}"), 1
    while os.path.lexists(target):
        n += 1
        target = path.with_name(f"{path.name}.{label}-{n}")
    os.rename(path, target)
    return target


def delete_checkpoint(path: str | os.PathLike) -> None:
    """Delete a checkpoint folder, ``COMMIT`` first: a crash mid-delete never leaves a partial
    folder that still looks committed.

    >>> import tempfile
    >>> from pathlib import Path
    >>> info = write_checkpoint(Path(tempfile.mkdtemp()) / "c", {}, step=0, epoch=0)
    >>> delete_checkpoint(info.path); info.path.exists()
    False
    """
    path = Path(path)
    if (path / COMMIT).exists():
        os.unlink(path / COMMIT)
        _fsync_dir(path)
    shutil.rmtree(path)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(root: str | os.PathLike, *, include_live: bool = False) -> list[Path]:
    """Delete leftovers of interrupted saves under ``root`` (``*.tmp-<pid>-*`` whose process is
    gone, or all of them with ``include_live=True``); returns what was removed. A previous
    checkpoint moved aside during an interrupted overwrite is put back instead.

    >>> import tempfile
    >>> remove_stale_temps(tempfile.mkdtemp())
    []
    """
    root = Path(root)
    removed = []
    for child in sorted(root.iterdir()) if root.is_dir() else []:
        m = _TEMP.match(child.name)
        if not m or (not include_live and _pid_alive(int(m["pid"]))):
            continue
        original = child.with_name(m["name"])
        if m["kind"] == "old" and not is_committed(original):
            if os.path.lexists(original):
                shutil.rmtree(original, ignore_errors=True)
            os.rename(child, original)  # the overwrite never committed: the old one is the real one
            continue
        shutil.rmtree(child, ignore_errors=True)
        removed.append(child)
    return removed
