"""``savegame show RUN``: one run's status, config, checkpoints (best and newest marked) and
resume history.

    savegame show runs/demo
    savegame show runs/demo --json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.text import Text

from ._common import print_json
from .runs import checkpoint_rows, run_dir, run_info, run_status
from .tables import STATUS_STYLE, best_text, checkpoint_table, human_age, table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="the run folder")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def run(args: argparse.Namespace, console: Console) -> int:
    run = run_dir(args.run)
    info = run_info(run)
    rows, best = checkpoint_rows(run, info)
    status = run_status(run, info)
    if args.json:
        print_json({"run": str(run), "name": info.get("name"), "status": status,
                    "message": info.get("message"), "config": info.get("config", {}),
                    "created": info.get("created"), "updated": info.get("updated"),
                    "best": best, "checkpoints": rows, "resumes": info.get("resumes", []),
                    "versions": {k: info.get(f"{k}_version") for k in ("savegame", "torch", "python")}})
        return 0
    console.print(Text.assemble((str(run), "bold"), "  status: ",
                                (status, STATUS_STYLE.get(status, "")),
                                f"  updated {human_age(info.get('updated'))}  best: {best_text(best)}"))
    if info.get("message"):
        console.print(f"  {info['message']}", markup=False)
    config = table("config", "key", "value", show_header=False)
    for key, value in info.get("config", {}).items():
        config.add_row(Text(str(key)), Text(json.dumps(value, default=str)))
    console.print(config)
    console.print(checkpoint_table(rows) if rows else "no committed checkpoints yet")
    resumes = info.get("resumes") or []
    if resumes:
        resumed = table("resumed", "when", "from", "step", "pid")
        for r in resumes:
            resumed.add_row(human_age(r.get("time")), Text(Path(str(r.get("from_checkpoint"))).name),
                            str(r.get("from_step")), str(r.get("pid")))
        console.print(resumed)
    else:
        console.print("never resumed")
    return 0
