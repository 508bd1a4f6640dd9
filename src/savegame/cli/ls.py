"""``savegame ls [RUNS ...]``: the run folders under RUNS, one line each.

    savegame ls runs            # run, status, epoch/step, best metric, checkpoints, size, updated
    savegame ls runs --json     # the same, for scripts
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.text import Text

from ._common import print_json
from .runs import find_runs, summary
from .tables import STATUS_STYLE, Fitted, best_text, human_age, human_size, table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="*", default=["runs"], metavar="RUNS",
                        help="folders to search (default: runs)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def run(args: argparse.Namespace, console: Console) -> int:
    runs: list[Path] = []
    for root in args.runs:  # main() checked that each is a folder
        runs += find_runs(Path(root))
    rows = [summary(run) for run in runs]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        console.print(f"no run folders (folders with a run.json) under {', '.join(args.runs)}",
                      markup=False)
        return 0
    listing = table("savegame runs", "run", "status", "epoch/step", "best", "ckpts", "size", "updated",
                    right=("epoch/step", "ckpts", "size", "updated"))
    for row in rows:
        where = f"{row['epoch']}/{row['step']}" if row["step"] is not None else "-"
        listing.add_row(Text(row["run"]), Text(row["status"], style=STATUS_STYLE.get(row["status"], "")),
                        where, Text(best_text(row["best"], step=False)), str(row["checkpoints"]),
                        human_size(row["size"]), human_age(row["updated"]))
    console.print(Fitted(listing, short=("status", "epoch/step", "ckpts", "size")))
    for row in rows:
        if "problem" in row:
            console.print(Text(f"{row['run']}: {row['problem']}", style="red"))
    return 0
