"""A checkpoint folder's layout on disk, read without torch: names, the checked manifest, listing,
quarantine, deletion and the leftovers of interrupted saves.

A checkpoint ``<root>/step-000480/`` holds ``tensors.safetensors``, ``manifest.json`` (format
version, step, epoch, metrics, file sizes and hashes, the JSON half of the state) and ``COMMIT``,
written last; with incremental saves also ``shared-<hash>.safetensors`` files, hard links to an
earlier checkpoint's tensors that did not change (``sharing.py``). Only folders holding
``COMMIT`` count. ``savegame ls``, the doctor and the report list
and rank checkpoints through this module alone, so they never import torch.

>>> checkpoint_dirname(480), list_checkpoints("/nonexistent")
('step-000480', [])
"""

from __future__ import annotations

import math
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import xxhash

from savegame import jsonread
from savegame.atomic import fsync_folder as fsync_dir
from savegame.atomic import rename_aside
from savegame.errors import CheckpointCorruptError, CheckpointNotFoundError, FormatVersionError
from savegame.messages import warn

FORMAT = "savegame.checkpoint"
VERSION = 2  # the newest manifest version this savegame reads (2: files shared between checkpoints)
TENSORS, MANIFEST, COMMIT = "tensors.safetensors", "manifest.json", "COMMIT"
# tmp: a save in flight; old: a checkpoint moved aside while its step is saved again; del: one
# being deleted. None is listed as a checkpoint; remove_stale_temps cleans them up.
TEMP = re.compile(r"^(?P<name>.+)\.(?P<kind>tmp|old|del)-(?P<pid>\d+)-[0-9a-f]+$")
SET_ASIDE = ("corrupt", "superseded")
_NAME = re.compile(r"^step-\d{6,}$")  # a checkpoint's own folder name (checkpoint_dirname)


@dataclass(frozen=True)
class FileInfo:
    """Size in bytes and content hash (``"xxh3_128:<hex>"``) of one file.

    >>> FileInfo(size=8, hash="xxh3_128:00").size
    8
    """

    size: int
    hash: str


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


def checkpoint_dirname(step: int) -> str:
    """The folder name of the checkpoint at ``step``: at least six digits, so names sort by step.

    >>> checkpoint_dirname(480), checkpoint_dirname(12345678)
    ('step-000480', 'step-12345678')
    """
    return f"step-{step:06d}"


def metrics_to_json(metrics: Mapping[str, float]) -> dict[str, Any]:
    """Strict JSON has no NaN/inf, but a diverged run's validation loss is one: those are stored
    as the strings "nan", "inf", "-inf" (``metrics_from_json`` reads them back).

    >>> metrics_from_json(metrics_to_json({"loss": float("nan"), "acc": 0.5}))
    {'loss': nan, 'acc': 0.5}
    """
    return {k: v if math.isfinite(v) else repr(v) for k, v in metrics.items()}


def metrics_from_json(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: float(v) if v in ("nan", "inf", "-inf") else v for k, v in metrics.items()}


def savegame_version() -> str:
    """This savegame's version (one source: ``savegame.__version__``)."""
    from savegame import __version__

    return __version__


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


def member(folder: Path, name: Any) -> Path:
    """``folder / name`` for a file name a checkpoint records: a plain name inside the folder, and
    not a symbolic link out of it. A checkpoint folder from someone else is read like an attacker's:
    nothing outside it is ever opened (``../x``, ``/etc/passwd``, a link to your own files).

    >>> member(Path("ckpt"), "tensors.safetensors")
    PosixPath('ckpt/tensors.safetensors')
    >>> member(Path("ckpt"), "../secret")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    savegame.errors.CheckpointCorruptError: ckpt/manifest.json names the file '../secret'...
    """
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\0" in name:
        raise CheckpointCorruptError(
            f"{folder / MANIFEST} names the file {str(name)[:200]!r}, which is not a plain file name inside "
            "the checkpoint folder: savegame reads nothing outside a checkpoint. The manifest was altered; "
            "use another checkpoint.")
    file = folder / name
    if os.path.islink(file):
        target = os.path.realpath(file)
        if os.path.commonpath([target, os.path.realpath(folder)]) != os.path.realpath(folder):
            raise CheckpointCorruptError(
                f"{file} is a symbolic link to {target}, outside the checkpoint folder: savegame reads nothing "
                "outside a checkpoint. If you made the link, copy the file in instead (cp -L); else use "
                "another checkpoint.")
    return file


