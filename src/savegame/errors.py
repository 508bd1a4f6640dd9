"""Errors savegame raises on bad input.

Each one subclasses the built-in that a caller would already catch (a missing checkpoint is a
``FileNotFoundError``, a value of the wrong type a ``TypeError``), and every message says what
was found, what was expected and how to fix it.

>>> from savegame.errors import CheckpointNotFoundError
>>> issubclass(CheckpointNotFoundError, FileNotFoundError)
True
"""

from __future__ import annotations

from pathlib import Path


class SavegameError(Exception):
    """Base of every error savegame raises on purpose."""


class CheckpointNotFoundError(SavegameError, FileNotFoundError):
    """No committed checkpoint where one was asked for (a path, a step, ``--best``)."""


class CheckpointCorruptError(SavegameError, ValueError):
    """A checkpoint's files are truncated, altered or missing: their hash or size does not match."""


class PartiallyRestoredError(CheckpointCorruptError):
    """The checkpoint turned out damaged (or unreadable) after part of it was read straight into
    the objects: those named in ``loaded`` are half-loaded and must be restored again from
    another checkpoint, or rebuilt. ``tensors`` lists the key paths whose memory changed."""

    def __init__(self, message: str, *, path: Path, loaded: tuple[str, ...], tensors: tuple[str, ...]) -> None:
        super().__init__(message)
        self.path, self.loaded, self.tensors = path, loaded, tensors


class FormatVersionError(SavegameError, ValueError):
    """A checkpoint written by a newer savegame, or not a savegame checkpoint at all."""


class RunInfoDamagedError(FormatVersionError):
    """A run folder's ``run.json`` is not what savegame writes (not JSON, cut short, fields of the
    wrong kind). A ``Run`` sets it aside and resumes from the checkpoints; readers report it."""


class NotSerializableError(SavegameError, TypeError):
    """A value in the saved state has a type the pickle-free format cannot hold; names its key path."""


class StateMismatchError(SavegameError, KeyError):
    """Saved state does not fit the object it is loaded into (missing/unexpected keys, shapes)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class MetricNotFoundError(SavegameError, KeyError):
    """A policy needs a metric that the save call did not pass; the message lists those it got."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class RunLockedError(SavegameError, RuntimeError):
    """Another live process writes to this run folder."""


class RunFolderGoneError(SavegameError, FileNotFoundError):
    """The run folder was removed or replaced while a Run wrote to it. Nothing recreates it: its
    lock went with it, so another run may own that path now."""


class SaveFailedError(SavegameError, OSError):
    """Writing a checkpoint failed (disk full, read-only); earlier checkpoints are untouched."""


class WriterClosedError(SavegameError, RuntimeError):
    """A finished ``Run``'s writer was called; unlike a writer of your own, it does not reopen."""


class LogWriteError(SavegameError, RuntimeError):
    """The log thread could not build or write something logged earlier (named in the message)."""


class DistributedNotSupportedError(SavegameError, RuntimeError):
    """A multi-process (torchrun) job lacks what savegame needs there (``init_process_group``
    before the ``Run``), or used a feature that cannot work on one rank of it (``run.preflight``)."""


class ShardedStateError(SavegameError, RuntimeError):
    """A checkpoint's sharded (FSDP / DTensor) state was read where only a Run can load it; the
    message says how to load it."""


class MissingDependencyError(SavegameError, ImportError):
    """An optional package is needed for this call; the message says what to ``pip install``."""


class PreflightFailedError(SavegameError, RuntimeError):
    """``run.preflight`` found a failing check; the message is the report, ``.report`` the object."""

    def __init__(self, report) -> None:
        super().__init__(f"{report}\nFix the failing checks, or pass continue_on_failure=True to train anyway.")
        self.report = report


class PreflightInterrupted(KeyboardInterrupt):  # not a SavegameError: Ctrl-C, by its nature
    """Ctrl-C during preflight: it stopped between two steps of a check. Preflight works on copies
    and restores every random generator, so the model, the optimizer and the random state are as
    they were before the call. A ``KeyboardInterrupt``: ``except KeyboardInterrupt`` catches it."""

    def __init__(self, message: str = "Ctrl-C during preflight", check: str | None = None) -> None:
        super().__init__(message)
        self.check = check
