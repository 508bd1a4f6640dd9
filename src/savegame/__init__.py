"""savegame: save slots, exact resume and the engineering side of a hand-written PyTorch loop.

>>> import savegame
>>> savegame.Keep(last=2, best=1, metric="loss/val")
KeepAny(KeepLast(n=2), KeepBest(k=1, metric='loss/val', mode='min'))

The names below load on first use (PEP 562), so ``savegame doctor`` and other readers of run
folders start without importing torch; ``from savegame import Run`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    ".checkpoint.policy": ["AllOf", "Always", "AnyOf", "EveryEpochs", "EverySeconds", "EverySteps", "Keep",
                           "KeepAll", "KeepAny", "KeepBest", "KeepEvery", "KeepLast", "Never", "OnImprovement",
                           "When"],
    ".checkpoint.store": ["CheckpointInfo"],
    ".errors": ["CheckpointCorruptError", "PartiallyRestoredError", "CheckpointNotFoundError", "FormatVersionError",
                "MetricNotFoundError", "NotSerializableError", "RunFolderGoneError", "RunLockedError",
                "SaveFailedError", "StateMismatchError", "WriterClosedError", "LogWriteError", "MissingDependencyError", "PreflightFailedError",
                "DistributedNotSupportedError", "ShardedStateError"],
    ".io": ["export_weights", "import_weights", "load", "save"],
    ".log.writer": ["SummaryWriter"],
    ".preflight": ["PreflightReport"],
    ".run": ["Run"],
    ".hooks": ["Hook"],
    ".folder": ["RunFolder"],
    ".doctor": ["Doctor", "DoctorWarning", "Diagnosis", "diagnose", "load_runs"],
    ".sweeps": ["sweep"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "Run", "Hook", "RunFolder", "sweep", "SummaryWriter", "preflight", "PreflightReport", "Doctor", "DoctorWarning", "Diagnosis", "diagnose",
    "load_runs",
    "save", "load", "import_weights", "export_weights", "CheckpointInfo",
    "EverySteps", "EveryEpochs", "EverySeconds", "OnImprovement", "When", "Always", "Never", "AnyOf", "AllOf",
    "Keep", "KeepLast", "KeepBest", "KeepEvery", "KeepAll", "KeepAny",
    "CheckpointCorruptError", "PartiallyRestoredError", "CheckpointNotFoundError", "FormatVersionError",
    "MetricNotFoundError", "NotSerializableError", "RunFolderGoneError", "RunLockedError", "SaveFailedError", "StateMismatchError",
    "WriterClosedError", "LogWriteError", "MissingDependencyError", "PreflightFailedError",
    "DistributedNotSupportedError", "ShardedStateError",
]


# Eager, and light (it imports torch only when called): the subpackage savegame.preflight would
# otherwise shadow the function of the same name once anything imports the subpackage.
from .preflight import preflight  # noqa: E402


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'savegame' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .checkpoint.policy import (AllOf, Always, AnyOf, EveryEpochs, EverySeconds, EverySteps, Keep, KeepAll,
                                    KeepAny, KeepBest, KeepEvery, KeepLast, Never, OnImprovement, When)
    from .checkpoint.store import CheckpointInfo
    from .doctor import Diagnosis, Doctor, DoctorWarning, diagnose, load_runs
    from .errors import (CheckpointCorruptError, CheckpointNotFoundError, DistributedNotSupportedError,
                         FormatVersionError, LogWriteError,
                         MetricNotFoundError, MissingDependencyError, NotSerializableError, PartiallyRestoredError,
                         PreflightFailedError, RunFolderGoneError, RunLockedError, SaveFailedError, ShardedStateError,
                         StateMismatchError, WriterClosedError)
    from .io import export_weights, import_weights, load, save
    from .log.writer import SummaryWriter
    from .preflight import PreflightReport
    from .folder import RunFolder
    from .hooks import Hook
    from .run import Run
