"""Free functions for the explicit style: ``save``/``load`` a checkpoint folder, and move weights
in from and out to plain files other tools use.

``save`` writes a checkpoint folder (``manifest.json`` + ``tensors.safetensors`` + ``COMMIT``)
with the commit protocol, never a single ``.pt`` file; ``load`` reads it back verified and never
unpickles. ``import_weights`` is the one door for someone else's ``torch.save`` file, opened
with ``weights_only=True``; ``export_weights`` writes a ``.safetensors`` file anyone can load.

>>> import tempfile, torch
>>> from pathlib import Path
>>> net = torch.nn.Linear(2, 1)
>>> path = Path(tempfile.mkdtemp()) / "ckpt"
>>> _ = save(path, {"epoch": 3, "net": net})
>>> load(path, into={"net": torch.nn.Linear(2, 1)})["epoch"]
3
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from savegame.atomic import replacing
from savegame.checkpoint import store
from savegame.checkpoint.restore import CheckpointReader
from savegame.checkpoint.restore_plan import load_planned, plan_load
from savegame.checkpoint.tensor_read import read_tensors
from savegame.checkpoint.tensor_write import write_tensors
from savegame.errors import CheckpointCorruptError, FormatVersionError, StateMismatchError
from savegame.messages import warn

__all__ = ["save", "load", "import_weights", "export_weights"]

log = logging.getLogger(__name__)
_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar", ".pkl", ".safetensors")
_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net")  # where others nest a state_dict


def object_kind(obj: Any) -> str:
    if isinstance(obj, nn.Module):
        return "module"
    if isinstance(obj, torch.optim.Optimizer):
        return "optimizer"
    if isinstance(obj, (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)):
        return "lr_scheduler"
    return "other"


def _has_state(obj: Any) -> bool:
    return not isinstance(obj, type) and callable(getattr(obj, "state_dict", None))


def _int_or_zero(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0


def save(
    path: str | os.PathLike, obj: Mapping[str, Any], *, step: int | None = None, epoch: int | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> store.CheckpointInfo:
    """Save ``obj`` as the checkpoint folder ``path``; values with ``state_dict()`` (model,
    optimizer, scheduler, GradScaler) are saved as their state_dict, the rest as is.

    An existing checkpoint at ``path`` is replaced atomically (the new one is committed before
    the old one is removed). ``path`` is a folder: names like ``ckpt.pt`` are refused so nobody
    mistakes it for a ``torch.save`` file. ``step``/``epoch`` default to ``obj["step"]`` and
    ``obj["epoch"]`` when those are ints, else 0.

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> save(Path(tempfile.mkdtemp()) / "ckpt", {"step": 480, "w": torch.ones(2)}).step
    480
    """
    path = Path(path)
    if path.suffix.lower() in _FILE_SUFFIXES:
        raise ValueError(
            f"savegame.save writes a checkpoint folder (manifest.json, tensors.safetensors, COMMIT), but "
            f"{str(path)!r} looks like a single-file name. Use a folder name such as "
            f"{str(path.with_suffix(''))!r}; for one .safetensors file of the weights, call "
            "savegame.export_weights(checkpoint, 'model.safetensors') afterwards."
        )
    if not isinstance(obj, Mapping):
        raise TypeError(f"savegame.save takes a dict of things to save, like {{'model': net, 'epoch': 3}}, "
                        f"but got {type(obj).__name__}.")
    state = {key: value.state_dict() if _has_state(value) else value for key, value in obj.items()}
    objects = {str(key): {"class": f"{type(v).__module__}.{type(v).__qualname__}", "kind": object_kind(v)}
               for key, v in obj.items() if _has_state(v)}
    return store.write_checkpoint(
        path, state, step=step if step is not None else _int_or_zero(obj.get("step")),
        epoch=epoch if epoch is not None else _int_or_zero(obj.get("epoch")),
        metrics=metrics, info={"objects": objects}, overwrite=True,
    )


def load_into(source: str, state: Mapping[str, Any], into: Mapping[str, Any], *, strict: bool) -> None:
    """Check everything first, then load: a mismatch leaves every object untouched."""
    for name, obj, keys in plan_load(source, state, into, strict=strict):
        load_planned(source, name, obj, state[name], keys, strict=strict)


def _run_folder_error(path: Path) -> FormatVersionError:
    latest = store.list_checkpoints(path / "checkpoints")
    hint = f" (latest: {latest[-1].path})" if latest else ""
    return FormatVersionError(
        f"{path} is a run folder, not a checkpoint. To resume the run use savegame.Run({str(path)!r}); "
        f"to load one checkpoint pass {path / 'checkpoints' / 'step-...'}{hint}."
    )


def load(
    path: str | os.PathLike, *, into: Mapping[str, Any] | None = None, strict: bool = True,
    map_location: Any = None,
) -> dict:
    """Read the checkpoint folder ``path`` (hashes verified, nothing unpickled), call
    ``load_state_dict`` on each object of ``into`` and return the whole saved dict.

    Before loading, modules are compared key by key and shape by shape; every difference is
    listed in one :class:`StateMismatchError`. ``strict=False`` loads what matches and warns.
    Tensors come back on the CPU unless ``map_location`` names a device.

    Each tensor is read once, straight into the parameters, buffers and existing optimizer state
    of ``into`` where it fits (see ``checkpoint/restore.py``); the returned dict's entries for
    those objects share that memory. A checkpoint found damaged after some of that memory was
    overwritten raises ``PartiallyRestoredError`` (a ``CheckpointCorruptError``): its ``loaded``
    objects are half-loaded; load them from another checkpoint or rebuild them.

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> path = save(Path(tempfile.mkdtemp()) / "c", {"opt_step": 7}).path
    >>> load(path)
    {'opt_step': 7}
    """
    path = Path(path)
    if path.is_dir() and not (path / store.MANIFEST).exists() and (
        (path / "run.json").exists() or (path / "checkpoints").is_dir()
    ):
        raise _run_folder_error(path)
    _refuse_sharded(path)
    if map_location is not None:  # tensors go to a device, then load_state_dict copies them
        state, _ = store.read_checkpoint(path, verify=True, map_location=map_location)
        if into:
            if not isinstance(state, Mapping):
                raise StateMismatchError(f"{path} holds a {type(state).__name__}, not a dict to load into objects.")
            load_into(str(path), state, into, strict=strict)
        return state
    with CheckpointReader(path) as reader:
        if reader.keys is not None:
            return reader.restore_into(into or {}, strict=strict, also=reader.keys)
        reader.restore_into(into or {})  # raises if into names objects: the saved state is no dict
        return reader.read()


def _refuse_sharded(path: Path) -> None:
    """A torchrun job's sharded state is read only by a Run (``savegame.sharded``): say how, rather
    than return the checkpoint without it."""
    try:
        manifest = store.read_manifest(path)
    except (OSError, ValueError):
        return  # the read that follows names the problem
    record = manifest.get("sharded")
    if record:
        from .sharded import not_here_error, skeletons_in

        raise not_here_error(path, sorted(skeletons_in(manifest)), record.get("world_size", "?"))


def _find_state_dict(obj: Any, path: Path, key: str | None) -> dict[str, torch.Tensor]:
    def is_weights(x: Any) -> bool:
        return isinstance(x, Mapping) and bool(x) and all(isinstance(v, torch.Tensor) for v in x.values())

    if key is not None:
        if not isinstance(obj, Mapping) or not is_weights(obj.get(key)):
            raise KeyError(f"{path} has no dict of tensors under key {key!r}.")
        return dict(obj[key])
    if is_weights(obj):
        return dict(obj)
    for candidate in _STATE_KEYS if isinstance(obj, Mapping) else ():
        if is_weights(obj.get(candidate)):
            log.info("import_weights: using the state_dict under %r in %s", candidate, path)
            return dict(obj[candidate])
    keys = ", ".join(map(repr, obj)) if isinstance(obj, Mapping) else type(obj).__name__
    raise KeyError(f"{path} holds no state_dict at the top level or under {', '.join(_STATE_KEYS)} "
                   f"(found: {keys}). Pass key=... to choose one.")


def import_weights(
    path: str | os.PathLike, *, into: nn.Module | None = None, strict: bool = True, key: str | None = None,
) -> dict[str, torch.Tensor]:
    """Read weights someone else saved: a ``.safetensors`` file or a ``torch.save`` file opened with
    ``weights_only=True`` (never full unpickling). Accepts a bare state_dict or one nested under
    ``state_dict``/``model_state_dict``/``model``/``net`` (or ``key``); a ``module.`` prefix from
    DataParallel is dropped when ``into`` lacks it. Loads into ``into`` if given.

    >>> import tempfile, torch, os
    >>> path = os.path.join(tempfile.mkdtemp(), "w.pt")
    >>> torch.save({"model": torch.nn.Linear(2, 1).state_dict()}, path)
    >>> sorted(import_weights(path, into=torch.nn.Linear(2, 1)))
    ['bias', 'weight']
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No weights file at {path}.")
    if path.suffix == ".safetensors" or _is_safetensors(path):
        weights = read_tensors(path)
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises UnpicklingError for anything beyond plain weights
            if "weights_only" not in str(e) and "Weights only" not in str(e):
                raise CheckpointCorruptError(f"Could not read {path} as a torch.save file: {e}") from e
            raise FormatVersionError(
                f"{path} holds Python objects beyond tensors and plain containers (a whole model, a custom "
                "class, an argparse.Namespace...), and reading those means unpickling, which can run any "
                "code in the file; savegame refuses. If you trust the file, convert it yourself once: "
                "obj = torch.load(path, weights_only=False); torch.save(obj['model'].state_dict() (or the "
                "state_dict it holds), 'weights.pt'), then import that. torch said: "
                + str(e).strip().splitlines()[-1][:300]
            ) from e
        weights = _find_state_dict(obj, path, key)
    if into is not None:
        want = into.state_dict()
        if all(k.startswith("module.") for k in weights) and not any(k.startswith("module.") for k in want):
            weights = {k.removeprefix("module."): v for k, v in weights.items()}
        load_into(str(path), {"weights": weights}, {"weights": into}, strict=strict)
    return weights


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < os.path.getsize(path)