def read_manifest(path: str | os.PathLike) -> dict:
    """Read and validate ``manifest.json`` of a committed checkpoint (checked against ``COMMIT``).

    >>> import tempfile
    >>> from pathlib import Path
    >>> from savegame.checkpoint.commit import write_checkpoint
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
    manifest_file = member(path, MANIFEST)
    if (size := manifest_file.stat().st_size) > jsonread.MAX_BYTES:
        raise CheckpointCorruptError(f"{manifest_file} has {size:,} bytes, more than any savegame manifest "
                                     f"({jsonread.MAX_BYTES:,} at most); it is damaged. Use another checkpoint.")
    data = manifest_file.read_bytes()
    try:
        manifest = jsonread.loads(data, str(manifest_file))
    except ValueError:
        manifest = None
    # Check the format first: a newer savegame may also have changed what COMMIT holds.
    if isinstance(manifest, dict) and manifest.get("format") not in (None, FORMAT):
        raise FormatVersionError(f"{path} is not a savegame checkpoint: its {MANIFEST} has format "
                                 f"{manifest.get('format')!r}, expected {FORMAT!r}.")
    version = manifest.get("version") if isinstance(manifest, dict) else None
    if type(version) is int and version > VERSION:
        raise FormatVersionError(
            f"{path} was written by savegame {manifest.get('savegame_version', '?')} in checkpoint format "
            f"version {version}; this savegame ({savegame_version()}) reads versions up to {VERSION}. "
            "Fix: pip install -U savegame."
        )
    if not is_committed(path):
        raise CheckpointCorruptError(f"{path} is not committed (a save was interrupted): it has no "
                                     f"{COMMIT} file. Use an earlier checkpoint; this one is incomplete.")
    try:
        recorded = jsonread.read(member(path, COMMIT), limit=4096)[MANIFEST]
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
    if not isinstance(manifest, dict) or type(version) is not int or not 1 <= version <= VERSION \
            or not {"step", "epoch", "files", "state"} <= manifest.keys() \
            or not isinstance(manifest["files"], dict):
        raise CheckpointCorruptError(f"{path / MANIFEST} is not a valid savegame manifest (version {version!r}; "
                                     f"this savegame reads versions 1 to {VERSION}).")
    return manifest


def list_checkpoints(root: str | os.PathLike, *,
                     damaged: list[tuple[Path, CheckpointCorruptError]] | None = None) -> list[CheckpointInfo]:
    """The committed checkpoints directly under ``root``, sorted by step, from their manifests
    alone (no tensor hashing). Temp, quarantined and uncommitted folders are skipped; a committed
    one whose manifest is damaged is skipped with a warning. With a ``damaged`` list, those go
    into it instead, as ``(path, error)``, and so does a folder under a checkpoint's own name
    that lost its ``COMMIT``: the commit protocol gives a folder that name only after its
    ``COMMIT`` is durable, so only damage makes one.

    >>> list_checkpoints("/nonexistent")
    []
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in sorted(root.iterdir()):
        if TEMP.match(child.name) or any(f".{label}" in child.name for label in SET_ASIDE):
            continue
        if not is_committed(child):
            if damaged is not None and _NAME.match(child.name) and child.is_dir():
                damaged.append((child, CheckpointCorruptError(
                    f"{child} has no {COMMIT} file, though a folder gets a checkpoint's name only after its "
                    f"{COMMIT} is written: the file was lost (or an older savegame, which wrote it "
                    "after the rename, was interrupted). It cannot be verified; use another checkpoint.")))
            continue
        before = folder_identity(child)
        try:
            m = read_manifest(child)
            size = sum(int(e["size"]) for e in m["files"].values())
            size += (child / MANIFEST).stat().st_size + (child / COMMIT).stat().st_size
            found.append(CheckpointInfo(path=child, step=int(m["step"]), epoch=int(m["epoch"]),
                                        metrics=metrics_from_json(m.get("metrics", {})), created=float(m.get("created", 0)),
                                        size=size))
        except (ValueError, OSError, KeyError, TypeError, AttributeError) as e:  # an altered manifest
            now = folder_identity(child)
            if now is None or now != before:
                continue  # deleted or replaced while we read it (the writer's keep policy, a save of
                # the same step): another process's listing sees it gone or the next one, not damage
            if damaged is not None and isinstance(e, CheckpointCorruptError):
                damaged.append((child, e))
                continue
            warn(f"Skipping checkpoint {child}: {e}")
    return sorted(found, key=lambda c: (c.step, c.created))


def folder_identity(path: str | os.PathLike) -> tuple[int, int] | None:
    """(device, inode) of the folder at ``path`` now, None when nothing is there: a reader compares
    it before and after a read to tell a folder renamed or replaced meanwhile from a damaged one."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def quarantine(path: str | os.PathLike, label: str = "corrupt") -> Path:
    """Rename a checkpoint to ``<name>.<label>`` (``.<label>-2``... if taken) so it is ignored
    but kept for inspection; returns the new path. Labels: ``corrupt`` (damaged), ``superseded``
    (newer than the checkpoint a run was explicitly resumed from).

    >>> import tempfile
    >>> from pathlib import Path
    >>> from savegame.checkpoint.commit import write_checkpoint
    >>> quarantine(write_checkpoint(Path(tempfile.mkdtemp()) / "c", {}, step=0, epoch=0).path).name
    'c.corrupt'
    """
    if label not in SET_ASIDE:
        raise ValueError(f"quarantine(label=...) must be one of {SET_ASIDE}, got {label!r}")
    return rename_aside(path, label)


def delete_checkpoint(path: str | os.PathLike) -> None:
    """Delete a checkpoint folder: renamed first to ``<name>.del-<pid>-<random>`` (one atomic
    step, made durable), then removed. A crash before the rename leaves the checkpoint whole (the
    keep policy drops it again later); a crash after it leaves a folder no listing takes for a
    checkpoint, which the next start removes (``remove_stale_temps``). Never a half-deleted folder
    under the checkpoint's own name.

    >>> import tempfile
    >>> from pathlib import Path
    >>> from savegame.checkpoint.commit import write_checkpoint
    >>> info = write_checkpoint(Path(tempfile.mkdtemp()) / "c", {}, step=0, epoch=0)
    >>> delete_checkpoint(info.path); info.path.exists()
    False
    """
    path = Path(path)
    doomed = aside_path(path, "del")
    os.rename(path, doomed)
    fsync_dir(path.parent)
    shutil.rmtree(doomed)


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def aside_path(path: Path, kind: str) -> Path:
    """A name beside ``path`` for a folder of this process: ``kind`` "tmp" (a save being written),
    "old" (a checkpoint being overwritten) or "del" (being deleted); :func:`remove_stale_temps`
    cleans what a dead process left."""
    return path.with_name(f"{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


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
        m = TEMP.match(child.name)
        if not m or (not include_live and pid_alive(int(m["pid"]))):
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
