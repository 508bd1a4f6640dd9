"""Restore a checkpoint straight into the objects that use it: each tensor read once, verified.

``read_checkpoint`` + ``load_state_dict`` reads every tensor into fresh memory, then copies it
into the model. Here each tensor's bytes go once, straight from the file into the tensor that
keeps them: a module's own parameters and buffers, an optimizer's existing state tensors. They
are hashed as they arrive: per piece of each tensor when the manifest records piece hashes
(checkpoints written since those were added), else the whole file in file order (older ones).
Then ``load_state_dict`` runs as usual, on those very tensors (its copy of a tensor onto itself
costs nothing), so hooks, strictness and every non-tensor value behave exactly as before.

A tensor without such a destination (a fresh optimizer, another dtype, a non-contiguous or
tied-differently parameter, a module whose loading transforms its state...) is read into fresh
memory and copied by ``load_state_dict``, as before. A CUDA destination gets a pinned host
tensor, which ``load_state_dict`` copies to the device.

The trade: a damaged tensor is found after some memory was already overwritten. Then
:class:`PartiallyRestoredError` (a :class:`CheckpointCorruptError`) names the objects in
``.loaded``: restore them again from another checkpoint (that overwrites every tensor and all
their state) or rebuild them. No ``load_state_dict`` has run then. Key and shape mismatches
are found from the manifest and the file's header before a byte of tensor data is read, so
they leave every object untouched. Nothing on disk is ever changed.

Those checks, and which saved tensor may be read straight into which live one, are decided in
``restore_plan.py``; this module reads the bytes and hands them to ``load_state_dict``.

>>> import tempfile, torch
>>> from pathlib import Path
>>> from savegame.checkpoint.store import write_checkpoint
>>> net = torch.nn.Linear(2, 1)
>>> path = Path(tempfile.mkdtemp()) / "c"
>>> _ = write_checkpoint(path, {"model": net.state_dict(), "step": 3}, step=3, epoch=0)
>>> fresh = torch.nn.Linear(2, 1)
>>> rest, manifest = restore_into(path, {"model": fresh})
>>> rest, torch.equal(fresh.weight, net.weight)
({'step': 3}, True)
"""

from __future__ import annotations

import os
from collections import Counter
from itertools import chain
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from savegame.checkpoint import codec
from savegame.checkpoint.restore_plan import (_module_targets, _optimizer_targets, _plain_tensor, _refs, _top_level,
                                              _without_overlaps, load_planned, plan_load)
from savegame.checkpoint.store import MANIFEST, read_manifest
from savegame.checkpoint.tensor_set import TensorSet
from savegame.errors import CheckpointCorruptError, PartiallyRestoredError, StateMismatchError

# PartiallyRestoredError lives in savegame.errors (torch-free) and plan_load in restore_plan; both
# stay importable from here, where they first were.
__all__ = ["PartiallyRestoredError", "CheckpointReader", "restore_into", "plan_load"]

# CUDA destinations: pinned host memory to read into, up to this much per call (pinning costs
# about as much as it saves for one transfer of more); beyond it, pageable memory.
_PINNED = 1 << 30


