"""What every command shares: :class:`CliError` (one line, exit 2), the checks of path arguments
before a command starts, and ``--json`` output."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import SavegameError


class CliError(SavegameError):
    """Bad input on the command line; printed as one line, exit code 2."""


RUN_HINT = "pass a run folder (list them with `savegame ls`)"
RUNS_HINT = "pass the folder that holds your runs"
LOGDIR_HINT = "give a TensorBoard logdir (a folder of event files)"
LS_HINT = f"{RUNS_HINT}, or start one with `savegame demo`"


def folder_arg(path: str | os.PathLike, hint: str = "check the path") -> Path:
    """``path`` if it is a folder; else a :class:`CliError` (one line, exit 2) that names the
    mistake: a missing path (with ``hint``, the fix) or a file (with the folder to give instead).

    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp())
    >>> (run / "run.json").touch()
    >>> folder_arg(run) == run
    True
    >>> folder_arg(run / "run.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    savegame.cli._common.CliError: .../run.json is a file, not a folder; give its folder: ...
    """
    folder = Path(path)
    if folder.is_dir():
        return folder
    if folder.is_file():
        raise CliError(f"{folder} is a file, not a folder; give its folder: {folder.parent}")
    if folder.exists():
        raise CliError(f"{folder} is not a folder; {hint}")
    raise CliError(f"{folder} does not exist; {hint}")


def output_arg(flag: str, path: str | os.PathLike, example: str, *, makes_folders: bool = False) -> Path:
    """``path`` if the file can be written there; else a :class:`CliError` (one line, exit 2): it
    is a folder (name the file, e.g. ``example`` in it), a file stands where a folder must, or its
    folder is missing (unless the command ``makes_folders``, as ``report -o`` does)."""
    out = Path(path)
    if out.is_dir():
        raise CliError(f"{flag} {out} is a folder; name the file to write, e.g. {flag} {out / example}")
    folder = next((p for p in out.parents if p.exists()), Path("."))  # the nearest that exists
    if folder.exists() and not folder.is_dir():
        raise CliError(f"{flag} {out}: {folder} is a file, not a folder; write somewhere else")
    if folder != out.parent and not makes_folders:
        raise CliError(f"{flag} {out}: the folder {out.parent} does not exist; create it or write elsewhere")
    return out


def check_paths(args: argparse.Namespace, folders: Mapping[str, str],
                outputs: Mapping[str, tuple[str, str, bool]]) -> None:
    """A command's path arguments, before it starts: each of ``folders`` ({argument: hint}) is a
    folder, each of ``outputs`` ({argument: (flag, example file name, whether the command makes
    missing folders)}) can be written."""
    for name, hint in folders.items():
        value = getattr(args, name, None)
        for path in value if isinstance(value, list) else [] if value is None else [value]:
            folder_arg(path, hint)
    for name, (flag, example, makes_folders) in outputs.items():
        if getattr(args, name, None) is not None:
            output_arg(flag, getattr(args, name), example, makes_folders=makes_folders)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))
