"""``run.json``: what a run folder is, what state it is in and how often it was resumed.

The file is small and rewritten whole, atomically (temp file, fsync, rename), so a reader such as
``savegame ls`` never sees half of it.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> info = new_run_info("demo", config={"lr": 0.1})
>>> write_run_info(d, info)
>>> read_run_info(d)["config"]
{'lr': 0.1}
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import time
from pathlib import Path
from typing import Any, Mapping

from . import jsonread
from .atomic import rename_aside, replace_file
from .errors import FormatVersionError, PreflightInterrupted, RunInfoDamagedError

RUN_FILE = "run.json"
FORMAT = "savegame.run"
VERSION = 1
STATUSES = ("running", "finished", "failed", "preempted", "stopped")  # stopped: early, by the doctor


def new_run_info(name: str, *, config: dict[str, Any] | None) -> dict[str, Any]:
    """A fresh ``run.json`` body for a run that starts now."""
    from . import __version__

    now = time.time()
    return {
        "format": FORMAT, "version": VERSION, "name": name, "config": config_as_json(config or {}),
        "status": "running", "created": now, "updated": now,
        "savegame_version": __version__, "torch_version": _torch_version(),
        "python_version": platform.python_version(), "host": socket.gethostname(),
        "pid": os.getpid(), "resumes": [], "best": None, "message": None,
    }


def status_on_exit(kind: type[BaseException] | None, error: BaseException | None) -> tuple[str, str | None]:
    """The status a ``with Run(...)`` block ends with, and why, from what ended it.

    >>> status_on_exit(None, None), status_on_exit(ValueError, ValueError("bad lr"))
    (('finished', None), ('failed', 'ValueError: bad lr'))
    """
    if kind is None or (kind is SystemExit and error.code in (0, None)):
        return "finished", None  # the block ended, or the script chose to exit cleanly
    if issubclass(kind, PreflightInterrupted):
        return "failed", f"stopped by Ctrl-C during preflight, before training; nothing was saved ({error})"
    if kind is KeyboardInterrupt:
        return "failed", "aborted by a second Ctrl-C, without saving"
    return "failed", f"{kind.__name__}: {error}"


def record_resume(info: dict[str, Any], step: int, checkpoint: str, *, config_changed: bool) -> None:
    """A process resumed the run from ``checkpoint`` at ``step``: add it to ``info["resumes"]``
    (and date the config change this process brought, if any)."""
    info["resumes"].append({"time": time.time(), "from_step": step, "from_checkpoint": checkpoint,
                            "pid": os.getpid()})
    if config_changed:
        info["config_history"][-1]["step"] = step


def is_run_dir(path: Path) -> bool:
    return (Path(path) / RUN_FILE).is_file()


# The fields a Run changes in place: of another kind, run.json is damaged (or not savegame's).
_FIELD_KINDS = {"resumes": list, "config_history": list, "saved_steps": list, "best": (dict, type(None)),
                "name": str, "status": str}


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """Read and check ``<run_dir>/run.json``; errors name the file and what is wrong:
    :class:`RunInfoDamagedError` for a file savegame could not have written (a ``Run`` sets it
    aside and goes on from the checkpoints), :class:`FormatVersionError` for one of a newer
    savegame, or of another program."""
    path = Path(run_dir) / RUN_FILE
    damaged = (f"; it is damaged. Its checkpoints are not: a Run on {run_dir} sets the file aside "
               f"and resumes from them")
    try:
        info = jsonread.read(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{run_dir} is not a savegame run folder: it has no {RUN_FILE}. "
            "Pass the folder given to savegame.Run(...)."
        ) from None
    except ValueError as error:
        raise RunInfoDamagedError(f"{path} is not valid JSON ({error})" + damaged) from None
    if not isinstance(info, dict):
        raise RunInfoDamagedError(f"{path} holds a JSON {type(info).__name__}, not an object" + damaged)
    if info.get("format") != FORMAT:
        raise FormatVersionError(f"{path} is not a savegame run file (no \"format\": \"{FORMAT}\"); if "
                                 "another program wrote it, give savegame.Run a folder of its own")
    if type(info.get("version", 0)) is not int:
        raise RunInfoDamagedError(f"{path} has version {str(info.get('version'))[:100]!r}, not a whole number"
                                  + damaged)
    if info.get("version", 0) > VERSION:
        raise FormatVersionError(
            f"{path} was written by a newer savegame (run format version {info['version']}, "
            f"this one reads up to {VERSION}); upgrade savegame"
        )
    for field, kind in _FIELD_KINDS.items():
        if field in info and not isinstance(info[field], kind):
            raise RunInfoDamagedError(f"{path} has a {type(info[field]).__name__} for {field!r}, where savegame "
                                      f"writes a {getattr(kind, '__name__', 'dict or null')}" + damaged)
    return info


def set_aside_run_info(run_dir: Path) -> Path:
    """Rename a damaged ``<run_dir>/run.json`` to ``run.json.damaged`` (``.damaged-2`` ... when
    taken), so nothing is lost and a new one can be written; returns the new path."""
    return rename_aside(Path(run_dir) / RUN_FILE, "damaged")


def write_run_info(run_dir: Path, info: dict[str, Any], *, durable: bool = True) -> None:
    """Replace ``<run_dir>/run.json`` atomically (and durably, unless not ``durable``)."""
    info["updated"] = time.time()
    write_json_atomic(Path(run_dir) / RUN_FILE, info, allow_nan=False, durable=durable)


def write_json_atomic(path: Path, value: Any, *, allow_nan: bool = True, durable: bool = True) -> None:
    """Replace the JSON file ``path`` atomically (temp file, fsync unless not ``durable``, rename)."""
    replace_file(path, json.dumps(value, indent=2, allow_nan=allow_nan, default=jsonable), durable=durable)


def jsonable(value: Any) -> Any:
    # Configs often hold tuples, paths or numpy numbers; show them readably rather than fail.
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


def config_as_json(config: Mapping[str, Any]) -> Any:
    """``config`` as ``run.json`` stores it: plain JSON, with a non-finite float written as the
    string ``"inf"``, ``"-inf"`` or ``"nan"`` (like checkpoint metrics), so that configs such as
    ``{"max_grad_norm": float("inf")}`` are stored rather than refused.

    >>> config_as_json({"clip": float("inf"), "sizes": (1, 2), "opt": {"eps": float("nan")}})
    {'clip': 'inf', 'sizes': [1, 2], 'opt': {'eps': 'nan'}}
    """
    def plain(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        return plain(jsonable(value))

    return plain(config)


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The keys whose values differ between two configs (as stored in ``run.json``), nested keys
    joined with ".": ``{key: [old, new]}``, a missing side as None.

    >>> config_changes({"lr": 0.1, "model": {"depth": 4}}, {"lr": 0.5, "model": {"depth": 4}, "wd": 0})
    {'lr': [0.1, 0.5], 'wd': [None, 0]}
    """
    flat_old, flat_new = _flatten(config_as_json(old)), _flatten(config_as_json(new))
    return {key: [flat_old.get(key), flat_new.get(key)] for key in sorted(flat_old.keys() | flat_new.keys())
            if flat_old.get(key, _MISSING) != flat_new.get(key, _MISSING)}


_MISSING = object()


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(config, Mapping) or (prefix and not config):
        return {prefix[:-1]: config} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        flat.update(_flatten(value, f"{prefix}{key}.") if isinstance(value, Mapping) and value
                    else {f"{prefix}{key}": value})
    return flat


def hparams_from_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config as TensorBoard hparams: nested keys joined with ".", values a bool, number or str.

    >>> hparams_from_config({"lr": 0.1, "model": {"depth": 4, "act": None}, "sizes": [1, 2]})
    {'lr': 0.1, 'model.depth': 4, 'model.act': 'None', 'sizes': '[1, 2]'}
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(hparams_from_config(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def _torch_version() -> str:
    import torch  # here, not at the top: `savegame doctor` reads run.json without importing torch

    return torch.__version__
