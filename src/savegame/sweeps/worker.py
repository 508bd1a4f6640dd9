"""A sweep worker: take trials from the study until ``n_trials`` have ended, resuming any whose
process died.

Many workers (``--workers N`` on one machine, or many machines on one ``--storage``) run this
same loop on one study:

1. **Take back the orphans.** A trial left ``RUNNING`` by a dead process goes back to
   ``WAITING``, keeping its number, parameters and the pruner's intermediate values. On this
   machine a trial is orphaned once its folder's lock is free (the kernel drops the lock of a
   process that dies, even by SIGKILL) and its process is gone; on another machine, once its
   heartbeat (written every 10 s into the study) is older than ``grace`` seconds.
2. **Take a trial.** ``study.ask()`` pops a waiting trial first (Optuna's own compare-and-set, so
   two workers never pop the same one), else starts a new one while fewer than ``n_trials``
   exist. The trial runs in ``trials/trial-NNNN``; a popped orphan resumes there from its last
   checkpoint (``trial.py``).
3. **Wait or stop.** With every trial taken, a worker waits while others still run (one may die
   and need taking back), and stops when all have ended.

Two workers that ask at once for the last trial both get a new one; the one numbered
``n_trials`` or more is never run: it is marked ``FAIL`` with the system attribute
``savegame:surplus`` and left out of every count and table.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ..checkpoint.layout import pid_alive
from ..errors import RunLockedError
from ..lock import RunLock
from .spec import SweepSpec
from .study import SweepError, optuna_module
from .trial import DIR, HEARTBEAT, OWNER, run_trial

__all__ = ["work", "resolve_train", "find_train", "requeue_orphans", "counted", "SURPLUS", "GRACE_SECONDS"]

SURPLUS = "savegame:surplus"
GRACE_SECONDS = 60.0


def resolve_train(train: str | Callable[..., Any]) -> Callable[..., Any]:
    """``train`` as a function: ``"module:function"`` is imported with the current directory on the
    import path (as ``python -m`` does)."""
    if callable(train):
        return train
    module_name, _, attribute = train.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise SweepError(f"train: cannot import {module_name!r} ({error}); run the sweep from the folder that holds "
                         f"it, or install it (pip install -e .)") from None
    except Exception as error:
        raise SweepError(f"train: importing {module_name!r} raised {type(error).__name__}: {error}") from error
    function = module
    for part in attribute.split("."):
        function = getattr(function, part, None)
        if function is None:
            raise SweepError(f"train: {module_name!r} has no {attribute!r}; the spec's train is "
                             f"'module:function', called as function(config, run)")
    if not callable(function):
        raise SweepError(f"train: {train!r} is a {type(function).__name__}, not a function")
    return function


def find_train(train: str) -> None:
    """Check that the module of ``"module:function"`` can be found (with the current directory on
    the import path), without importing it: the error of :func:`resolve_train`, before any trial."""
    module_name = train.partition(":")[0]
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as error:
        found, reason = None, str(error)
    else:
        reason = "no such module"
    if found is None:
        raise SweepError(f"train: cannot import {module_name!r} ({reason}); run the sweep from the folder that holds "
                         f"it, or install it (pip install -e .)")


def counted(trials: list[Any]) -> list[Any]:
    """The trials that count toward ``n_trials`` (all but the surplus ones)."""
    return [t for t in trials if not t.system_attrs.get(SURPLUS)]


def requeue_orphans(study: Any, *, grace: float = GRACE_SECONDS) -> list[int]:
    """Put every orphaned RUNNING trial back to WAITING; the numbers of those taken back."""
    optuna = optuna_module()
    storage = study._storage
    taken = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if not _orphaned(trial, grace):
            continue
        fresh = storage.get_trial(trial._trial_id)  # read again: another worker may have taken it meanwhile
        if fresh.state != optuna.trial.TrialState.RUNNING or not _orphaned(fresh, grace):
            continue
        try:
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.WAITING)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it ended meanwhile (its process on another machine was slow, not dead)
        taken.append(trial.number)
    return taken


def _orphaned(trial: Any, grace: float) -> bool:
    owner = trial.system_attrs.get(OWNER)
    now = time.time()
    if not isinstance(owner, dict):  # asked but its folder not yet opened: give it the grace period
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        return now - started > grace
    if owner.get("host") == socket.gethostname():
        # both: the lock is free from the moment the run ends, before its process tells the study
        # how it ended; taken back then, the trial was run again (or its process crashed on "Cannot
        # tell a WAITING trial")
        pid = owner.get("pid")
        return _folder_free(Path(trial.system_attrs.get(DIR, ""))) and not (isinstance(pid, int) and pid_alive(pid))
    beat = trial.system_attrs.get(HEARTBEAT, owner.get("since", now))
    return now - float(beat) > grace


def _folder_free(folder: Path) -> bool:
    """Whether no live process holds the trial folder's lock (it is free the moment its holder dies)."""
    if not folder.is_dir():
        return True
    lock = RunLock(folder / "LOCK")
    try:
        lock.acquire()
    except RunLockedError:
        return False
    lock.release()
    return True


def work(study: Any, spec: SweepSpec, sweep_dir: Path, *, poll: float = 0.2, grace: float = GRACE_SECONDS,
         on_trial: Callable[[int, str | None], None] | None = None) -> int:
    """Run trials of ``study`` until ``spec.n_trials`` have ended; the number this worker ran."""
    optuna = optuna_module()
    state = optuna.trial.TrialState
    train = resolve_train(spec.train)
    ran = 0
    while True:
        requeue_orphans(study, grace=grace)
        trials = counted(study.get_trials(deepcopy=False))
        waiting = any(t.state == state.WAITING for t in trials)
        if waiting or len(trials) < spec.n_trials:
            trial = study.ask()
            if trial.number >= spec.n_trials and OWNER not in study._storage.get_trial(trial._trial_id).system_attrs:
                study._storage.set_trial_system_attr(trial._trial_id, SURPLUS, True)
                study.tell(trial, state=state.FAIL)
                continue
            ended = run_trial(study, spec, train, trial, sweep_dir)
            ran += ended is not None
            if on_trial is not None:
                on_trial(trial.number, ended)
            continue
        if any(t.state == state.RUNNING for t in trials):
            time.sleep(poll)
            continue
        return ran
