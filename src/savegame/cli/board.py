"""``savegame board [RUNS ...]``: the real TensorBoard on run folders, every logged sample kept,
on 127.0.0.1 (only this machine can reach it) until Ctrl-C; ``--host`` binds another address,
with a warning: TensorBoard has no login, so anyone who reaches that address reads the logs.

    savegame board runs
    savegame board runs/a runs/b --port 6006      # named a and b in TensorBoard
    savegame board runs --host 0.0.0.0            # every address of this machine: the network's too
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import socket
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
                        help="address to bind (default: 127.0.0.1, only this machine can reach it; "
                        "0.0.0.0 opens it to the network, to anyone who can reach this machine)")
    parser.add_argument("--reload-interval", type=float, default=None, metavar="SECONDS",
                        help="how often TensorBoard looks for new data (its default: 5)")
    parser.add_argument("--load-fast", choices=["auto", "true", "false"], default="auto",
                        help="TensorBoard's loader: true = the Rust data server, false = the Python "
                        "loader (default: auto, the first that works)")


def run(args: argparse.Namespace, console: Console) -> int:
    runs = args.runs or (["runs"] if Path("runs").exists() else ["."])
    if not 0 <= args.port <= 65535:
        raise CliError(f"--port {args.port} is not a port; pass 1-65535, or 0 for a free one")
    local = is_loopback(args.host)
    if not local:
        print(f"savegame board: warning: --host {args.host} serves the logs to anyone who can reach "
              f"this machine{' on any of its addresses' if is_wildcard(args.host) else ''} (TensorBoard has "
              "no login); leave --host out to keep them to this machine (127.0.0.1)", file=sys.stderr)
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
    reach = ("only this machine can reach it (--host 0.0.0.0 shares it with the network)" if local
             else "open to the network")
    console.print(f"TensorBoard at {shown_url(board.url, args.host)} (pid {board.pid}) serving {where}, every "
                  f"sample kept; {reach}; Ctrl-C stops it", markup=False, soft_wrap=True)
    sys.stdout.flush()
    if serve(board):
        console.print("TensorBoard stopped", markup=False)
        return 0
    print(board.output(20), file=sys.stderr)
    last = next((line for line in reversed(board.output().splitlines()) if line.strip()), "")
    raise CliError(f"TensorBoard exited by itself with code {board.process.returncode}"
                   + (f": {last.strip()}" if last else ""))


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost).

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any address
        return False


def shown_url(url: str, host: str) -> str:
    """The address to print for ``url``: with a wildcard ``host`` (0.0.0.0, ::) it names this
    machine, which the other machines can open, instead of an address no browser can.

    >>> shown_url("http://127.0.0.1:6006/", "127.0.0.1")
    'http://127.0.0.1:6006/'
    >>> shown_url("http://0.0.0.0:6006/", "0.0.0.0") == f"http://{socket.gethostname()}:6006/"
    True
    """
    if not is_wildcard(host):
        return url
    return re.sub(r"^http://(0\.0\.0\.0|\[::\])(?=:)", f"http://{socket.gethostname()}", url)


def is_wildcard(host: str) -> bool:
    """Whether ``host`` binds every address of the machine (0.0.0.0, ::)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False
