"""Every tensor file of one checkpoint, read as one: which file holds which tensor.

A checkpoint writes its changed tensors into ``tensors.safetensors``. With incremental saves (see
``sharing.py``) the tensors whose bytes did not change since the previous checkpoint stay in that
checkpoint's file, which the new folder hard-links under ``shared-<hash>.safetensors``. Its
manifest entry then says which of the file's tensors this checkpoint reads from it (the rest of
that file is an older state of tensors this checkpoint wrote anew)::

    "files": {"tensors.safetensors": {"size", "hash", "tensor_hashes"},
              "shared-1f2e...safetensors": {"size", "hash", "tensor_hashes",
                                            "shared": {"from": "step-000480", "tensors": [names]}}}

:func:`tensor_sources` checks that record; :class:`TensorSet` opens the files and reads any set
of tensors from whichever file holds each, verified as ``TensorFile`` verifies them.

>>> import tempfile, torch
>>> from pathlib import Path
>>> from savegame.checkpoint.commit import write_checkpoint
>>> from savegame.checkpoint.layout import read_manifest
>>> info = write_checkpoint(Path(tempfile.mkdtemp()) / "c", {"w": torch.ones(2)}, step=1, epoch=0)
>>> with TensorSet(info.path, read_manifest(info.path)) as tensors:
...     tensors.names, tensors.read({"w": None})["w"].tolist()
(['w'], [1.0, 1.0])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch

from savegame.checkpoint.layout import MANIFEST, TENSORS, FileInfo, member
from savegame.checkpoint.tensor_read import TensorFile
from savegame.errors import CheckpointCorruptError

__all__ = ["TensorSet", "tensor_sources", "SHARED_PREFIX"]

SHARED_PREFIX = "shared-"  # + 16 hex digits of the file's hash + ".safetensors"


def _is_tensor_file(name: str) -> bool:
    return name == TENSORS or name.startswith(SHARED_PREFIX) and name.endswith(".safetensors")


def tensor_sources(path: Path, manifest: Mapping[str, Any]) -> list[tuple[str, dict, list[str] | None]]:
    """``[(file name, manifest entry, tensors read from it or None for all)]`` for each tensor file
    of the checkpoint at ``path``, own file first; raises :class:`CheckpointCorruptError` naming the
    file when the record is malformed or a file is missing.

    >>> import tempfile, torch
    >>> from savegame.checkpoint.commit import write_checkpoint
    >>> from savegame.checkpoint.layout import read_manifest
    >>> info = write_checkpoint(Path(tempfile.mkdtemp()) / "c", {"w": torch.ones(2)}, step=1, epoch=0)
    >>> [(name, provides) for name, _, provides in tensor_sources(info.path, read_manifest(info.path))]
    [('tensors.safetensors', None)]
    """
    files = manifest["files"]
    if not isinstance(files, dict) or not isinstance(files.get(TENSORS), dict):
        raise CheckpointCorruptError(f"{path / MANIFEST} does not record {TENSORS}; the manifest was altered. "
                                     "Restore the checkpoint from a backup or use another one.")
    sources: list[tuple[str, dict, list[str] | None]] = []
    for name, entry in files.items():
        if not _is_tensor_file(name):
            continue
        shared = entry.get("shared") if isinstance(entry, dict) else None
        provides = shared.get("tensors") if isinstance(shared, dict) else None
        if not isinstance(entry, dict) or name != TENSORS and (
                not isinstance(provides, list) or not all(isinstance(n, str) for n in provides)):
            raise CheckpointCorruptError(f"{path / MANIFEST}: its record of {name} is malformed: "
                                         f"{str(entry)[:200]}. Restore the checkpoint from a backup or use another one.")
        member(path, name)  # a plain name, no link out of the folder
        if not (path / name).is_file():
            if name == TENSORS:
                raise CheckpointCorruptError(f"{path / TENSORS} is missing: the checkpoint lost its tensors. "
                                             "Restore it from a backup or use another checkpoint.")
            raise CheckpointCorruptError(
                f"{path / name} is missing: this checkpoint reads {len(provides)} unchanged tensors from it, "
                f"first written by {shared.get('from', 'an earlier checkpoint')} (incremental saves hard-link "
                "such files between checkpoints). Copy checkpoint folders whole (cp -a keeps the links), or "
                "make a standalone file with `savegame export`. Use another checkpoint.")
        sources.append((name, entry, None if name == TENSORS else provides))
    sources.sort(key=lambda s: s[0] != TENSORS)
    return sources


class TensorSet:
    """The tensor files of a checkpoint, opened: ``names`` (every tensor the checkpoint holds),
    ``spec(name)``, ``read(targets)``; each file checked as :class:`TensorFile` checks it (with
    ``verify=False``, headers only). A tensor named by two files, or named by the manifest but not
    in its file, is :class:`CheckpointCorruptError`. Close it (or use ``with``)."""

    def __init__(self, path: str | os.PathLike, manifest: Mapping[str, Any], *, verify: bool = True) -> None:
        self.path = Path(path)
        self._files: dict[str, TensorFile] = {}
        self._where: dict[str, str] = {}  # tensor name -> the file it is read from
        try:
            for name, entry, provides in tensor_sources(self.path, manifest):
                try:
                    expected = FileInfo(size=entry["size"], hash=entry["hash"]) if verify else None
                except KeyError as e:
                    raise CheckpointCorruptError(f"{self.path / MANIFEST} does not record the {e} of {name}; "
                                                 "use another checkpoint.") from e
                file = self._files[name] = TensorFile(self.path / name, expected=expected,
                                                      tensor_hashes=entry.get("tensor_hashes") if verify else None)
                held = set(file.names)
                for tensor in file.names if provides is None else provides:
                    if tensor not in held:
                        raise CheckpointCorruptError(
                            f"{self.path / MANIFEST} says tensor {tensor!r} is read from {name}, which does not "
                            "hold it. Restore the checkpoint from a backup or use another one.")
                    if tensor in self._where:
                        raise CheckpointCorruptError(
                            f"{self.path / MANIFEST} names tensor {tensor!r} in both {self._where[tensor]} and "
                            f"{name}. Restore the checkpoint from a backup or use another one.")
                    self._where[tensor] = name
        except BaseException:
            self.close()
            raise
        self.names: list[str] = list(self._where)

    def __contains__(self, name: object) -> bool:
        return name in self._where

    @property
    def per_tensor(self) -> bool:
        """True if every tensor is verified on its own (every file records piece hashes)."""
        return all(f.per_tensor for f in self._files.values())

    def spec(self, name: str) -> tuple[torch.dtype, list[int]]:
        """``(dtype, shape)`` of a tensor, from its file's header."""
        return self._files[self._where[name]].spec(name)

    def read(self, targets: Mapping[str, torch.Tensor | None], *, touched: set[str] | None = None,
             fresh: Any = None) -> dict[str, torch.Tensor]:
        """Read ``targets`` as ``TensorFile.read`` does, each from the file that holds it. A file
        verified as a whole returns the rest of its tensors too."""
        if unknown := [n for n in targets if n not in self._where]:
            raise KeyError(f"{self.path} holds no tensor named {unknown[0]!r}.")
        by_file: dict[str, dict[str, torch.Tensor | None]] = {}
        for n, dest in targets.items():
            by_file.setdefault(self._where[n], {})[n] = dest
        out: dict[str, torch.Tensor] = {}
        for name, file in self._files.items():
            if name in by_file:
                got = file.read(by_file[name], touched=touched, fresh=fresh)
                out.update((n, t) for n, t in got.items() if self._where.get(n) == name)
        return out

    def close(self) -> None:
        for file in self._files.values():
            file.close()

    def __enter__(self) -> TensorSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
