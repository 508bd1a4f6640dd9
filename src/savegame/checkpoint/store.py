"""Checkpoint folders: read back verified, and (re-exported from ``commit`` and ``layout``) written
with the commit protocol, listed, quarantined and deleted. Import from here; the parts live in
``commit.py`` (writing, torch) and ``layout.py`` (names, manifests, listing, torch-free).

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

import os
import time
from pathlib import Path
from typing import Any

import torch

from savegame.checkpoint import codec
from savegame.checkpoint.commit import Snapshot, persist, plain_metrics, snapshot, write_checkpoint
from savegame.checkpoint.layout import (COMMIT, FORMAT, MANIFEST, SET_ASIDE, TENSORS, VERSION, CheckpointInfo,
                                        FileInfo, checkpoint_dirname, delete_checkpoint, folder_identity,
                                        is_committed, list_checkpoints, member, metrics_from_json, metrics_to_json,
                                        quarantine, read_manifest, remove_stale_temps)
from savegame.checkpoint.tensor_hash import hash_file
from savegame.checkpoint.tensor_set import TensorSet
from savegame.errors import CheckpointCorruptError

__all__ = [
    "CheckpointInfo", "Snapshot", "checkpoint_dirname", "snapshot", "persist", "write_checkpoint",
    "is_committed", "read_manifest", "read_checkpoint", "verify_checkpoint", "list_checkpoints",
    "quarantine", "delete_checkpoint", "remove_stale_temps", "plain_metrics", "metrics_to_json",
    "metrics_from_json", "FORMAT", "VERSION", "TENSORS", "MANIFEST", "COMMIT", "SET_ASIDE", "FileInfo",
]


def read_checkpoint(path: str | os.PathLike, *, verify: bool = True, map_location: Any = None) -> tuple[Any, dict]:
    """Read a committed checkpoint: ``(state, manifest)``. ``verify`` checks each tensor file's
    size and hashes in the same pass that reads it (the manifest is always checked), its own file
    and those it shares with earlier checkpoints alike.

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> info = write_checkpoint(Path(tempfile.mkdtemp()) / "c", {"t": (1, 2)}, step=1, epoch=0)
    >>> read_checkpoint(info.path)[0]
    {'t': (1, 2)}
    """
    path = Path(path)
    for attempt in range(3):  # again when a save of the same step replaced the folder while we read it
        before = folder_identity(path)
        try:
            return _read(path, verify, map_location)
        except (CheckpointCorruptError, OSError):
            if attempt == 2 or not _replaced_since(path, before):
                raise  # damaged (or gone) for real: the folder is the one we started reading
    raise AssertionError("unreachable")


def _replaced_since(path: Path, before: tuple[int, int] | None) -> bool:
    """Whether another folder stands at ``path`` than the one whose identity was ``before``: a
    save of the same step replaced it while a reader read it. Between that save's two renames
    nothing is there for a moment, so an empty path is looked at again 10 ms later."""
    now = folder_identity(path)
    if now is None:
        time.sleep(0.01)
        now = folder_identity(path)
    return now is not None and now != before


def _read(path: Path, verify: bool, map_location: Any) -> tuple[Any, dict]:
    manifest = read_manifest(path)
    with TensorSet(path, manifest, verify=verify) as files:
        tensors = files.read(dict.fromkeys(files.names))
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
    for attempt in range(3):  # again when a save of the same step replaced the folder while we read it
        before = folder_identity(path)
        problems = _problems(path)
        if not problems or attempt == 2 or not _replaced_since(path, before):
            return problems
    raise AssertionError("unreachable")


def _problems(path: Path) -> list[str]:
    try:
        manifest = read_manifest(path)
    except (ValueError, OSError) as e:
        return [str(e)]
    problems = []
    files = manifest["files"]
    if not isinstance(files, dict) or not all(isinstance(entry, dict) for entry in files.values()):
        return [f"{path / MANIFEST} records its files as {str(files)[:200]}, not as {{name: {{size, hash}}}}; "
                "the manifest was altered or damaged."]
    for name, entry in files.items():
        try:
            file = member(path, name)
        except CheckpointCorruptError as e:
            problems.append(str(e))
            continue
        if not file.is_file():
            problems.append(f"{file} is missing.")
            continue
        try:
            found = hash_file(file)
        except OSError as e:
            problems.append(f"{file} cannot be read: {e}.")
            continue
        if (found.size, found.hash) != (entry.get("size"), entry.get("hash")):
            problems.append(f"{file} does not match the manifest: expected size {entry.get('size')} and "
                            f"hash {entry.get('hash')}, found size {found.size} and hash {found.hash}.")
    if manifest.get("sharded"):  # a torchrun job's sharded state: DCP's files, listed apart
        from ..sharded import sharded_problems

        problems += sharded_problems(path, manifest)
    if not problems:
        try:
            with TensorSet(path, manifest, verify=False) as files:  # headers and the sharing record
                names = files.names
            codec.decode(manifest["state"], {n: torch.empty(0) for n in names})
        except (ValueError, OSError) as e:
            problems.append(str(e))
    return problems


