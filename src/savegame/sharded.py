"""Sharded state (FSDP2 ``fully_shard``, any DTensor) through ``torch.distributed.checkpoint``.

A model whose parameters are DTensors, and its optimizer, are saved by every rank at once: their
state dicts come from ``get_model_state_dict`` / ``get_optimizer_state_dict`` (keyed by parameter
name, so they load into another sharding), their tensors go through DCP's safetensors writer
(``HuggingFaceStorageWriter(save_distributed=True)``: one ``shard-<rank>-...safetensors`` per rank,
each tensor's offsets in its header), and the rest of the state (``param_groups``, plain numbers)
is rank 0's, kept in the manifest as a **skeleton** where each tensor is a marker. Loading reads
the skeleton, asks the live objects for a template of this job's sharding, lets DCP fill its
tensors (from N ranks into M, or into one process without a process group and a plain model),
and puts the skeleton's values back around them.

>>> skeleton_of({"state": {"w": {"step": 3, "exp_avg": torch.ones(2)}}, "param_groups": [{"lr": 0.1}]})
{'state': {'w': {'step': 3, 'exp_avg': '<tensor in sharded/>'}}, 'param_groups': [{'lr': 0.1}]}
>>> tensors_of({"state": {"w": {"step": 3, "exp_avg": torch.ones(2)}}, "param_groups": [{"lr": 0.1}]})
{'state': {'w': {'exp_avg': tensor([1., 1.])}}}
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointCorruptError, StateMismatchError

SHARDED_DIR = "sharded"  # inside a checkpoint folder: DCP's safetensors files
TENSOR = "<tensor in sharded/>"  # a tensor's place in a skeleton


def is_sharded(obj: Any) -> bool:
    """Whether ``obj`` (a model, or an optimizer of one) holds DTensor parameters."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch without distributed support shards nothing
        return False
    if isinstance(obj, torch.nn.Module):
        return any(isinstance(p, DTensor) for p in obj.parameters())
    groups = getattr(obj, "param_groups", None)
    return isinstance(groups, list) and any(isinstance(p, DTensor) for g in groups for p in g.get("params", ()))


def model_of(name: str, optimizer: Any, objects: dict[str, Any]) -> torch.nn.Module:
    """The tracked model whose parameters ``optimizer`` trains (``get_optimizer_state_dict`` names
    the optimizer's state by that model's parameter names)."""
    first = next((p for g in optimizer.param_groups for p in g["params"]), None)
    for obj in objects.values():
        if isinstance(obj, torch.nn.Module) and any(p is first for p in obj.parameters()):
            return obj
    raise StateMismatchError(
        f"run.track({name}=...): this optimizer trains sharded (DTensor) parameters, and its state is saved by "
        "their names in the model: track the model too, before it (run.track(model=model, "
        f"{name}={name})).")


def state_of(obj: Any, model: torch.nn.Module | None) -> dict[str, Any]:
    """``obj``'s state dict as DCP reshards it: keyed by parameter name, DTensors kept sharded."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    if isinstance(obj, torch.nn.Module):
        return get_model_state_dict(obj)
    return get_optimizer_state_dict(model, obj)


def load_state(obj: Any, model: torch.nn.Module | None, state: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    if isinstance(obj, torch.nn.Module):
        set_model_state_dict(obj, state)
    else:
        set_optimizer_state_dict(model, obj, state)


def _items(tree: Any):
    return tree.items() if isinstance(tree, dict) else enumerate(tree)


def skeleton_of(tree: Any) -> Any:
    """``tree`` with each tensor replaced by a marker (the part of a sharded state rank 0 keeps)."""
    if isinstance(tree, torch.Tensor):
        return TENSOR
    if isinstance(tree, dict):
        return {k: skeleton_of(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(skeleton_of(v) for v in tree)
    return tree


def tensors_of(tree: Any) -> Any:
    """Only the tensors of ``tree``, nested in string-keyed dicts (list items by index): what DCP
    writes. None when ``tree`` holds no tensor."""
    if isinstance(tree, torch.Tensor):
        return tree
    if not isinstance(tree, (dict, list, tuple)):
        return None
    kept = {str(k): tensors_of(v) for k, v in _items(tree)}
    return {k: v for k, v in kept.items() if v is not None} or None


def template_for(skeleton: Any, live: Any, where: str) -> Any:
    """The tensors of ``live`` (this job's state dict) at the places the skeleton marks: the DCP
    load template. A marked place the live state lacks means another model."""
    if skeleton == TENSOR:
        if not isinstance(live, torch.Tensor):
            raise StateMismatchError(f"{where}: the checkpoint holds a tensor there, the tracked object "
                                     f"{'has nothing' if live is None else 'has ' + type(live).__name__}; track the "
                                     "same model and optimizer as the run that saved it")
        return live
    if not isinstance(skeleton, (dict, list, tuple)):
        return None
    kept = {}
    for key, value in _items(skeleton):
        live_value = _get(live, key)
        picked = template_for(value, live_value, f"{where}.{key}")
        if picked is not None:
            kept[str(key)] = picked
    return kept or None


def _get(live: Any, key: Any) -> Any:
    if isinstance(live, dict):
        return live.get(key, live.get(str(key)))
    if isinstance(live, (list, tuple)) and isinstance(key, int) and key < len(live):
        return live[key]
    return None


def filled(skeleton: Any, loaded: Any) -> Any:
    """The skeleton with each marker replaced by the loaded tensor at its place."""
    if skeleton == TENSOR:
        return loaded
    if isinstance(skeleton, dict):
        return {k: filled(v, _get(loaded, k)) for k, v in skeleton.items()}
    if isinstance(skeleton, (list, tuple)):
        return type(skeleton)(filled(v, _get(loaded, str(i))) for i, v in enumerate(skeleton))
    return skeleton


def save_tensors(tensors: dict[str, Any], folder: Path, group: Any) -> None:
    """Every rank's part of ``tensors`` into ``folder`` (DCP's safetensors files, one per rank).
    DCP collects every rank's failure and raises it on every rank."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    # save_distributed=True: each rank writes its own file (the default, for one writer, would let
    # two ranks write the same file and report success).
    dcp.save(tensors, storage_writer=HuggingFaceStorageWriter(str(folder), save_distributed=True),
             process_group=group)


