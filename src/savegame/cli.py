"""``savegame``: look at run folders from the shell (``ls``, ``show``, ``verify``, ``export``, ``demo``,
``board``).

Every command only reads the run folder (``export`` writes the one file it is asked for), so it is
safe while a run trains. Bad input (a missing folder, a folder that is not a run, no checkpoints)
prints one line on stderr naming the path and the fix, and exits 2; ``verify`` exits 1 on damage.

>>> main(["--help"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table

from .errors import SavegameError
from .runinfo import is_run_dir, read_run_info

if TYPE_CHECKING:
    from .checkpoint.store import CheckpointInfo

CHECKPOINTS = "checkpoints"
COMMANDS = ("demo", "ls", "show", "verify", "export", "board", "preflight", "doctor", "report")


class CliError(SavegameError):
    """Bad input on the command line; printed as one line, exit code 2."""


# --------------------------------------------------------------------------------------------
# Reading run folders
# --------------------------------------------------------------------------------------------
def _store() -> Any:
    """The checkpoint store, imported when a command needs it: it imports torch, which costs
    seconds that ``savegame doctor`` and ``--help`` need not pay."""
    from .checkpoint import store

    return store



def _run_dir(path: str) -> Path:
    run = Path(path)
    if not run.exists():
        raise CliError(f"{run} does not exist; pass a run folder (list them with `savegame ls`)")
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


def _best(info: dict[str, Any], checkpoints: list[CheckpointInfo]) -> dict[str, Any] | None:
    """The best checkpoint as ``{"metric", "mode", "value", "step"}`` among those on disk."""
    recorded = info.get("best") or {}
    if recorded.get("metric") and recorded.get("mode") in ("min", "max"):
        metric, mode = recorded["metric"], recorded["mode"]
    elif found := _keep_metric(checkpoints):
        metric, mode = found
    else:
        return None
    by_step = {c.step: c for c in checkpoints}
    if recorded.get("metric") == metric and recorded.get("step") in by_step:
        return {"metric": metric, "mode": mode, "value": recorded.get("value"),
                "step": recorded["step"]}
    sign = 1.0 if mode == "min" else -1.0
    ranked = [(sign * float(c.metrics[metric]), -c.step) for c in checkpoints
              if isinstance(c.metrics.get(metric), (int, float))
              and not math.isnan(float(c.metrics[metric]))]
    if not ranked:
        return {"metric": metric, "mode": mode, "value": recorded.get("value"), "step": None}
    value, neg_step = min(ranked)  # like KeepBest: ties go to the newer step
    return {"metric": metric, "mode": mode, "value": sign * value, "step": -neg_step}


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


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------

def cmd_ls(args: argparse.Namespace, console: Console) -> int:
    runs: list[Path] = []
    for root in map(Path, args.runs):
        if not root.exists():
            fix = "start one with `savegame demo`" if root == Path("runs") else "check the path"
            raise CliError(f"{root} does not exist; {fix}, or pass the folder that holds your runs")
        runs += _find_runs(root)
    rows = [_summary(run) for run in runs]
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        console.print(f"no run folders (folders with a run.json) under {', '.join(args.runs)}")
        return 0
    table = Table(title="savegame runs", **TABLE_STYLE)
    for name, justify in (("run", "left"), ("status", "left"), ("epoch/step", "right"),
                          ("best", "left"), ("ckpts", "right"), ("size", "right"),
                          ("updated", "right")):
        table.add_column(name, justify=justify, no_wrap=name == "run")
    for row in rows:
        style = STATUS_STYLE.get(row["status"], "")
        where = f"{row['epoch']}/{row['step']}" if row["step"] is not None else "-"
        table.add_row(row["run"], f"[{style}]{row['status']}[/]" if style else row["status"],
                      where, _best_text(row["best"], step=False), str(row["checkpoints"]),
                      human_size(row["size"]), human_age(row["updated"]))
    console.print(table)
    return 0


def _checkpoint_rows(run: Path, info: dict[str, Any]) -> tuple[list[dict[str, Any]], dict | None]:
    checkpoints = _store().list_checkpoints(run / CHECKPOINTS)
    best = _best(info, checkpoints)
    rows = [{"name": c.path.name, "path": str(c.path), "step": c.step, "epoch": c.epoch,
             "metrics": dict(c.metrics), "size": c.size, "created": c.created,
             "best": bool(best) and c.step == best.get("step"),
             "newest": i == len(checkpoints) - 1} for i, c in enumerate(checkpoints)]
    return rows, best


def checkpoint_table(rows: list[dict[str, Any]], title: str = "checkpoints") -> Table:
    """One row per checkpoint, one column per metric, marks for the best and the newest."""
    metrics = sorted({name for row in rows for name in row["metrics"]})
    table = Table(title=title, **TABLE_STYLE)
    table.add_column("checkpoint", no_wrap=True)
    for name in ("step", "epoch", *metrics, "size"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("created")
    table.add_column("", no_wrap=True)
    for row in rows:
        marks = " ".join(m for m, on in (("[bold green]best[/]", row["best"]),
                                         ("[cyan]newest[/]", row["newest"])) if on)
        values = [_num(row["metrics"][m]) if m in row["metrics"] else "-" for m in metrics]
        table.add_row(row["name"], str(row["step"]), str(row["epoch"]), *values,
                      human_size(row["size"]), human_age(row["created"]), marks)
    return table


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
    style = STATUS_STYLE.get(status, "")
    console.print(f"[bold]{run}[/]  status: [{style}]{status}[/]  "
                  f"updated {human_age(info.get('updated'))}  best: {_best_text(best)}")
    if info.get("message"):
        console.print(f"  {info['message']}")
    config = Table(title="config", show_header=False, **TABLE_STYLE)
    for key, value in info.get("config", {}).items():
        config.add_row(str(key), json.dumps(value, default=str))
    console.print(config)
    console.print(checkpoint_table(rows) if rows else "no committed checkpoints yet")
    resumes = info.get("resumes") or []
    if resumes:
        table = Table(title="resumed", **TABLE_STYLE)
        for name in ("when", "from", "step", "pid"):
            table.add_column(name)
        for r in resumes:
            table.add_row(human_age(r.get("time")), Path(str(r.get("from_checkpoint"))).name,
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
    for r in results:
        if r["problems"]:
            console.print(f"[red]DAMAGED[/] {r['path']}")
            for problem in r["problems"]:
                console.print(f"  {problem}", markup=False)
        else:
            console.print(f"[green]ok[/]      {r['path']}")
    for note in notes:
        console.print(f"[dim]note[/]    {note}", highlight=False)
    bad = sum(1 for r in results if r["problems"])
    console.print(f"{len(results) - bad} of {len(results)} checkpoints intact"
                  + (f"; {bad} damaged (resume falls back to an older one)" if bad else ""))
    return 0 if ok else 1


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    from .io import export_weights

    run = _run_dir(args.run)
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
        best = _best(info, checkpoints)
        if best is None or best.get("step") is None:
            raise CliError(
                f"{run} records no metric to pick the best checkpoint by (run.json has no best, "
                "and no checkpoint has the keep policy's metric); use --latest or --step N")
        chosen = next(c for c in checkpoints if c.step == best["step"])
    try:
        out = export_weights(chosen.path, Path(args.output), key=args.key)
    except KeyError as error:  # which tracked object holds the weights is ambiguous or wrong
        raise CliError(f"{error.args[0]} On the command line: --key NAME.") from None
    console.print(f"exported the weights of {chosen.path} (step {chosen.step}, epoch "
                  f"{chosen.epoch}, {_metrics(chosen.metrics)}) to {out}", highlight=False)
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
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("show", help="one run: config, checkpoints, resume history",
                       description="Show a run's status, config, checkpoints and resume history.")
    p.add_argument("run", metavar="RUN", help="the run folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("verify", help="check every file hash of every checkpoint",
                       description="Check the size and hash of every file of every committed "
                       "checkpoint. Exit 0 if all are intact, 1 if any is damaged.")
    p.add_argument("path", metavar="RUN", help="a run folder or a single checkpoint folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_verify)

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
    p.set_defaults(func=cmd_export)

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
    p.set_defaults(func=cmd_board)

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
    p.set_defaults(func=doctor_command.run_doctor)

    p = sub.add_parser("report", help="write one self-contained HTML report of runs: curves, verdicts, "
                       "checkpoints, hparams", description="Diagnose every run under RUNS and write "
                       "one static HTML file (no server, nothing fetched) with its curves, verdict, "
                       "signals and checkpoints, and a comparison table across runs.")
    doctor_command.add_report_arguments(p)
    p.set_defaults(func=doctor_command.run_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else "").parse_args(argv)
    console = Console(highlight=False)
    try:
        return args.func(args, console)
    except (SavegameError, OSError) as error:
        print(f"savegame {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C during training: stop now, without a traceback
        print(f"savegame {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
