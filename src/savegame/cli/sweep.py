"""``savegame sweep run|show|best``: hyperparameter sweeps that survive crashes (docs/sweeps.md).

    savegame sweep run digits.yaml [--workers 2] [--storage postgresql://...] [--dir sweeps/digits]
    savegame sweep show sweeps/digits [--json]   # trials by objective: state, value, params, step, resumes
    savegame sweep best sweeps/digits [--json]   # the best config, as YAML (or JSON)

Running the same ``sweep run`` again after a crash (even SIGKILL) goes on where it stopped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.text import Text

from ._common import CliError, print_json
from .tables import Fitted, table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = sub.add_parser("run", help="run (or resume) the sweep of a YAML spec",
                         description="Run the trials of SPEC until n_trials have ended; run it again after "
                         "a crash to go on where it stopped.")
    run.add_argument("spec", type=Path, metavar="SPEC.yaml")
    run.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    run.add_argument("--storage", default=None, metavar="URL",
                     help="an Optuna RDB storage shared by many machines, e.g. postgresql://user:pw@host/db "
                     "(default: the journal file in the sweep folder)")
    run.add_argument("--dir", type=Path, default=None, help="the sweep folder (default: sweeps/<name>)")
    run.add_argument("--allow-changes", action="store_true",
                     help="go on although the spec differs from the one the folder was started with")
    for name, text in (("show", "the trials, best first"), ("best", "the best trial's config")):
        action = sub.add_parser(name, help=text, description=f"Print {text} of a sweep folder.")
        action.add_argument("sweep_dir", type=Path, metavar="SWEEPDIR")
        action.add_argument("--storage", default=None, metavar="URL", help="the study's storage, if not the journal")
        action.add_argument("--json", action="store_true", help="print JSON instead")


def run(args: argparse.Namespace, console: Console) -> int:
    from ..sweeps.study import load_study, read_record
    from ..sweeps.table import best_row, trial_rows

    if args.action == "run":
        return _run(args, console)
    if not args.sweep_dir.is_dir():
        raise CliError(f"{args.sweep_dir} is not a folder; pass a sweep folder (sweeps/<name> by default)")
    study = load_study(args.sweep_dir, storage=args.storage)
    rows = trial_rows(study, args.sweep_dir)
    best = best_row(rows)
    if args.action == "best":
        if best is None:
            raise CliError(f"no trial of {args.sweep_dir} has completed yet")
        spec_record = read_record(args.sweep_dir)
        config = {**spec_record["spec"]["constants"], **best["params"]}
        if args.json:
            print_json({"trial": best["number"], "value": best["value"], "config": config})
        else:
            import yaml

            sys.stdout.write(f"# trial {best['number']}, {spec_record['spec']['objective']['metric']} = "
                             f"{best['value']:.6g}\n" + yaml.safe_dump(config, sort_keys=True))
        return 0
    if args.json:
        print_json({"trials": [{k: r[k] for k in ("number", "state", "value", "params", "dir", "resumes", "step")}
                               for r in rows], "best": best})
        return 0
    show_table(console, study, args.sweep_dir, rows)
    return 0


def show_table(console: Console, study: object, sweep_dir: Path, rows: list[dict] | None = None) -> None:
    """The trials of ``study`` (its ``rows``, else read) as a table, best first, and why each pruned
    or failed one ended."""
    from ..sweeps.table import trial_rows

    rows = trial_rows(study, sweep_dir) if rows is None else rows
    listing = table(f"sweep {study.study_name}", "trial", "state", "value", "params", "step", "resumes",
                    right=("trial", "value", "step", "resumes"))
    for row in rows:
        params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(row["params"].items()))
        listing.add_row(str(row["number"]), row["state"], "-" if row["value"] is None else f"{row['value']:.6g}",
                        Text(params), "-" if row["step"] is None else f"{row['step']:,}", str(row["resumes"]))
    console.print(Fitted(listing, short=("trial", "state", "step", "resumes")))
    for row in rows:
        if row["reason"]:
            console.print(f"trial {row['number']} {row['state']}: {row['reason']}", markup=False, soft_wrap=True)


def _run(args: argparse.Namespace, console: Console) -> int:
    from ..sweeps import load_spec, sweep_dir_for
    from ..sweeps.runner import run_sweep

    spec = load_spec(args.spec)
    sweep_dir = sweep_dir_for(spec, args.dir)
    console.print(f"sweep {spec.name}: {spec.n_trials} trials in {sweep_dir} ({args.workers} worker"
                  f"{'s' if args.workers != 1 else ''})", markup=False)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console,
                  transient=False) as bar:
        task = bar.add_task("trials", total=spec.n_trials)

        def show(ended: int, line: str) -> None:
            bar.update(task, completed=ended, description=line.split(" · ", 1)[-1])

        run_sweep(spec, sweep_dir, storage=args.storage, workers=args.workers, allow_changes=args.allow_changes,
                  progress=show)
    console.print(f"done: savegame sweep show {sweep_dir}", markup=False)
    return 0


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