class CheckpointReader:
    """A committed checkpoint opened for restoring: its manifest checked against ``COMMIT``, its
    tensor files' headers parsed (and, with piece hashes, checked); no tensor data read yet.

    :meth:`restore_into` loads objects, :meth:`read` returns saved values; each call reads the
    tensors it needs once. With piece hashes each call verifies just its own tensors; an older
    checkpoint (one hash for the whole file) is read whole by the first call, and what that call
    did not need stays in memory for later calls. Use it as a context manager (or ``close()``).

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from savegame.checkpoint.store import write_checkpoint
    >>> path = Path(tempfile.mkdtemp()) / "c"
    >>> _ = write_checkpoint(path, {"model": torch.nn.Linear(2, 1).state_dict(), "extras": {"seen": 7}},
    ...                      step=1, epoch=0)
    >>> with CheckpointReader(path) as reader:
    ...     extras = reader.read(["extras"])["extras"]
    ...     _ = reader.restore_into({"model": torch.nn.Linear(2, 1)})
    ...     reader.keys, extras
    (['model', 'extras'], {'seen': 7})
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self._file = TensorSet(self.path, self.manifest)
        try:
            self._top = _top_level(self.manifest["state"])
            self._uses = Counter(name for _, name in _refs(self.manifest["state"]))
            self._key_refs = {key: {n for _, n in _refs(sub)} for key, sub in (self._top or {}).items()}
        except BaseException:
            self._file.close()
            raise
        self._consumed: set[Any] = set()  # keys restored or read already
        self._kept: dict[str, torch.Tensor] = {}  # read and verified by an earlier call (whole-file hash)

    @property
    def keys(self) -> list[Any] | None:
        """The saved state's top-level keys (None if it is not a dict)."""
        return None if self._top is None else list(self._top)

    def read(self, keys: Iterable[Any] | None = None) -> Any:
        """The saved values under ``keys`` as ``{key: value}`` (fresh tensors), or with None the
        whole saved state, as ``read_checkpoint`` returns it."""
        if keys is not None:
            return self.restore_into({}, also=keys)
        if self._top is not None:
            return self.restore_into({}, also=self._top)
        tensors = self._read({name: None for name in self._uses})
        return self._decode(self.manifest["state"], tensors)

    def restore_into(self, into: Mapping[str, Any], *, strict: bool = True, also: Iterable[Any] = ()) -> dict:
        """Load each object of ``into`` (``{saved key: object with load_state_dict}``) from the
        checkpoint, reading its tensors straight into the object's own where it can; return
        ``{key: saved value}`` for the keys in ``also``, read in the same pass. A key both in
        ``into`` and ``also`` comes back sharing memory with the object's tensors.

        Raises :class:`StateMismatchError` (every key/shape mismatch, before any read; with
        ``strict=False`` a warning, and what matches is loaded), :class:`CheckpointCorruptError`
        if the checkpoint is damaged and nothing was touched yet, :class:`PartiallyRestoredError`
        if it was (``.loaded`` names the objects to restore again from another checkpoint).
        """
        into, also = dict(into), list(also)
        if self._top is None:
            if into or also:
                raise StateMismatchError(f"{self.path} holds a {type(self.read()).__name__}, not a dict to "
                                         "load into objects.")
            return {}
        missing = [key for key in also if key not in self._top]
        if missing:
            raise StateMismatchError(f"{self.path} has no saved value under {missing}; it holds "
                                     f"{', '.join(map(str, self._top))}.")
        shapes, placeholders = self._placeholders([k for k in into if k in self._top])
        plan = plan_load(str(self.path), {k: shapes.get(k) for k in self._top}, into, strict=strict)
        used = list(dict.fromkeys(chain((name for name, _, _ in plan), also)))
        needed = set().union(*(self._key_refs[key] for key in used))
        if unknown := sorted(n for n in needed if n not in self._file):
            raise CheckpointCorruptError(
                f"{self.path / MANIFEST}: the saved state refers to tensor {unknown[0]!r}, which its tensor "
                "files do not hold. The manifest was altered or written by an incompatible tool; restore this "
                "checkpoint from a backup or use another one.")
        in_place, staged = self._destinations(plan, shapes, placeholders)
        targets = {n: in_place[n][0] if n in in_place else staged.get(n) for n in needed}
        touched: set[str] = set()
        try:
            tensors = self._read(targets, touched)
        except (CheckpointCorruptError, OSError) as e:
            if hit := [n for n in in_place if n in touched]:
                raise self._partial(e, hit, in_place) from e
            raise
        except BaseException as e:  # Ctrl-C mid-read: it stays an interrupt, but says what it left
            if (hit := [n for n in in_place if n in touched]) and hasattr(e, "add_note"):
                e.add_note(f"savegame: {', '.join(self._partial(e, hit, in_place).loaded)} half-loaded from "
                           f"{self.path}; restore again before training.")
            raise
        tensors.update({n: live for n, (live, _) in in_place.items()})
        for name, obj, keys in plan:
            load_planned(str(self.path), name, obj, self._decode(self._top[name], tensors), keys, strict=strict)
        # A value returned beside its object shares memory with it, detached like state_dict()'s.
        tensors.update({n: live.detach() for n, (live, _) in in_place.items()})
        out = {key: self._decode(self._top[key], tensors) for key in also}
        self._consumed.update(used)
        for n in needed - self._still_needed():
            self._kept.pop(n, None)  # a whole-file read kept it for this call
        return out

    def _still_needed(self) -> set[str]:
        return set().union(*(refs for key, refs in self._key_refs.items() if key not in self._consumed))

    def _read(self, targets: dict[str, torch.Tensor | None], touched: set[str] | None = None) -> dict:
        """Read ``targets`` (see ``TensorFile.read``), taking what an earlier whole-file read kept."""
        out = {n: self._kept[n] for n in targets if n in self._kept}
        rest = {n: t for n, t in targets.items() if n not in out}
        if rest:
            got = self._file.read(rest, touched=touched)
            out.update((n, got[n]) for n in rest)
            if not self._file.per_tensor:  # the whole file was read: keep what later calls will need
                later = self._still_needed()
                self._kept.update((n, t) for n, t in got.items() if n not in targets and n in later)
        return out

    def _placeholders(self, keys: list[Any]) -> tuple[dict[Any, Any], dict[int, str]]:
        """The saved trees of ``keys`` with meta tensors of the saved dtypes and shapes (numpy
        arrays need real memory: zeros), and which placeholder stands for which tensor name."""
        refs = [(marker, n) for key in keys for marker, n in _refs(self._top[key])]
        arrays = {n for marker, n in refs if marker == "$ndarray"}
        tensors = {}
        for _, n in refs:
            if n in self._file and n not in tensors:
                dtype, shape = self._file.spec(n)
                tensors[n] = torch.zeros(shape, dtype=dtype) if n in arrays else \
                    torch.empty(shape, dtype=dtype, device="meta")
        trees = {key: self._decode(self._top[key], tensors) for key in keys}
        return trees, {id(t): n for n, t in tensors.items() if n not in arrays}

    def _destinations(self, plan: list, shapes: dict, placeholders: dict[int, str]) -> tuple[dict, dict]:
        """``({tensor name: (live tensor, [(object, key)])}, {tensor name: pinned host tensor})``:
        where each saved tensor can be read in place, or staged for a CUDA destination."""
        found: dict[str, list[tuple[Any, str, str]]] = {}
        for name, obj, keys in plan:
            if isinstance(obj, nn.Module):
                pairs = _module_targets(obj, shapes[name], keys)
            elif isinstance(obj, torch.optim.Optimizer):
                pairs = _optimizer_targets(obj, shapes[name])
            else:
                continue
            for saved, live, key in pairs:
                n = placeholders.get(id(saved)) if isinstance(saved, torch.Tensor) else None
                if n is not None and n not in self._kept:
                    found.setdefault(n, []).append((live, name, key))
        in_place, staged, pinned = {}, {}, 0
        for n, uses in found.items():
            live = uses[0][0]
            # Every use of this saved tensor must land in this one tensor; else each gets its own copy.
            if len(uses) != self._uses[n] or any(t is not live for t, _, _ in uses) \
                    or not _plain_tensor(live, *self._file.spec(n)):
                continue
            if live.device.type == "cpu":
                in_place[n] = (live, [(name, key) for _, name, key in uses])
            elif torch.cuda.is_available() and pinned + live.numel() * live.element_size() <= _PINNED:
                staged[n] = _pinned(*self._file.spec(n))
                pinned += live.numel() * live.element_size()
        return _without_overlaps(in_place), staged

    def _partial(self, error: BaseException, hit: list[str], in_place: dict) -> PartiallyRestoredError:
        uses = [use for n in hit for use in in_place[n][1]]
        loaded = tuple(dict.fromkeys(name for name, _ in uses))
        paths = tuple(f"{name}{key}" if key.startswith("[") else f"{name}[{key!r}]" for name, key in uses)
        return PartiallyRestoredError(
            f"{error} Restoring had already read {len(hit)} tensors straight into {', '.join(loaded)}, so "
            f"{'they are' if len(loaded) > 1 else 'it is'} now half-loaded (no load_state_dict ran): restore "
            f"{'them' if len(loaded) > 1 else 'it'} from another checkpoint, which overwrites every tensor, or "
            "rebuild before training. The checkpoint on disk is unchanged.",
            path=self.path, loaded=loaded, tensors=paths)

    def _decode(self, tree: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
        try:
            return codec.decode(tree, tensors)
        except CheckpointCorruptError as e:
            raise CheckpointCorruptError(f"{self.path / MANIFEST}: {e}") from e

    def close(self) -> None:
        self._file.close()
        self._kept.clear()

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pinned(dtype: torch.dtype, shape: list[int]) -> torch.Tensor | None:
    try:
        return torch.empty(shape, dtype=dtype, pin_memory=True)
    except RuntimeError:  # pinned memory is limited; pageable memory is only slower to copy
        return None


def restore_into(path: str | os.PathLike, into: Mapping[str, Any], *, strict: bool = True) -> tuple[dict, dict]:
    """Load the objects of ``into`` from the checkpoint folder ``path`` and return ``(rest,
    manifest)``: ``rest`` is the saved state without the keys of ``into``. The end state equals
    ``read_checkpoint(path, verify=True)`` + ``load_into(...)``; see the module docstring for
    how, and for :class:`PartiallyRestoredError` (damage found after memory was overwritten).

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from savegame.checkpoint.store import write_checkpoint
    >>> path = Path(tempfile.mkdtemp()) / "c"
    >>> _ = write_checkpoint(path, {"model": torch.nn.Linear(2, 1).state_dict(), "epoch": 4}, step=8, epoch=4)
    >>> restore_into(path, {"model": torch.nn.Linear(2, 1)})[0]
    {'epoch': 4}
    """
    with CheckpointReader(path) as reader:
        rest = reader.restore_into(into, strict=strict, also=[k for k in reader.keys or () if k not in into])
        return rest, reader.manifest
