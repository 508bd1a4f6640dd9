"""Turn SIGTERM and the first Ctrl-C into "save at the end of this step, then exit".

Clusters send SIGTERM before they take a machine away, and people press Ctrl-C. Both set a flag
that the run checks between steps; the current step finishes, a checkpoint is written and the
process exits 0. A second Ctrl-C means "now": it raises ``KeyboardInterrupt`` at once.

Handlers can only be installed from the main thread; elsewhere (a notebook's worker thread, a
test runner's thread) preemption is simply not caught, which is said once in a warning.

>>> guard = PreemptionGuard()
>>> guard.requested
False
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

from .messages import warn


class PreemptionGuard:
    """Installs the handlers on :meth:`install`, puts the previous ones back on :meth:`uninstall`."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        if self._previous:
            return
        if threading.current_thread() is not threading.main_thread():
            warn(
                "savegame.Run was created outside the main thread, so SIGTERM/Ctrl-C cannot be "
                "turned into a clean save-and-exit; a kill loses the work since the last checkpoint",
            )
            return
        for number in self.SIGNALS:
            self._previous[number] = signal.signal(number, self._handle)

    def uninstall(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        name = signal.Signals(number).name
        if self.requested and number == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, without saving
        self.requested = True
        self.signal_name = name
        hint = " (press Ctrl-C again to abort without saving)" if number == signal.SIGINT else ""
        print(f"\nsavegame: {name} received, saving at the end of this step{hint}",
              file=sys.stderr, flush=True)
