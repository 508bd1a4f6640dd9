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
>>> cut_back(run, {"files": keep}, step=10) == keep
True
>>> f.path.stat().st_size == keep[f.path.name]
True
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..atomic import replace_file
from ..messages import warn
from .eventfile import is_our_event_file
from .records import read_records

DISCARDED = "discarded-logs"
PROJECTOR_CONFIG = "projector_config.pbtxt"
_SKIP = {"checkpoints", DISCARDED}


def event_files(run_dir: Path) -> list[Path]:
    """The savegame event files in a run folder and its sub-runs (``add_scalars`` folders)."""
    found = []
    for folder, dirs, files in os.walk(run_dir):
        if Path(folder) == run_dir:
            dirs[:] = [d for d in dirs if d not in _SKIP]
        found += [Path(folder) / name for name in files if is_our_event_file(Path(name))]
    return sorted(found)


def cut_back(run_dir: Path, saved: dict, *, step: int | None) -> dict[str, int]:
    """Make the run folder's logs what they were when the checkpoint was taken: event files
    (``saved["files"]``) and projector embeddings (the first ``saved["embeddings"]`` entries).
    Returns the event-file sizes kept; later checkpoints record them again."""
    aside = run_dir / DISCARDED / f"after-step-{step or 0:06d}-{int(time.time())}"
    kept = cut_back_event_files(run_dir, saved.get("files", {}), aside=aside)
    cut_back_embeddings(run_dir, saved.get("embeddings", 0), aside=aside)
    return kept


def cut_back_event_files(run_dir: Path, sizes: dict[str, int], *, aside: Path) -> dict[str, int]:
    """Make the folder's event files hold exactly ``sizes`` (relative path -> bytes); the rest
    goes to ``aside``. Returns the sizes kept (``{relative path: bytes}``)."""
    kept: dict[str, int] = {}
    for path in event_files(run_dir):
        relative = path.relative_to(run_dir).as_posix()
        keep = sizes.get(relative, 0)
        size = path.stat().st_size
        target = aside / relative.replace("tfevents", "discarded")
        if keep > size:  # cut or damaged outside savegame: keep what is whole, the run goes on
            recorded, keep = keep, sum(16 + len(r) for r in read_records(path.read_bytes()))
            warn(
                f"{path} holds {size} bytes but the checkpoint recorded {recorded}: the file was cut or "
                f"damaged outside savegame. Kept its first {keep} bytes (every whole record), moved the rest "
                f"to {target}; the steps logged past that are missing from the curves. To get them back, "
                "restore the file from a backup before the run starts.")
        if keep == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            continue
        if keep < size:
            _move_tail(path, keep, target)
        kept[relative] = keep
    return kept


def cut_back_embeddings(run_dir: Path, keep: int, *, aside: Path) -> None:
    """Keep the first ``keep`` entries of ``projector_config.pbtxt``; move the folders that only
    later entries use to ``aside``."""
    config_path = run_dir / PROJECTOR_CONFIG
    if not config_path.is_file():
        return
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    config = text_format.Parse(config_path.read_text(), ProjectorConfig())
    if len(config.embeddings) <= keep:
        return
    kept, dropped = config.embeddings[:keep], config.embeddings[keep:]
    in_use = {Path(e.tensor_path).parent for e in kept}
    for entry in dropped:
        folder = Path(entry.tensor_path).parent
        if folder not in in_use and (run_dir / folder).is_dir():
            (aside / folder).parent.mkdir(parents=True, exist_ok=True)
            os.replace(run_dir / folder, aside / folder)
    aside.mkdir(parents=True, exist_ok=True)
    (aside / PROJECTOR_CONFIG).write_text(config_path.read_text())
    trimmed = ProjectorConfig()
    trimmed.embeddings.extend(kept)
    if keep == 0:
        config_path.unlink()
        return
    replace_file(config_path, text_format.MessageToString(trimmed))


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
