"""``savegame board [RUNS ...]``: the real TensorBoard on run folders, every logged sample kept,
on 127.0.0.1 until Ctrl-C.

    savegame board runs
    savegame board runs/a runs/b --port 6006      # named a and b in TensorBoard
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from ..log.board import BoardError, serve, start_board
from ._common import CliError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="*", metavar="RUNS",
                        help="folders to serve (default: runs if it exists, else .); several are "
                        "named by their base names")
    parser.add_argument("--port", type=int, default=0, help="port to serve on (default: a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: 127.0.0.1; 0.0.0.0 opens it to the network)")
    parser.add_argument("--reload-interval", type=float, default=None, metavar="SECONDS",
                        help="how often TensorBoard looks for new data (its default: 5)")
    parser.add_argument("--load-fast", choices=["auto", "true", "false"], default="auto",
                        help="TensorBoard's loader: true = the Rust data server, false = the Python "
                        "loader (default: auto, the first that works)")


def run(args: argparse.Namespace, console: Console) -> int:
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
