"""``savegame demo``: the demo's options, the checks before it trains anything, and what it shows
when it ends (the checkpoints kept, the doctor's diagnosis, an HTML report). The training loop
itself is :mod:`savegame.examples.digits`, written against the public API only.

    savegame demo --epochs 3 --dir /tmp/digits
    savegame demo --break-at 3          # the doctor stops a diverging run and keeps its best
    savegame demo --sweep --workers 2   # tune its lr and width: 8 trials, each a run folder
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from rich.console import Console

from ..examples import digits
from ..runinfo import is_run_dir, read_run_info
from ._common import CliError
from .runs import checkpoint_rows, run_info
from .tables import checkpoint_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=None, help="the run folder (default: runs/demo; with --sweep, sweeps/demo)")
    parser.add_argument("--epochs", type=int, default=digits.CONFIG["epochs"],
                        help=f"epochs to train (default: {digits.CONFIG['epochs']})")
    parser.add_argument("--fresh", action="store_true",
                        help="delete the run folder first and start over")
    parser.add_argument("--break-at", type=int, default=None, metavar="EPOCH",
                        help="from this epoch on (2 or later), multiply the learning rate by 1000: "
                        "watch the doctor stop the diverging run and keep its best checkpoint")
    parser.add_argument("--sweep", action="store_true",
                        help="run the demo's hyperparameter sweep instead (savegame.examples.digits_sweep: "
                        "8 trials of 4 epochs over lr and width; needs 'savegame[sweep]'); rerun to resume it")
    parser.add_argument("--workers", type=int, default=2, help="with --sweep: worker processes (default 2)")


def run(args: argparse.Namespace, console: Console) -> int:
    if args.sweep:
        return run_sweep_demo(args, console)
    folder = Path(args.dir or "runs/demo")
    if args.fresh and folder.exists() and not is_run_dir(folder):
        raise CliError(f"--fresh deletes a run folder, but {folder} is not one (no run.json); "
                       "pick another --dir or delete it yourself")
    if not args.fresh and is_run_dir(folder) and read_run_info(folder).get("status") == "finished":
        console.print(f"{folder} has already finished training; here is what it left "
                      "(add --fresh to start over).")
        summary(console, folder)
        return 0
    if args.epochs < 1:
        raise CliError(f"--epochs must be at least 1, but got {args.epochs}")
    cfg = {**digits.CONFIG, "epochs": args.epochs}
    if args.break_at is not None:
        if args.break_at < 2:  # the doctor needs a healthy start to tell a divergence from it
            raise CliError(f"--break-at must be an epoch number from 2 (counted from 1), but got {args.break_at}")
        cfg["break_at"] = args.break_at
    digits.check_requirements()  # before anything is deleted or trained: a missing package costs nothing
    if args.fresh and folder.exists():
        shutil.rmtree(folder)
    digits.train(folder, cfg, console)
    summary(console, folder)
    diagnosis_and_report(console, folder)
    return 0


def run_sweep_demo(args: argparse.Namespace, console: Console) -> int:
    """``savegame demo --sweep``: the demo's sweep, then its table and best config."""
    import sys

    from ..sweeps import parse_spec
    from ..sweeps.runner import run_sweep
    from .sweep import show_table

    digits.check_requirements()
    if args.workers < 1:
        raise CliError(f"--workers must be at least 1, but got {args.workers}")
    from ..examples import digits_sweep

    spec = parse_spec(digits_sweep.SPEC)
    folder = Path(args.dir or "sweeps/demo")
    console.print(f"sweep: {spec.n_trials} trials of the digits CNN over lr and width ({args.workers} workers) "
                  f"in {folder}; Ctrl-C or a kill, then rerun: it resumes", markup=False)
    study = run_sweep(spec, folder, workers=args.workers,
                      progress=lambda ended, line: console.print(line, markup=False))
    show_table(console, study, folder)
    console.print("next, try:")
    for command in (f"savegame board {folder}      # HPARAMS: every trial, its state, beside its curves",
                    f"savegame sweep best {folder}", f"savegame report {folder} -o sweep.html"):
        console.print(f"  {command}")
    sys.stdout.flush()
    return 0


def diagnosis_and_report(console: Console, folder: Path) -> None:
    """The doctor's verdict on the finished run, and a self-contained HTML report beside it."""
    from ..doctor import diagnose, read_run
    from ..doctor.command import table
    from ..errors import MissingDependencyError

    run_data = read_run(folder, name=folder.name)
    diagnosis = diagnose(run_data)
    console.print(table([diagnosis], title="the doctor's diagnosis"))
    try:
        from ..doctor.html import write_report
        report = write_report([run_data], [diagnosis], folder / "report.html")
    except MissingDependencyError as error:
        console.print(f"no HTML report: {error}", markup=False)
        return
    console.print(f"report: {report}  (open it in a browser; savegame report {folder.parent} -o report.html "
                  "compares every run)", markup=False, soft_wrap=True)


def summary(console: Console, folder: Path) -> None:
    """Where everything is: the run folder, the checkpoints kept, and what to try next."""
    rows, best = checkpoint_rows(folder, run_info(folder))
    console.print(f"run folder: {folder}  (run.json, checkpoints/, TensorBoard event files)")
    console.print(checkpoint_table(rows, title=f"checkpoints kept in {folder / 'checkpoints'}"))
    best_row = next((r for r in rows if r["best"]), None)
    if best_row and "acc/val" in best_row["metrics"]:
        console.print(f"best checkpoint: {best_row['name']}, validation accuracy "
                      f"{best_row['metrics']['acc/val']:.1%}")
    console.print("next, try:")
    for command in (f"savegame board {folder.parent}      # TensorBoard: curves, images, graph, hparams",
                    f"savegame ls {folder.parent}", f"savegame show {folder}", f"savegame verify {folder}",
                    f"savegame export {folder} --best -o digits.safetensors"):
        console.print(f"  {command}")
