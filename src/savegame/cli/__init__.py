"""``savegame``: look at run folders from the shell (``ls``, ``show``, ``verify``, ``export``, ``board``),
train the demo, check a setup (``preflight``) and judge learning curves (``doctor``, ``report``).

Every command that reads a run folder only reads it (``export`` writes the one file it is asked
for), so it is safe while a run trains. Bad input (a missing folder, a file where a folder is
expected, a folder that is not a run, no checkpoints) prints one line on stderr naming the path
and the fix, and exits 2; ``verify`` exits 1 on damage. Tables fold long cells (run paths, metric
names) onto more lines rather than cutting them, at any terminal width and without a terminal;
``--json`` prints everything for scripts.

Each command is one module of this package with ``add_arguments(parser)`` and
``run(args, console) -> exit code``, registered in :data:`COMMANDS`. ``main`` imports only the
chosen command's module, so ``savegame doctor`` and ``savegame ls`` never import torch.

>>> sorted(COMMANDS) == sorted(["demo", "ls", "show", "verify", "export", "board", "preflight", "doctor", "report",
...                             "sweep"])
True
>>> main(["--help"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from rich.console import Console

from ..errors import SavegameError
from ._common import LOGDIR_HINT, LS_HINT, RUN_HINT, RUNS_HINT, CliError, check_paths

__all__ = ["COMMANDS", "CliError", "Command", "build_parser", "main"]


@dataclass(frozen=True, kw_only=True)
class Command:
    """One ``savegame`` command: where its code is, and what ``main`` knows of it without
    importing that code."""

    module: str
    """The module with ``add_arguments(parser)`` and ``run(args, console) -> int`` (the exit
    code); imported only when the command is chosen."""
    help: str
    """Its line in ``savegame --help``."""
    description: str
    """The top of ``savegame COMMAND --help``."""
    folders: Mapping[str, str] = field(default_factory=dict)
    """``{argument: hint}``: each path given there must be a folder; if not, one line naming the
    mistake (with the hint: what to pass) and exit 2, before the command runs."""
    outputs: Mapping[str, tuple[str, str, bool]] = field(default_factory=dict)
    """``{argument: (flag, example file name, whether the command makes missing folders)}``: the
    files the command writes, checked the same way."""


COMMANDS: dict[str, Command] = {  # in the order of `savegame --help`
    "demo": Command(
        module="savegame.cli.demo",
        help="train a small CNN on handwritten digits (Ctrl-C, rerun: it resumes)",
        description="Train a small CNN on the 8x8 handwritten digits that scikit-learn ships, with save slots."),
    "ls": Command(
        module="savegame.cli.ls", help="list runs: status, progress, best metric, size",
        description="List the run folders (folders with a run.json) in RUNS and up to two levels below.",
        folders={"runs": LS_HINT}),
    "show": Command(
        module="savegame.cli.show", help="one run: config, checkpoints, resume history",
        description="Show a run's status, config, checkpoints and resume history.",
        folders={"run": RUN_HINT}),
    "verify": Command(
        module="savegame.cli.verify", help="check every file hash of every checkpoint",
        description="Check the size and hash of every file of every committed checkpoint. Exit 0 if all "
        "are intact, 1 if any is damaged.",
        folders={"path": RUN_HINT}),
    "export": Command(
        module="savegame.cli.export", help="write a checkpoint's model weights to a .safetensors file",
        description="Write the model weights of one checkpoint to a plain .safetensors file that "
        "safetensors.torch.load_file reads.",
        folders={"run": RUN_HINT}, outputs={"output": ("-o", "model.safetensors", False)}),
    "board": Command(
        module="savegame.cli.board", help="open TensorBoard on run folders, every logged point kept",
        description="Start TensorBoard on RUNS (its event files, any depth below) on 127.0.0.1, keeping "
        "every sample of every plugin, and print its URL. Ctrl-C stops it.",
        folders={"runs": f"{RUNS_HINT} (TensorBoard reads every event file below it)"}),
    "preflight": Command(
        module="savegame.cli.preflight", help="check a training setup before a long run (cs231n / Karpathy)",
        description="Run the preflight checks (data, loss at init, gradients, overfit one batch, ...) on "
        "the demo or on module:function, print each verdict with its likely fix. Exit 0 when no check "
        "failed, 1 when one did."),
    "doctor": Command(
        module="savegame.cli.doctor",
        help="diagnose learning curves: overfitting, divergence, plateaus, lr ...",
        description="Read any TensorBoard logdir (savegame, torch.utils.tensorboard, tensorboardX, "
        "Lightning), find each run's training and validation loss, and give it a verdict with evidence "
        "and suggestions. Exit 0; 1 when no run could be judged.",
        folders={"path": LOGDIR_HINT}, outputs={"plot": ("--plot", "curves.png", True)}),
    "report": Command(
        module="savegame.cli.report",
        help="write one self-contained HTML report of runs: curves, verdicts, checkpoints, hparams",
        description="Diagnose every run under RUNS and write one static HTML file (no server, nothing "
        "fetched) with its curves, verdict, signals and checkpoints, and a comparison table across runs.",
        folders={"runs": LOGDIR_HINT}, outputs={"output": ("-o", "report.html", True)}),
    "sweep": Command(
        module="savegame.cli.sweep",
        help="hyperparameter sweeps that survive crashes: run, show, best (Optuna underneath)",
        description="Run a sweep from a YAML spec (each trial a run folder that resumes exactly), or show "
        "a sweep folder's trials and best config."),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``command``, only that command's module is imported and its
    arguments added (the others' modules may import torch, which a command that does not need it
    should not wait for): the rest show their help line only."""
    parser = argparse.ArgumentParser(
        prog="savegame", description="Save slots for PyTorch training runs: inspect, verify and "
        "export the checkpoints in a run folder.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, spec in COMMANDS.items():
        command_parser = sub.add_parser(name, help=spec.help, description=spec.description)
        if command in (None, name):
            importlib.import_module(spec.module).add_arguments(command_parser)
    return parser


def console_main() -> None:
    """The ``savegame`` command's process: :func:`main`, then a quick exit (``process_exit``)."""
    from ..process_exit import exit_with

    exit_with(main())


def main(argv: list[str] | None = None) -> int:
    """Run one ``savegame`` command; its exit code (2: bad input, 130: interrupted)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else "").parse_args(argv)
    spec = COMMANDS[args.command]
    console = Console(highlight=False)
    try:
        check_paths(args, spec.folders, spec.outputs)  # a missing path, a file for a folder ...: exit 2
        return importlib.import_module(spec.module).run(args, console)
    except (SavegameError, OSError) as error:
        print(f"savegame {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C during training: stop now, without a traceback
        print(f"savegame {args.command}: interrupted", file=sys.stderr)
        return 130
