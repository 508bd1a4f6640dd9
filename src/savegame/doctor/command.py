"""``savegame doctor PATH`` and ``savegame report RUNS -o report.html``.

``doctor`` reads any TensorBoard logdir and prints one verdict per run (exit 0; 1 when no run
could be judged; 2 on bad input). ``--json`` prints a list of diagnoses, ``--plot out.png`` draws
the curves with the verdicts. ``report`` writes one self-contained HTML file.

    savegame doctor runs/
    savegame doctor lightning_logs --val-tag val_loss --json
    savegame report runs/ -o report.html
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from .curves import LogdirError, RunData, folder_name, load_runs, root_labels
from .diagnosis import Diagnosis


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="a TensorBoard logdir: one run folder or a folder of runs")
    _add_tag_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON list of diagnoses")
    parser.add_argument("--plot", metavar="PNG", default=None, help="also draw the curves and verdicts into PNG")


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUNS", help="logdirs or run folders")
    parser.add_argument("-o", "--output", default="report.html", metavar="HTML",
                        help="the HTML file to write (default: report.html)")
    _add_tag_arguments(parser)


def _add_tag_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train-tag", default=None, metavar="TAG", help="the training-loss tag (default: guessed)")
    parser.add_argument("--val-tag", default=None, metavar="TAG", help="the validation-loss tag (default: guessed)")
    parser.add_argument("--classes", default=None, type=_classes, metavar="C",
                        help="number of classes: the chance level ln C (default: the run's num_classes, or inferred)")


def _classes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 2:
        raise argparse.ArgumentTypeError(f"--classes takes the number of classes, an integer of 2 or more, not {text!r}")
    return value


def diagnose_path(path: str | Path, *, train_tag: str | None = None, val_tag: str | None = None,
                  rules: Sequence[Any] = (), classes: int | None = None) -> tuple[list[RunData], list[Diagnosis]]:
    """Every run under ``path`` and its diagnosis (``rules``: verdicts and findings of your own,
    as for :func:`diagnose`); a folder without event files gives one "cannot judge" diagnosis
    for the folder itself."""
    from .rules import diagnose

    runs = load_runs(path)
    if not runs:
        name = folder_name(path)
        empty = RunData(name=name, path=Path(path))
        return [empty], [Diagnosis(run=name, cannot_judge=f"no TensorBoard event files under {path}")]
    return runs, [diagnose(run, train_tag=train_tag, val_tag=val_tag, rules=rules, classes=classes) for run in runs]


def run_doctor(args: argparse.Namespace, console: Any) -> int:
    if args.plot:
        from .plot import require_matplotlib

        require_matplotlib("savegame doctor --plot")  # before the work, not after it
    runs, diagnoses = diagnose_path(args.path, train_tag=args.train_tag, val_tag=args.val_tag,
                                       classes=args.classes)
    if args.json:
        print(json.dumps([d.to_dict() for d in diagnoses], indent=2, allow_nan=False))
    else:
        console.print(table(diagnoses, title=f"savegame doctor {args.path}"))
    if args.plot:
        from .plot import save_plot

        out = save_plot(runs, diagnoses, Path(args.plot))
        if not args.json:
            console.print(f"plot: {out}", markup=False, soft_wrap=True)
    return 0 if any(d.judged for d in diagnoses) else 1


def run_report(args: argparse.Namespace, console: Any) -> int:
    from .html import write_report
    from .plot import require_matplotlib

    require_matplotlib("savegame report")  # before reading any run: fail fast, with what to install
    runs: list[RunData] = []
    diagnoses: list[Diagnosis] = []
    for path, root in zip(args.runs, root_labels(args.runs)):
        found, judged = diagnose_path(path, train_tag=args.train_tag, val_tag=args.val_tag,
                                       classes=args.classes)
        if len(args.runs) > 1:  # several roots: name each run by its root's label and its path under it
            for run, diagnosis in zip(found, judged):
                under = Path(run.path).relative_to(path).as_posix() if run.path is not None else "."
                run.name = diagnosis.run = root if under == "." else f"{root}/{under}"
        runs += found
        diagnoses += judged
    output = Path(args.output)
    if output.is_dir():
        raise LogdirError(f"-o {output} is a folder; name the HTML file to write, e.g. -o {output / 'report.html'}")
    from ..sweeps.report import is_sweep_dir, sweep_section

    # a sweep folder gets its sweep section too
    sections = [sweep_section(Path(path)) for path in args.runs if is_sweep_dir(Path(path))]
    out = write_report(runs, diagnoses, output, sections=sections)
    console.print(table(diagnoses, title="diagnosis"))
    console.print(f"report: {out}", markup=False, soft_wrap=True)
    return 0 if any(d.judged for d in diagnoses) else 1


def table(diagnoses: list[Diagnosis], *, title: str) -> Any:
    """A rich table (run, verdict, confidence, the main evidence) followed by each run's
    evidence, suggestions and findings. Cells fold onto more lines on a narrow console (or
    without one: 80 columns), never cut: a long run name or tag stays whole."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from .verdicts import terminal_style  # the verdict table's style, a user's verdict's included

    grid = Table(title=escape(title), title_justify="left", box=None, header_style="bold", pad_edge=False)
    for name, kwargs in (("run", {"max_width": 40}), ("verdict", {}), ("conf.", {"justify": "right"}),
                         ("evidence", {})):
        grid.add_column(name, overflow="fold", **kwargs)
    details: list[Any] = []
    for d in diagnoses:
        if not d.judged:
            grid.add_row(Text(d.run), Text("cannot judge", style="dim"), "", Text(d.cannot_judge or ""))
        else:
            style = terminal_style(d)
            grid.add_row(Text(d.run), Text(d.verdict, style=style), f"{d.confidence:.0%}",
                         Text(d.evidence[0] if d.evidence else ""))
        lines = [f"  decided by: {d.numbers()}"] if d.decided_by else []
        lines += [f"  evidence: {e}" for e in d.evidence[1:]] + [f"  do: {s}" for s in d.suggestions]
        lines += [f"  also: {f.message}" for f in d.findings]
        if lines:
            details.append(Text(f"\n{d.run} — {d.verdict or 'cannot judge'}", style="bold"))
            details.append(Text("\n".join(lines)))
    return Group(grid, *details)