def _pick_model(state: Mapping[str, Any], manifest: dict, path: Path) -> str:
    objects = manifest.get("info", {}).get("objects", {})
    modules = [k for k, v in objects.items() if isinstance(v, dict) and v.get("kind") == "module"]
    if len(modules) == 1:
        return modules[0]
    for name in ("model", "net"):
        if isinstance(state.get(name), Mapping):
            return name
    candidates = [k for k, v in state.items() if isinstance(v, Mapping)
                  and v and any(isinstance(t, torch.Tensor) for t in v.values())]
    raise StateMismatchError(f"Cannot tell which model to export from {path}: candidates {candidates or 'none'}. "
                   "Pass key=... to choose one.")


def export_weights(checkpoint_path: str | os.PathLike, out_path: str | os.PathLike, *, key: str | None = None) -> Path:
    """Write one model's weights from a checkpoint as a plain ``.safetensors`` file that
    ``safetensors.torch.load_file`` reads. ``key`` picks the sub-tree; by default the single saved
    ``nn.Module`` (or the one named ``model``/``net``).

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> tmp = Path(tempfile.mkdtemp())
    >>> ckpt = save(tmp / "c", {"model": torch.nn.Linear(2, 1), "epoch": 1}).path
    >>> export_weights(ckpt, tmp / "model.safetensors").name
    'model.safetensors'
    """
    checkpoint_path, out_path = Path(checkpoint_path), Path(out_path)
    _refuse_sharded(Path(checkpoint_path))
    state, manifest = store.read_checkpoint(checkpoint_path)
    if not isinstance(state, Mapping):
        raise StateMismatchError(f"{checkpoint_path} holds a {type(state).__name__}, not a dict of saved objects.")
    key = key if key is not None else _pick_model(state, manifest, checkpoint_path)
    if key not in state or not isinstance(state[key], Mapping):
        raise StateMismatchError(f"{checkpoint_path} has no state_dict under {key!r} (it holds: {', '.join(map(str, state))}).")
    weights = {k: v for k, v in state[key].items() if isinstance(v, torch.Tensor)}
    skipped = [k for k in state[key] if k not in weights]
    if skipped:
        warn(f"export_weights: {skipped} under {key!r} are not tensors and were left out.")
    metadata = {"format": "pt", "source": str(checkpoint_path), "key": key, "step": str(manifest["step"])}
    with replacing(out_path) as temp:  # readers never see a half-written export
        write_tensors(temp, weights, metadata=metadata)
    return out_path
