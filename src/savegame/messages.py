"""The one-line notices a run prints (it resumed, it had finished, how to resume), via ``logging``;
and :func:`warn`, which points a warning at the user's line rather than at savegame's.

They go to the ``"savegame"`` logger at INFO. When the program has configured no logging at all,
the first notice adds a handler that prints ``savegame: <message>`` to stderr, so a user sees
them without setting anything up; with logging configured (``logging.basicConfig(...)``, a
framework, pytest) they go wherever the program sends its logs. To silence them:

    logging.getLogger("savegame").setLevel(logging.WARNING)

>>> import shlex
>>> shlex.split(rerun_command(["/usr/bin/python3", "train.py", "--lr", "0.1 0.2"], script="train.py"))[1:]
['train.py', '--lr', '0.1 0.2']
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
import warnings
from typing import Sequence

logger = logging.getLogger("savegame")


def notice(message: str) -> None:
    """Log ``message`` at INFO on the ``savegame`` logger (printed to stderr by default)."""
    if not logger.handlers and not logging.getLogger().handlers and logger.level == logging.NOTSET:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("savegame: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # the root logger has no handler: nothing else would print it
    logger.info(message)


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)``, shown at the first caller outside savegame: the line
    of the user's script that led to it (``run.track(...)``, ``with Run(...)``), however deep in
    savegame it was found. A hand-counted ``stacklevel`` breaks whenever a call path changes
    (Python 3.12's ``skip_file_prefixes`` does this, but we support 3.10).

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn("the learning rate is 0")
    >>> caught[0].filename.startswith(_PACKAGE)  # here: the doctest's own line
    False
    """
    frame, level = sys._getframe(1), 2  # level 1 would be this function's own line
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at each message (a progress bar that redirects it, as
    rich's does, then shows the line above the bar instead of through it)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def rerun_command(orig_argv: Sequence[str] | None = None, script: str | None = None) -> str:
    """The command line that started this process, ready to paste into a shell.

    ``sys.orig_argv`` has the interpreter and its options (``python -m pkg``, ``python train.py``);
    a console script (``savegame demo``) is shown by its name when that name finds the same
    program on ``PATH``.
    """
    argv = list(sys.orig_argv if orig_argv is None else orig_argv)
    script = sys.argv[0] if script is None else script
    if not argv:
        return "your training command"
    console_script = (len(argv) >= 2 and script and not script.endswith(".py") and os.path.isfile(script)
                      and os.path.abspath(argv[1]) == os.path.abspath(script))
    if console_script:
        name = os.path.basename(script)
        found = shutil.which(name)
        head = name if found and os.path.samefile(found, script) else script
        return shlex.join([head, *argv[2:]])
    return shlex.join(argv)
