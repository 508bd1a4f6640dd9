"""Flush every open writer at interpreter exit and on SIGTERM.

The atexit hook closes writers a script never closed. SIGTERM (what a cluster sends before it
kills a job) would end the process without atexit hooks, so a handler flushes first and then
does what SIGTERM did before: the previous Python handler, or the default (the process dies of
SIGTERM, as it would have). A forked child (a DataLoader worker) inherits the handler but has no
log thread: its copies of the writers go silent (``os.register_at_fork``), and it skips the flush.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import weakref
from typing import Any

_live: "weakref.WeakSet[Any]" = weakref.WeakSet()
_sigterm_installed = False


def track(writer: Any) -> None:
    """Close ``writer`` at exit and flush it on SIGTERM until ``untrack``."""
    _live.add(writer)


def untrack(writer: Any) -> None:
    _live.discard(writer)


@atexit.register
def _close_all_at_exit() -> None:
    for writer in list(_live):
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - exiting anyway; never hide the real exit reason
            pass


def _orphan_writers_in_child() -> None:
    # A forked child (a DataLoader worker) copies the writers but not their log threads: its
    # copies go silent, and its exit hook has nothing to wait for.
    for writer in list(_live):
        writer._orphan()
    _live.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_orphan_writers_in_child)


def install_sigterm_flush() -> None:
    """Install the SIGTERM handler once (only the main thread can)."""
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN or previous is None:
        return
    owner = os.getpid()

    def flush_then_continue(signum, frame):
        if os.getpid() == owner:
            for writer in list(_live):
                try:
                    writer._flush_for_signal()
                except Exception:  # noqa: BLE001 - the signal's own effect must still happen
                    pass
        if callable(previous):
            return previous(signum, frame)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, flush_then_continue)
    _sigterm_installed = True
