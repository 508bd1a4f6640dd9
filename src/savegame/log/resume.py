"""Cut a run folder's event files back to what existed at the checkpoint a run resumes from.

Each checkpoint records the committed size of every event file the writer owns. A resumed process
first cuts each of those files back to its recorded size and moves aside whole files made after the
checkpoint, so nothing the dead process logged after that point stays visible to TensorBoard.
Nothing is deleted: the cut-off bytes go to ``discarded-logs/after-step-<S>-<time>/`` under names
without "tfevents", which TensorBoard ignores. Running this twice (a crash during the cut) gives the same result.

The rerun writes a new file per folder (as every TensorBoard writer does) that starts with a
``SessionLog.START`` at step S+1: a TensorBoard already running with the legacy loader then drops
the points it had read past S. The default (Rust) loader, watching live, also ends with one value
per step (``tests/log/test_server_resume.py`` checks both).

>>> import tempfile, pathlib
>>> from savegame.log.eventfile import EventFile
>>> run = pathlib.Path(tempfile.mkdtemp())
>>> f = EventFile.create(run); f.write([b"later"]); f.close()
>>> keep = {f.path.name: f.size - 5}            # the checkpoint saw everything but b"later"
>>> cut_back_event_files(run, keep, step=10) == keep
True
>>> f.path.stat().st_size == keep[f.path.name]
True
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .eventfile import is_our_event_file

DISCARDED = "discarded-logs"
_SKIP = {"checkpoints", DISCARDED}


def event_files(run_dir: Path) -> list[Path]:
    """The savegame event files in a run folder and its sub-runs (``add_scalars`` folders)."""
    found = []
    for folder, dirs, files in os.walk(run_dir):
        if Path(folder) == run_dir:
            dirs[:] = [d for d in dirs if d not in _SKIP]
        found += [Path(folder) / name for name in files if is_our_event_file(Path(name))]
    return sorted(found)


def cut_back_event_files(run_dir: Path, sizes: dict[str, int], *, step: int | None) -> dict[str, Path]:
    """Make the folder's event files hold exactly ``sizes`` (relative path -> bytes).

    Returns the sizes kept (``{relative path: bytes}``): later checkpoints record them again.
    """
    kept: dict[str, int] = {}
    aside = run_dir / DISCARDED / f"after-step-{step or 0:06d}-{int(time.time())}"
    for path in event_files(run_dir):
        relative = path.relative_to(run_dir).as_posix()
        keep = sizes.get(relative, 0)
        size = path.stat().st_size
        if keep > size:
            raise ValueError(
                f"{path} holds {size} bytes but the checkpoint recorded {keep}: the file was cut or "
                "replaced outside savegame. Restore it, or move it away to let the run start new "
                "log files.")
        target = aside / relative.replace("tfevents", "discarded")
        if keep == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            continue
        if keep < size:
            _move_tail(path, keep, target)
        kept[relative] = keep
    return kept


def _move_tail(path: Path, keep: int, target: Path) -> None:
    """Copy the bytes after ``keep`` to ``target`` (durably), then truncate ``path`` to ``keep``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "rb") as source, open(target, "wb") as out:
        source.seek(keep)
        while chunk := source.read(1 << 20):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    with open(path, "r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
