"""Leave a process that imported torch without paying for the garbage collection at exit.

At interpreter exit Python collects the garbage of every object still alive; with torch imported
that walk takes 0.5-0.9 s here (a script of just ``import torch`` exits in 0.7-0.9 s, and in
0.18 s with ``gc.freeze()`` first). Freezing moves the live objects out of the collector's reach:
``atexit`` handlers still run, files the program forgot to close are still flushed and closed when
their last reference goes, and the memory goes back to the system with the process. Only the
finalizers of objects caught in reference cycles are skipped, which Python does not promise to run
at exit anyway. For the entry points of savegame's own processes (the ``savegame`` command, sweep
workers), never for a library call: a long-lived process must keep collecting.

>>> import subprocess, sys
>>> subprocess.run([sys.executable, "-c", "from savegame.process_exit import exit_with; exit_with(3)"]).returncode
3
"""

from __future__ import annotations

import gc
import sys
from typing import NoReturn

__all__ = ["exit_with"]


def exit_with(code: int) -> NoReturn:
    """``sys.exit(code)`` with the objects alive now frozen out of the exit's garbage collection."""
    gc.freeze()
    sys.exit(code)
