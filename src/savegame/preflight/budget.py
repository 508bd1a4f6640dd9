"""When a preflight check stops training: its time budget, and Ctrl-C.

Every check that trains asks ``budget.exhausted()`` between two steps. The answer is True once the
check has run for its share of ``time_budget`` seconds (the check then says in its verdict that it
was cut short, after how many steps and seconds); and if Ctrl-C was pressed, the call raises
:class:`PreflightInterrupted` there, between two steps, where nothing is half done.

``ctrl_c_stops_preflight()`` is what makes a Ctrl-C land there: while preflight runs (in the main
thread) it puts its own SIGINT handler in place of whatever was installed (Python's default, or
``savegame.Run``'s "save at the end of this step"), and puts that one back afterwards. The first
Ctrl-C stops preflight at the end of the current step; a second one raises at once. A SIGINT that
the process ignores (``SIG_IGN``, e.g. a background job) stays ignored.

>>> budget = Budget(None)            # no time limit
>>> budget.exhausted(), budget.cut
(False, False)
>>> budget = Budget(0.0)             # no time at all: cut before the first step
>>> budget.exhausted(), budget.cut
(True, True)
>>> budget.said(3)[:31]
'cut short by the time budget af'
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from contextlib import contextmanager
from types import FrameType
from typing import Iterator

from ..errors import PreflightInterrupted

TIME_BUDGET = 10.0  # default seconds each check that trains may run (preflight(time_budget=...))


class _CtrlC:
    """The process-wide state of :func:`ctrl_c_stops_preflight` (signal handlers are process-wide)."""

    requested = False
    active = 0  # nesting depth of ctrl_c_stops_preflight() in the main thread


def interrupted() -> bool:
    """Whether Ctrl-C was pressed during this preflight (and not yet acted on)."""
    return _CtrlC.requested


def check_interrupt() -> None:
    """Raise :class:`PreflightInterrupted` if Ctrl-C was pressed; call it between two steps."""
    if _CtrlC.requested:
        _CtrlC.requested = False  # acted on: a Ctrl-C during the unwinding is a new one
        raise PreflightInterrupted()


def _handle(number: int, frame: FrameType | None) -> None:
    if _CtrlC.requested:
        raise PreflightInterrupted("a second Ctrl-C during preflight")  # "now": do not wait for the step
    _CtrlC.requested = True
    print("\nsavegame: Ctrl-C, stopping preflight at the end of this step (press Ctrl-C again to stop at once)",
          file=sys.stderr, flush=True)


@contextmanager
def ctrl_c_stops_preflight() -> Iterator[None]:
    """While inside, Ctrl-C means "stop preflight": :func:`check_interrupt` raises at the next step
    boundary (a second Ctrl-C raises at once). The SIGINT handler that was installed is back on exit.
    A no-op outside the main thread, when SIGINT is ignored or not handled by Python, and when nested."""
    install = (threading.current_thread() is threading.main_thread() and _CtrlC.active == 0
               and callable(signal.getsignal(signal.SIGINT)))
    if not install:
        yield
        return
    previous = signal.signal(signal.SIGINT, _handle)
    _CtrlC.active += 1
    _CtrlC.requested = False
    try:
        yield
        check_interrupt()  # a Ctrl-C after the last step still stops the call
    finally:
        signal.signal(signal.SIGINT, previous)
        _CtrlC.active -= 1
        _CtrlC.requested = False


class Budget:
    """The time a check may train: ``seconds`` from now (None: no limit). ``exhausted()`` is asked
    between steps; it also raises :class:`PreflightInterrupted` after a Ctrl-C."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()
        self.cut = False  # True once exhausted() said so: the check was cut short

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float | None:
        return None if self.seconds is None else max(0.0, self.seconds - self.elapsed)

    def part(self, share: float) -> "Budget":
        """A budget for ``share`` of the time left (a first run that must leave time for a second)."""
        left = self.left()
        return Budget(None if left is None else left * share)

    def exhausted(self) -> bool:
        check_interrupt()
        if self.seconds is not None and self.elapsed >= self.seconds:
            self.cut = True
        return self.cut

    def said(self, steps: int, seconds: float | None = None) -> str:
        """``"cut short by the time budget after 12 steps / 10.1 s"``, for a verdict's message."""
        spent = self.elapsed if seconds is None else seconds
        return f"cut short by the time budget after {steps} step{'s' if steps != 1 else ''} / {spent:.1f} s"
