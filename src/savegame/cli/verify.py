"""``savegame verify RUN``: check the size and hash of every file of every committed checkpoint;
exit 0 if all are intact, 1 if any is damaged. Folders that are not committed checkpoints (a save
in flight, a quarantined copy) are named as notes.

    savegame verify runs/demo
    savegame verify runs/demo/checkpoints/step-000480 --json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from ..checkpoint.store import list_checkpoints, verify_checkpoint
from ._common import CliError, print_json
from .runs import CHECKPOINTS, run_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="RUN", help="a run folder or a single checkpoint folder")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _uncommitted(root: Path, committed: set[str]) -> list[str]:
    """A note for each ``step-*`` folder of ``root`` that is not a committed checkpoint."""
    notes: list[str] = []
    for other in sorted(root.iterdir()) if root.is_dir() else []:
        if not other.name.startswith("step-") or other.name in committed:
            continue
        if ".corrupt" in other.name:
            notes.append(f"{other.name}: quarantined as damaged earlier; resume skips it")
        elif ".old-" in other.name:
            notes.append(f"{other.name}: the previous copy from an interrupted overwrite; "
                         "the next run puts it back or removes it")
        elif ".tmp-" in other.name:
            notes.append(f"{other.name}: unfinished save (in flight or from a crash); "
                         "resume ignores it")
        else:
            notes.append(f"{other.name}: not committed (no COMMIT file); resume ignores it")
    return notes


def run(args: argparse.Namespace, console: Console) -> int:
    path = Path(args.path)
    notes: list[str] = []
    if (path / "manifest.json").is_file() or (path.name.startswith("step-") and path.is_dir()):
        targets = [path]
    else:
        run = run_dir(args.path)
        root = run / CHECKPOINTS
        damaged: list = []  # committed ones whose manifest or COMMIT is damaged, or lost COMMIT: verified too
        targets = sorted([c.path for c in list_checkpoints(root, damaged=damaged)] + [p for p, _ in damaged])
        notes = _uncommitted(root, {t.name for t in targets})
        if not targets:
            raise CliError(f"{run} has no committed checkpoints to verify; "
                           "run training until it saves one")
    results = [{"name": t.name, "path": str(t), "problems": verify_checkpoint(t)} for t in targets]
    ok = all(not r["problems"] for r in results)
    if args.json:
        print_json({"path": str(path), "ok": ok, "checkpoints": results, "notes": notes})
        return 0 if ok else 1
    for r in results:  # one line per checkpoint, its path whole (soft wrap: the terminal folds it)
        if r["problems"]:
            console.print(f"[red]DAMAGED[/] {escape(r['path'])}", soft_wrap=True)
            for problem in r["problems"]:
                console.print(f"  {problem}", markup=False)
        else:
            console.print(f"[green]ok[/]      {escape(r['path'])}", soft_wrap=True)
    for note in notes:
        console.print(f"[dim]note[/]    {escape(note)}", highlight=False)
    bad = sum(1 for r in results if r["problems"])
    console.print(f"{len(results) - bad} of {len(results)} checkpoints intact"
                  + (f"; {bad} damaged (resume falls back to an older one)" if bad else ""))
    return 0 if ok else 1
