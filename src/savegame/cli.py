"""``savegame``: look at run folders from the shell (``ls``, ``show``, ``verify``, ``export``, ``demo``,
``board``).

Every command only reads the run folder (``export`` writes the one file it is asked for), so it is
safe while a run trains. Bad input (a missing folder, a file where a folder is expected, a folder
that is not a run, no checkpoints) prints one line on stderr naming the path and the fix, and
exits 2; ``verify`` exits 1 on damage. Tables fold long cells (run paths, metric names) onto more
lines rather than cutting them, at any terminal width and without a terminal; ``--json`` prints
everything for scripts.

>>> main(["--help"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from . import ranking
from .errors import SavegameError
from .runinfo import is_run_dir, read_run_info

if TYPE_CHECKING:
    from .checkpoint.store import CheckpointInfo

CHECKPOINTS = "checkpoints"
COMMANDS = ("demo", "ls", "show", "verify", "export", "board", "preflight", "doctor", "report")


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
    savegame.cli.CliError: .../run.json is a file, not a folder; give its folder: ...
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


def _check_paths(args: argparse.Namespace) -> None:
    """The command's path arguments, before it starts: each of ``args.folders`` ({argument: hint})
    is a folder, each of ``args.outputs`` ({argument: (flag, example file name, whether the command
    makes missing folders)}) can be written."""
    for name, hint in getattr(args, "folders", {}).items():
        value = getattr(args, name, None)
        for path in value if isinstance(value, list) else [] if value is None else [value]:
            folder_arg(path, hint)
    for name, (flag, example, makes_folders) in getattr(args, "outputs", {}).items():
        if getattr(args, name, None) is not None:
            output_arg(flag, getattr(args, name), example, makes_folders=makes_folders)


# --------------------------------------------------------------------------------------------
# Reading run folders
# --------------------------------------------------------------------------------------------
def _store() -> Any:
    """The checkpoint store, imported when a command needs it: it imports torch, which costs
    seconds that ``savegame doctor`` and ``--help`` need not pay."""
    from .checkpoint import store

    return store



def _run_dir(path: str) -> Path:
    run = folder_arg(path, RUN_HINT)
    if not is_run_dir(run):
        hint = ("it is a checkpoint folder; pass the run folder two levels up"
                if (run / "manifest.json").is_file() else "list the runs with `savegame ls`")
        raise CliError(f"{run} is not a savegame run folder (it has no run.json); {hint}")
    return run


def _info(run: Path) -> dict[str, Any]:
    try:
        return read_run_info(run)
    except (OSError, ValueError) as error:
        raise CliError(str(error)) from None


def _status(info: dict[str, Any]) -> str:
    """The status, with "running" turned into "crashed" when its process is gone from this host."""
    status = info.get("status", "?")
    pid = info.get("pid")
    if status == "running" and info.get("host") == socket.gethostname() and isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "crashed"  # killed without a chance to write its status (kill -9, power loss)
        except PermissionError:
            pass  # alive, owned by someone else
    return status


def _keep_metric(checkpoints: list[CheckpointInfo]) -> tuple[str, str] | None:
    """(metric, mode) that the newest readable manifest ranks by, if it records one.

    Looks at a keep policy recorded in the manifest's ``info`` and at the save policy's state
    (``OnImprovement`` stores the metric it follows), for runs whose run.json has no best.
    """
    for ckpt in reversed(checkpoints):
        try:
            manifest = _store().read_manifest(ckpt.path)
        except (OSError, ValueError):
            continue
        info = manifest.get("info") if isinstance(manifest.get("info"), dict) else {}
        own = (manifest.get("state") or {}).get("_savegame") or {}
        for node in (info.get("keep"), own.get("keep"), own.get("save_policy")):
            if found := _find_keep_best(node):
                return found
    return None


def _find_keep_best(node: Any) -> tuple[str, str] | None:
    if isinstance(node, dict):
        if node.get("metric") and node.get("mode") in ("min", "max"):
            return node["metric"], node["mode"]
        node = list(node.values())
    if isinstance(node, list):
        for child in node:
            if found := _find_keep_best(child):
                return found
    return None


def _ranking(info: dict[str, Any], checkpoints: list[CheckpointInfo]) -> tuple[str, str] | None:
    """(metric, mode) that "best" ranks by: run.json's ``ranking`` (recorded by the Run from
    its start), else its ``best``, else the keep or save policy recorded in a manifest."""
    for recorded in (info.get("ranking"), info.get("best")):
        if (isinstance(recorded, dict) and isinstance(recorded.get("metric"), str)
                and recorded["metric"] and recorded.get("mode") in ranking.MODES):
            return recorded["metric"], recorded["mode"]
    return _keep_metric(checkpoints)


def _best(info: dict[str, Any], checkpoints: list[CheckpointInfo]) -> dict[str, Any] | None:
    """The best of the checkpoints on disk, ranked as :mod:`savegame.ranking` defines it, as
    run.json records it: ``{"metric", "mode", "value", "step", "checkpoint"}`` (value, step and
    checkpoint None while no checkpoint has a finite value of the metric); None when the run
    records no metric to rank by."""
    found = _ranking(info, checkpoints)
    if found is None:
        return None
    metric, mode = found
    return (ranking.best_record(checkpoints, metric, mode)
            or {"metric": metric, "mode": mode, "value": None, "step": None, "checkpoint": None})


def _disk_size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass  # deleted while we walk: a running keep policy
    return total


def _find_runs(root: Path, depth: int = 2) -> list[Path]:
    if is_run_dir(root):
        return [root]
    if depth == 0 or not root.is_dir():
        return []
    found: list[Path] = []
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            found += _find_runs(child, depth - 1)
    return found


def _summary(run: Path) -> dict[str, Any]:
    info = _info(run)
    checkpoints = _store().list_checkpoints(run / CHECKPOINTS)
    newest = checkpoints[-1] if checkpoints else None
    return {
        "run": str(run), "name": info.get("name"), "status": _status(info),
        "epoch": newest.epoch if newest else None, "step": newest.step if newest else None,
        "best": _best(info, checkpoints), "checkpoints": len(checkpoints),
        "size": _disk_size(run), "updated": info.get("updated"),
    }


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------

def human_size(size: float) -> str:
    if size < 1024:
        return f"{size:.0f} B"
    for unit in ("KB", "MB", "GB"):
        size /= 1024
        if size < 1024 or unit == "GB":
            break
    return f"{size:.1f} {unit}"


def human_age(when: float | None) -> str:
    if not when:
        return "?"
    seconds = max(0.0, time.time() - when)
    for limit, unit, div in ((60, "s", 1), (3600, "min", 60), (86400, "h", 3600), (7 * 86400, "days", 86400)):
        if seconds < limit:
            return "just now" if seconds < 5 else f"{seconds // div:.0f} {unit} ago"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(when))


def _num(value: Any) -> str:
    return f"{value:#.4g}" if isinstance(value, float) else str(value)  # 1.0 -> "1.000"


def _metrics(metrics: dict[str, Any]) -> str:
    return "  ".join(f"{k}={_num(v)}" for k, v in sorted(metrics.items())) or "-"


def _best_text(best: dict[str, Any] | None, *, step: bool = True) -> str:
    if not best or best.get("value") is None:
        return "-"
    where = f" @ step {best['step']}" if step and best.get("step") is not None else ""
    return f"{best['metric']}={_num(best['value'])}{where}"


TABLE_STYLE: dict[str, Any] = {"box": box.SIMPLE_HEAD, "collapse_padding": True, "pad_edge": False}
STATUS_STYLE = {"finished": "green", "stopped": "green", "running": "cyan", "preempted": "yellow",
                "failed": "red", "crashed": "red"}


def _table(title: str | None, *columns: str, right: tuple[str, ...] = (), **style: Any) -> Table:
    """A table whose cells fold onto more lines when the console is too narrow, never cut: every
    character of a long run path or metric name stays readable (rich's default is "…").
    Headers are plain text (a metric named ``acc[top1]`` is not rich markup)."""
    table = Table(title=None if title is None else escape(title), **{**TABLE_STYLE, **style})
    for name in columns:
        table.add_column(Text(name), justify="right" if name in right else "left", overflow="fold")
    return table


class Fitted:
    """A table laid out for the console it is printed on: its short columns (a status, a step, a
    size) stay whole while the long ones (run paths, metric names) fold, as long as each long
    column keeps room for its values (up to ``FOLD_AT`` characters of them); on a console too
    narrow even for that, every column folds evenly. No cell is ever cut."""

    FOLD_AT = 12

    def __init__(self, table: Table, short: tuple[str, ...]) -> None:
        self.table, self.short = table, short

    def _layout(self, console: Console, options: ConsoleOptions) -> None:
        def width(cell: Any, part: str) -> int:
            return getattr(Measurement.get(console, options, cell), part)

        short, long = [], []
        for column in self.table.columns:
            column.width = None
            cells = list(column.cells)
            if str(column.header) in self.short:  # as wide as its widest cell, header included
                short.append((column, max(width(c, "maximum") for c in [column.header, *cells])))
            else:  # the longest word of its values, at most FOLD_AT; the header folds
                long.append((column, min(self.FOLD_AT, max((width(c, "minimum") for c in cells), default=1))))
        for column, least in short + long:
            column.width = least
        unbounded = options.update_width(1 << 20)  # the width it needs, not the width it gets
        fits = Measurement.get(console, unbounded, self.table).maximum <= options.max_width
        for column, _ in long:
            column.width = None
        if not fits:
            for column, _ in short:
                column.width = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        self._layout(console, options)
        yield self.table

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        self._layout(console, options)
        return Measurement.get(console, options, self.table)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------

def cmd_ls(args: argparse.Namespace, console: Console) -> int:
    runs: list[Path] = []
    for root in args.runs:  # main() checked that each is a folder
        runs += _find_runs(Path(root))
    rows = [_summary(run) for run in runs]
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        console.print(f"no run folders (folders with a run.json) under {', '.join(args.runs)}",
                      markup=False)
        return 0
    table = _table("savegame runs", "run", "status", "epoch/step", "best", "ckpts", "size", "updated",
                   right=("epoch/step", "ckpts", "size", "updated"))
    for row in rows:
        where = f"{row['epoch']}/{row['step']}" if row["step"] is not None else "-"
        table.add_row(Text(row["run"]), Text(row["status"], style=STATUS_STYLE.get(row["status"], "")),
                      where, Text(_best_text(row["best"], step=False)), str(row["checkpoints"]),
                      human_size(row["size"]), human_age(row["updated"]))
    console.print(Fitted(table, short=("status", "epoch/step", "ckpts", "size")))
    return 0


def _checkpoint_rows(run: Path, info: dict[str, Any]) -> tuple[list[dict[str, Any]], dict | None]:
    checkpoints = _store().list_checkpoints(run / CHECKPOINTS)
    best = _best(info, checkpoints)
    rows = [{"name": c.path.name, "path": str(c.path), "step": c.step, "epoch": c.epoch,
             "metrics": dict(c.metrics), "size": c.size, "created": c.created,
             "best": bool(best) and c.step == best.get("step"),
             "newest": i == len(checkpoints) - 1} for i, c in enumerate(checkpoints)]
    return rows, best


def checkpoint_table(rows: list[dict[str, Any]], title: str = "checkpoints") -> Fitted:
    """One row per checkpoint, one column per metric, marks for the best and the newest."""
    metrics = sorted({name for row in rows for name in row["metrics"]})
    columns = ("checkpoint", "step", "epoch", *metrics, "size", "created", "")
    table = _table(title, *columns, right=("step", "epoch", *metrics, "size"))
    for row in rows:
        marks = " ".join(m for m, on in (("[bold green]best[/]", row["best"]),
                                         ("[cyan]newest[/]", row["newest"])) if on)
        values = [_num(row["metrics"][m]) if m in row["metrics"] else "-" for m in metrics]
        table.add_row(Text(row["name"]), str(row["step"]), str(row["epoch"]), *values,
                      human_size(row["size"]), human_age(row["created"]), marks)
    return Fitted(table, short=("checkpoint", "step", "epoch", "size"))


def cmd_show(args: argparse.Namespace, console: Console) -> int:
    run = _run_dir(args.run)
    info = _info(run)
    rows, best = _checkpoint_rows(run, info)
    status = _status(info)
    if args.json:
        _print_json({"run": str(run), "name": info.get("name"), "status": status,
                     "message": info.get("message"), "config": info.get("config", {}),
                     "created": info.get("created"), "updated": info.get("updated"),
                     "best": best, "checkpoints": rows, "resumes": info.get("resumes", []),
                     "versions": {k: info.get(f"{k}_version") for k in ("savegame", "torch", "python")}})
        return 0
    console.print(Text.assemble((str(run), "bold"), "  status: ",
                                (status, STATUS_STYLE.get(status, "")),
                                f"  updated {human_age(info.get('updated'))}  best: {_best_text(best)}"))
    if info.get("message"):
        console.print(f"  {info['message']}", markup=False)
    config = _table("config", "key", "value", show_header=False)
    for key, value in info.get("config", {}).items():
        config.add_row(Text(str(key)), Text(json.dumps(value, default=str)))
    console.print(config)
    console.print(checkpoint_table(rows) if rows else "no committed checkpoints yet")
    resumes = info.get("resumes") or []
    if resumes:
        table = _table("resumed", "when", "from", "step", "pid")
        for r in resumes:
            table.add_row(human_age(r.get("time")), Text(Path(str(r.get("from_checkpoint"))).name),
                          str(r.get("from_step")), str(r.get("pid")))
        console.print(table)
    else:
        console.print("never resumed")
    return 0


def cmd_verify(args: argparse.Namespace, console: Console) -> int:
    path = Path(args.path)
    notes: list[str] = []
    if (path / "manifest.json").is_file() or (path.name.startswith("step-") and path.is_dir()):
        targets = [path]
    else:
        run = _run_dir(args.path)
        root = run / CHECKPOINTS
        targets = [c.path for c in _store().list_checkpoints(root)] if root.is_dir() else []
        committed = {t.name for t in targets}
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
        if not targets:
            raise CliError(f"{run} has no committed checkpoints to verify; "
                           "run training until it saves one")
    results = [{"name": t.name, "path": str(t), "problems": _store().verify_checkpoint(t)} for t in targets]
    ok = all(not r["problems"] for r in results)
    if args.json:
        _print_json({"path": str(path), "ok": ok, "checkpoints": results, "notes": notes})
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


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    from .io import export_weights

    run = _run_dir(args.run)
    output = Path(args.output)  # main() checked that it can be written
    info = _info(run)
    checkpoints = _store().list_checkpoints(run / CHECKPOINTS)
    if not checkpoints:
        raise CliError(f"{run} has no committed checkpoints yet; train until it saves one")
    if args.latest:
        chosen = checkpoints[-1]
    elif args.step is not None:
        chosen = next((c for c in checkpoints if c.step == args.step), None)
        if chosen is None:
            steps = ", ".join(str(c.step) for c in checkpoints)
            raise CliError(f"{run} has no checkpoint at step {args.step}; it has steps {steps}")
    else:
        best = _best(info, checkpoints)  # the one `savegame ls` and `show` name
        if best is None:
            raise CliError(
                f"{run} records no metric to pick the best checkpoint by (run.json has no ranking "
                "nor best, and no manifest records a keep policy's metric); use --latest or --step N")
        if best["step"] is None:
            raise CliError(f"{run} has no checkpoint with a finite {best['metric']} to rank "
                           "(missing, NaN or inf never ranks); use --latest or --step N")
        chosen = next(c for c in checkpoints if c.step == best["step"])
    try:
        out = export_weights(chosen.path, output, key=args.key)
    except KeyError as error:  # which tracked object holds the weights is ambiguous or wrong
        raise CliError(f"{error.args[0]} On the command line: --key NAME.") from None
    console.print(f"exported the weights of {chosen.path} (step {chosen.step}, epoch "
                  f"{chosen.epoch}, {_metrics(chosen.metrics)}) to {out}", highlight=False,
                  markup=False, soft_wrap=True)
    return 0


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from . import demo

    return demo.run(args)


def cmd_board(args: argparse.Namespace, console: Console) -> int:
    from .log.board import BoardError, serve, start_board

    runs = args.runs or (["runs"] if Path("runs").exists() else ["."])
    if not 0 <= args.port <= 65535:
        raise CliError(f"--port {args.port} is not a port; pass 1-65535, or 0 for a free one")
    try:
        board = start_board(runs, port=args.port, host=args.host, load_fast=args.load_fast,
                            reload_interval=args.reload_interval)
    except BoardError as error:
        if error.output:
            print(error.output, file=sys.stderr)
        raise CliError(str(error)) from None
    except KeyboardInterrupt:  # Ctrl-C while it starts: start_board stopped it already
        return 0
    where = ", ".join(str(path) if len(board.logdirs) == 1 else f"{name}={path}"
                      for name, path in board.logdirs.items())
    console.print(f"TensorBoard at {board.url} (pid {board.pid}) serving {where}, every "
                  "sample kept; Ctrl-C stops it", markup=False, soft_wrap=True)
    sys.stdout.flush()
    if serve(board):
        console.print("TensorBoard stopped", markup=False)
        return 0
    print(board.output(20), file=sys.stderr)
    last = next((line for line in reversed(board.output().splitlines()) if line.strip()), "")
    raise CliError(f"TensorBoard exited by itself with code {board.process.returncode}"
                   + (f": {last.strip()}" if last else ""))


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------

def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``command``, the other commands' own arguments are left out (their
    modules import torch, which a command that does not need it should not wait for)."""
    parser = argparse.ArgumentParser(
        prog="savegame", description="Save slots for PyTorch training runs: inspect, verify and "
        "export the checkpoints in a run folder.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="train a small CNN on handwritten digits (Ctrl-C, rerun: it resumes)",
                       description="Train a small CNN on the 8x8 handwritten digits that scikit-learn "
                       "ships, with save slots.")
    if command in (None, "demo"):
        from . import demo
        demo.add_arguments(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("ls", help="list runs: status, progress, best metric, size",
                       description="List the run folders (folders with a run.json) in RUNS and up "
                       "to two levels below.")
    p.add_argument("runs", nargs="*", default=["runs"], metavar="RUNS",
                   help="folders to search (default: runs)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=cmd_ls, folders={"runs": LS_HINT})

    p = sub.add_parser("show", help="one run: config, checkpoints, resume history",
                       description="Show a run's status, config, checkpoints and resume history.")
    p.add_argument("run", metavar="RUN", help="the run folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=cmd_show, folders={"run": RUN_HINT})

    p = sub.add_parser("verify", help="check every file hash of every checkpoint",
                       description="Check the size and hash of every file of every committed "
                       "checkpoint. Exit 0 if all are intact, 1 if any is damaged.")
    p.add_argument("path", metavar="RUN", help="a run folder or a single checkpoint folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_verify, folders={"path": RUN_HINT})

    p = sub.add_parser("export", help="write a checkpoint's model weights to a .safetensors file",
                       description="Write the model weights of one checkpoint to a plain "
                       ".safetensors file that safetensors.torch.load_file reads.")
    p.add_argument("run", metavar="RUN", help="the run folder")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--best", action="store_true", help="the best checkpoint by the run's metric")
    which.add_argument("--latest", action="store_true", help="the newest checkpoint")
    which.add_argument("--step", type=int, metavar="N", help="the checkpoint of step N")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the .safetensors file to write")
    p.add_argument("--key", default=None, help="which tracked object holds the weights "
                   "(default: the model; e.g. --key model)")
    p.set_defaults(func=cmd_export, folders={"run": RUN_HINT},
                   outputs={"output": ("-o", "model.safetensors", False)})

    p = sub.add_parser("board", help="open TensorBoard on run folders, every logged point kept",
                       description="Start TensorBoard on RUNS (its event files, any depth below) "
                       "on 127.0.0.1, keeping every sample of every plugin, and print its URL. "
                       "Ctrl-C stops it.")
    p.add_argument("runs", nargs="*", metavar="RUNS",
                   help="folders to serve (default: runs if it exists, else .); several are "
                   "named by their base names")
    p.add_argument("--port", type=int, default=0, help="port to serve on (default: a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: 127.0.0.1; 0.0.0.0 opens it to the network)")
    p.add_argument("--reload-interval", type=float, default=None, metavar="SECONDS",
                   help="how often TensorBoard looks for new data (its default: 5)")
    p.add_argument("--load-fast", choices=["auto", "true", "false"], default="auto",
                   help="TensorBoard's loader: true = the Rust data server, false = the Python "
                   "loader (default: auto, the first that works)")
    p.set_defaults(func=cmd_board, folders={"runs": f"{RUNS_HINT} (TensorBoard reads every event "
                                            "file below it)"})

    p = sub.add_parser("preflight", help="check a training setup before a long run (cs231n / Karpathy)",
                       description="Run the preflight checks (data, loss at init, gradients, overfit "
                       "one batch, ...) on the demo or on module:function, print each verdict with "
                       "its likely fix. Exit 0 when no check failed, 1 when one did.")
    if command in (None, "preflight"):
        from .preflight import command as preflight_command
        preflight_command.add_arguments(p)
        p.set_defaults(func=lambda args, console: preflight_command.run(args, console))

    from .doctor import command as doctor_command
    p = sub.add_parser("doctor", help="diagnose learning curves: overfitting, divergence, plateaus, lr ...",
                       description="Read any TensorBoard logdir (savegame, torch.utils.tensorboard, "
                       "tensorboardX, Lightning), find each run's training and validation loss, and "
                       "give it a verdict with evidence and suggestions. Exit 0; 1 when no run could "
                       "be judged.")
    doctor_command.add_doctor_arguments(p)
    p.set_defaults(func=doctor_command.run_doctor, folders={"path": LOGDIR_HINT},
                   outputs={"plot": ("--plot", "curves.png", True)})

    p = sub.add_parser("report", help="write one self-contained HTML report of runs: curves, verdicts, "
                       "checkpoints, hparams", description="Diagnose every run under RUNS and write "
                       "one static HTML file (no server, nothing fetched) with its curves, verdict, "
                       "signals and checkpoints, and a comparison table across runs.")
    doctor_command.add_report_arguments(p)
    p.set_defaults(func=doctor_command.run_report, folders={"runs": LOGDIR_HINT},
                   outputs={"output": ("-o", "report.html", True)})
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else "").parse_args(argv)
    console = Console(highlight=False)
    try:
        _check_paths(args)  # a missing path, a file where a folder is expected ...: exit 2
        return args.func(args, console)
    except (SavegameError, OSError) as error:
        print(f"savegame {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C during training: stop now, without a traceback
        print(f"savegame {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
