"""Incremental checkpoints: a tensor whose bytes equal the previous checkpoint's is not written again.

A frozen backbone, or the base model under LoRA, is the same at every save. Such a tensor stays in
the file of the checkpoint that wrote it, and the new checkpoint hard-links that file into its own
folder (``shared-<hash>.safetensors``), recording in its manifest which tensors it reads from it
(see ``tensor_set.py``). Each checkpoint folder is then complete on its own: ``verify``, ``export``,
``savegame.load`` and a plain ``cp -a`` of the folder see ordinary files, and the file system counts
the links, so deleting a checkpoint (the keep policy's ``delete_checkpoint``) frees exactly the data
no other checkpoint links, and a kill in the middle of it never takes data from a kept checkpoint.

**Deciding what changed** (:func:`plan_sharing`), cheaply and soundly:

* a tensor the previous checkpoint does not hold with the same dtype and shape is written;
* a tensor changed by an in-place operation since the last snapshot is written without a look
  at its bytes: torch's version counter (``t._version``), with the storage address, says so for
  free (an optimizer's step bumps it on every parameter and every state tensor it updates);
* every other tensor is hashed (xxh3-128 per 64 MiB piece, off the training thread when saves are
  asynchronous) and compared with the piece hashes the previous manifest recorded. The counter
  alone is not enough: writes through ``.data``, a numpy view or a custom kernel do not bump it.

A file is linked only if that saves writing at least ``_MIN_SHARED`` bytes and its tensors this
checkpoint reads are at least half of it (``_MIN_LIVE``), else they are written again: a small
unchanged tensor never keeps a large file of stale values alive after the keep policy dropped
the checkpoints that needed the rest.

>>> import torch
>>> fingerprint(torch.zeros(2)) == fingerprint(torch.zeros(2))  # two tensors, two storages
False
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import xxhash

from savegame.checkpoint.codec import SAFETENSORS_DTYPES
from savegame.checkpoint.layout import TENSORS, FileInfo, read_manifest
from savegame.checkpoint.tensor_format import _bytes_of, read_header
from savegame.checkpoint.tensor_hash import hash_file
from savegame.checkpoint.tensor_set import SHARED_PREFIX, tensor_sources

__all__ = ["StoredTensor", "StoredCheckpoint", "SharedFile", "SharePlan", "fingerprint", "plan_sharing",
           "stored_checkpoint"]

_MIN_SHARED = 1 << 20  # below this, a link and its manifest entry cost more than writing the bytes
_MIN_LIVE = 0.5


@dataclass(frozen=True)
class StoredTensor:
    """Where a committed checkpoint keeps one tensor: file name, safetensors dtype, shape, piece hashes."""

    file: str
    dtype: str
    shape: tuple[int, ...]
    pieces: tuple[str, ...]


@dataclass
class StoredCheckpoint:
    """What a committed checkpoint holds, as far as sharing with it goes: its folder, its manifest's
    file entries and, per tensor, a :class:`StoredTensor`."""

    path: Path
    files: dict[str, dict]
    tensors: dict[str, StoredTensor]


@dataclass(frozen=True)
class SharedFile:
    """A file of the previous checkpoint to link: its path there, its entry, the tensors read from it."""

    source: Path
    entry: dict
    tensors: tuple[str, ...]

    def record(self, previous: str) -> dict:
        """The new manifest's entry: the source's, plus which tensors come from it and where it began."""
        entry = {k: v for k, v in self.entry.items() if k != "shared"}
        origin = (self.entry.get("shared") or {}).get("from", previous)
        entry["shared"] = {"from": origin, "tensors": sorted(self.tensors)}
        return entry


@dataclass
class SharePlan:
    """``write``: the tensors to write into the new file; ``links``: {new file name: SharedFile}."""

    write: dict[str, torch.Tensor]
    links: dict[str, SharedFile] = field(default_factory=dict)
    hashed_bytes: int = 0  # bytes hashed to decide (the cost of change detection)


def fingerprint(t: torch.Tensor) -> tuple | None:
    """What torch knows about a tensor's last in-place change: its version counter, storage and
    view. Equal fingerprints at two snapshots mean no tracked in-place op ran in between (the
    bytes may still differ: see the module docstring); None if torch keeps no counter."""
    try:
        version = t._version
    except RuntimeError:  # inference-mode tensors have no version counter
        return None
    return (version, t.device, t.untyped_storage().data_ptr(), t.storage_offset(), t.dtype, tuple(t.shape),
            t.stride())


def stored_checkpoint(path: str | os.PathLike) -> StoredCheckpoint | None:
    """Read what the committed checkpoint at ``path`` holds (its manifest and its files' headers);
    None if it records no piece hashes to compare with (written before they were kept), or a
    record that does not match its files (a hand-edited manifest): the next save is then a full one.
    Each file is hashed whole first (once a process: later saves share with what they wrote): a
    resume verified only the tensors it read, and a file damaged elsewhere (a stale tensor of a
    shared file) is left out here, its tensors written again, so a save never links damage into
    a new checkpoint.

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from savegame.checkpoint.commit import write_checkpoint
    >>> info = write_checkpoint(Path(tempfile.mkdtemp()) / "c", {"w": torch.ones(2)}, step=1, epoch=0)
    >>> stored_checkpoint(info.path).tensors["w"].shape
    (2,)
    """
    path = Path(path)
    manifest = read_manifest(path)
    tensors: dict[str, StoredTensor] = {}
    files: dict[str, dict] = {}
    for name, entry, provides in tensor_sources(path, manifest):
        record = entry.get("tensor_hashes")
        if not isinstance(record, dict) or not isinstance(record.get("tensors"), dict):
            return None
        if hash_file(path / name) != FileInfo(size=entry.get("size"), hash=entry.get("hash")):
            continue  # damaged: verify names it; the next save writes these tensors anew
        entries, _ = read_header(path / name)
        files[name] = entry
        for tensor in provides if provides is not None else [n for n in entries if n != "__metadata__"]:
            e, pieces = entries.get(tensor), record["tensors"].get(tensor)
            if e is None or not isinstance(pieces, list):
                return None
            tensors[tensor] = StoredTensor(file=name, dtype=e["dtype"], shape=tuple(e["shape"]), pieces=tuple(pieces))
    return StoredCheckpoint(path=path, files=files, tensors=tensors)


def written(path: Path, files: Mapping[str, dict], tensors: Mapping[str, torch.Tensor],
            previous: StoredCheckpoint | None, links: Mapping[str, SharedFile]) -> StoredCheckpoint:
    """The :class:`StoredCheckpoint` of a checkpoint just written, from what the writer knows (no reads)."""
    stored: dict[str, StoredTensor] = {}
    own = files[TENSORS]["tensor_hashes"]["tensors"]
    for name, t in tensors.items():
        stored[name] = StoredTensor(file=TENSORS, dtype=SAFETENSORS_DTYPES[t.dtype],
                                    shape=tuple(t.shape), pieces=tuple(own[name]))
    for file, shared in links.items():
        for name in shared.tensors:
            stored[name] = StoredTensor(file=file, dtype=previous.tensors[name].dtype,
                                        shape=previous.tensors[name].shape, pieces=previous.tensors[name].pieces)
    return StoredCheckpoint(path=path, files=dict(files), tensors=stored)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _same_bytes(t: torch.Tensor, pieces: tuple[str, ...], piece_bytes: int) -> tuple[bool, int]:
    """Whether ``t``'s bytes hash to ``pieces`` (cut every ``piece_bytes``), and how many bytes
    were hashed to find out (it stops at the first piece that differs)."""
    data = _bytes_of(t.contiguous())
    if len(pieces) != -(-len(data) // piece_bytes):
        return False, 0
    hashed = 0
    for i, expected in enumerate(pieces):
        piece = data[i * piece_bytes:(i + 1) * piece_bytes]
        hashed += len(piece)
        if xxhash.xxh3_128_hexdigest(piece) != expected:
            return False, hashed
    return True, hashed


def _worth(shared: int, file_size: int) -> bool:
    return shared >= _MIN_SHARED and shared >= _MIN_LIVE * file_size


def plan_sharing(tensors: Mapping[str, torch.Tensor], previous: StoredCheckpoint | None, *,
                 fingerprints: Mapping[str, Any] | None = None,
                 previous_fingerprints: Mapping[str, Any] | None = None) -> SharePlan:
    """Split a snapshot's ``tensors`` into those to write and files of ``previous`` to link (see
    the module docstring). ``fingerprints`` are this snapshot's (:func:`fingerprint` of each
    tensor's source), ``previous_fingerprints`` those of the snapshot ``previous`` was written from.

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from savegame.checkpoint.commit import write_checkpoint
    >>> frozen, head = torch.ones(1 << 20), torch.zeros(4)
    >>> info = write_checkpoint(Path(tempfile.mkdtemp()) / "c", {"frozen": frozen, "head": head}, step=1, epoch=0)
    >>> plan = plan_sharing({"frozen": frozen, "head": head + 1}, stored_checkpoint(info.path))
    >>> sorted(plan.write), [link.tensors for link in plan.links.values()]
    (['head'], [('frozen',)])
    """
    if previous is None:
        return SharePlan(write=dict(tensors))
    fingerprints, previous_fingerprints = fingerprints or {}, previous_fingerprints or {}
    candidates: dict[str, list[str]] = {}  # previous file -> tensors that may be unchanged in it
    for name, t in tensors.items():
        old = previous.tensors.get(name)
        if old is None or old.dtype != SAFETENSORS_DTYPES.get(t.dtype) or old.shape != tuple(t.shape):
            continue
        now, before = fingerprints.get(name), previous_fingerprints.get(name)
        if now is not None and before is not None and now != before:
            continue  # changed in place since the last snapshot: write it, no need to look
        candidates.setdefault(old.file, []).append(name)
    plan = SharePlan(write={})
    shared: set[str] = set()
    for file, names in candidates.items():
        entry = previous.files[file]
        size = int(entry.get("size", 0))
        if not _worth(sum(_nbytes(tensors[n]) for n in names), size):
            continue
        piece_bytes = entry["tensor_hashes"]["piece_bytes"]
        same = []
        for n in names:
            equal, hashed = _same_bytes(tensors[n], previous.tensors[n].pieces, piece_bytes)
            plan.hashed_bytes += hashed
            if equal:
                same.append(n)
        if not _worth(sum(_nbytes(tensors[n]) for n in same), size):
            continue
        digest = str(entry["hash"]).rpartition(":")[2]
        link = f"{SHARED_PREFIX}{digest[:16]}.safetensors"
        if link in plan.links:  # two files whose hashes begin alike: the full hash tells them apart
            link = f"{SHARED_PREFIX}{digest}.safetensors"
        plan.links[link] = SharedFile(source=previous.path / file, entry=entry, tensors=tuple(same))
        shared.update(same)
    plan.write = {n: t for n, t in tensors.items() if n not in shared}
    return plan
