"""savegame: save slots, exact resume and the engineering side of a hand-written PyTorch loop.

>>> import savegame
>>> savegame.Keep(last=2, best=1, metric="loss/val")
KeepAny(KeepLast(n=2), KeepBest(k=1, metric='loss/val', mode='min'))
"""

__version__ = "0.1.0"

from .checkpoint.policy import (
    AllOf,
    Always,
    AnyOf,
    EveryEpochs,
    EverySeconds,
    EverySteps,
    Keep,
    KeepAll,
    KeepAny,
    KeepBest,
    KeepEvery,
    KeepLast,
    Never,
    OnImprovement,
    When,
)
from .checkpoint.store import CheckpointInfo
from .errors import (
    CheckpointCorruptError,
    CheckpointNotFoundError,
    FormatVersionError,
    MetricNotFoundError,
    NotSerializableError,
    RunLockedError,
    SaveFailedError,
    StateMismatchError,
    WriterClosedError,
    LogWriteError,
    MissingDependencyError,
    PreflightFailedError,
)
from .io import export_weights, import_weights, load, save
from .log import SummaryWriter
from .preflight import PreflightReport, preflight
from .run import Run

__all__ = [
    "Run", "SummaryWriter", "preflight", "PreflightReport", "save", "load", "import_weights", "export_weights", "CheckpointInfo",
    "EverySteps", "EveryEpochs", "EverySeconds", "OnImprovement", "When", "Always", "Never", "AnyOf", "AllOf",
    "Keep", "KeepLast", "KeepBest", "KeepEvery", "KeepAll", "KeepAny",
    "CheckpointCorruptError", "CheckpointNotFoundError", "FormatVersionError", "MetricNotFoundError", "NotSerializableError",
    "RunLockedError", "SaveFailedError", "StateMismatchError",
    "WriterClosedError", "LogWriteError", "MissingDependencyError", "PreflightFailedError",
]
