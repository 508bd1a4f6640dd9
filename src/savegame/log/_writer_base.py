"""What ``SummaryWriter`` (``writer.py``) and its media and structured kinds (``writer_kinds.py``)
share: the writer's states, the ``_when_open`` guard of their ``add_*`` methods and torch's summary
builders. Neither of those modules is imported here.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

_OPEN, _CLOSED, _SILENT = "open", "closed", "silent"


def _when_open(method: Callable) -> Callable:
    """Make ``method`` reopen the writer after ``close()`` (as torch's), raise for a finished
    ``Run``'s writer, and return at once on a silent (non-zero) rank, before it copies or checks
    anything."""
    name = method.__name__

    @functools.wraps(method)
    def checked(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self._state is not _OPEN and not self._reopen(name):
            return None
        return method(self, *args, **kwargs)

    return checked


def _summary():
    # tensorboard's protos come in through torch's summary builders: the same bytes torch writes.
    from torch.utils.tensorboard import summary
    return summary