def load_tensors(template: dict[str, Any], folder: Path, group: Any) -> None:
    """Fill ``template``'s tensors in place from the DCP files in ``folder`` (any sharding; no
    process group: one process reads them whole)."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import CheckpointException, HuggingFaceStorageReader

    alone = not (dist.is_available() and dist.is_initialized())
    if not folder.is_dir():
        raise CheckpointCorruptError(f"{folder} is missing: the checkpoint's sharded tensors are gone")
    from .checkpoint.layout import member

    for file in folder.iterdir():
        member(folder, file.name)  # DCP opens every file there: none may link out of the checkpoint
    try:
        with warnings.catch_warnings():  # alone, on purpose: DCP's "assuming ... a single process" says nothing new
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(template, storage_reader=HuggingFaceStorageReader(str(folder)), process_group=group,
                     no_dist=alone)
    except CheckpointException as error:  # a BaseException: caught by name
        raise CheckpointCorruptError(f"{folder}: torch.distributed.checkpoint could not load it: {error}") from None


def hash_my_part(folder: Path, rank: int, size: int) -> dict[str, dict[str, Any]]:
    """Size and hash of this rank's share of the DCP files in ``folder`` (complete: ``dcp.save``
    returned on every rank), for ``verify``: file i of the sorted names goes to rank i % size. DCP
    names a rank's file by its shard index, so each rank reads back the file it just wrote, from
    its own page cache, and no rank reads the whole checkpoint over the network."""
    from .checkpoint.tensor_hash import hash_file

    names = sorted(path.name for path in folder.iterdir())
    return {name: {"size": (found := hash_file(folder / name)).size, "hash": found.hash}
            for index, name in enumerate(names) if index % size == rank}


def attacher(stage: Path, skeletons: dict[str, Any], world_size: int, files: dict[str, dict[str, Any]]):
    """What rank 0's commit calls with its temp folder: move the DCP files every rank wrote into
    ``stage`` in as ``sharded/``, and return the manifest's ``sharded`` record (the skeletons, the
    job size, ``files``: every rank's :func:`hash_my_part`)."""
    from .checkpoint import codec
    from .checkpoint.layout import fsync_dir

    def attach(temp: Path) -> dict[str, Any]:
        target = temp / SHARDED_DIR
        os.rename(stage, target)
        fsync_dir(target)  # DCP fsynced the files; their names in the folder must be durable too
        tree, tensors = codec.encode(skeletons)
        assert not tensors, "a skeleton holds no tensor"
        return {"dir": SHARDED_DIR, "world_size": world_size, "objects": tree, "files": dict(sorted(files.items()))}

    return attach


def skeletons_in(manifest: dict[str, Any]) -> dict[str, Any]:
    """The sharded objects' skeletons a checkpoint's manifest records (``{}``: none is sharded)."""
    from .checkpoint import codec

    record = manifest.get("sharded")
    if not record:
        return {}
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        raise CheckpointCorruptError("the manifest's 'sharded' record is damaged (no 'files')")
    return codec.decode(record.get("objects") or {}, {})


def sharded_problems(path: Path, manifest: dict[str, Any]) -> list[str]:
    """``verify``'s check of the DCP files a checkpoint lists (size and hash of each)."""
    from .checkpoint.layout import member
    from .checkpoint.tensor_hash import hash_file

    record = manifest.get("sharded") or {}
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict) or not all(isinstance(entry, dict) for entry in files.values()):
        return [f"{path / 'manifest.json'}: its 'sharded' record is damaged: {str(record)[:200]}"]
    problems = []
    for name, entry in files.items():
        file = path / SHARDED_DIR / name
        if "/" in name or name.startswith(".") or not file.is_file():
            problems.append(f"{file} is missing.")
            continue
        try:
            member(path / SHARDED_DIR, name)
        except CheckpointCorruptError as error:  # a link out of the checkpoint
            problems.append(str(error))
            continue
        found = hash_file(file)
        if (found.size, found.hash) != (entry.get("size"), entry.get("hash")):
            problems.append(f"{file} does not match the manifest: expected size {entry.get('size')} and hash "
                            f"{entry.get('hash')}, found size {found.size} and hash {found.hash}.")
    return problems


def not_here_error(path: Path, names: list[str], world_size: int) -> Exception:
    """What reading a sharded object outside a Run gets: where it is, and how to load it."""
    from .errors import ShardedStateError

    return ShardedStateError(
        f"{path}: {', '.join(names)} were saved sharded by torch.distributed.checkpoint from {world_size} ranks "
        f"(their tensors are in {path / SHARDED_DIR}), which savegame.load and export do not read whole. Resume "
        "them with run.track(...) in a savegame.Run: under torchrun with any number of ranks (FSDP), or as one "
        "process with the plain model and optimizer (no process group needed). Or read them with "
        f"torch.distributed.checkpoint: dcp.load(template, storage_reader=HuggingFaceStorageReader('{path / SHARDED_DIR}')).")
