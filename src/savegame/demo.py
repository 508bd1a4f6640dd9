"""``python -m savegame.demo``: ``savegame demo`` as a module, with the same options and exit codes.

The demo's training loop is :mod:`savegame.examples.digits` (public API only); the command around
it (options, the checks before training, the summary, diagnosis and report after) is
:mod:`savegame.cli.demo`.

    python -m savegame.demo --epochs 3 --dir /tmp/digits
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """``savegame demo`` with ``argv`` (default: this process's arguments); its exit code."""
    from .cli import main as cli_main

    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
