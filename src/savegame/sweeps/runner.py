"""Run a sweep: check the spec, open its study, and run its workers, here or in N processes.

With ``workers=1`` the trials run in this process. With more, each worker is a process of its own
(``python -m savegame.sweeps.subworker``) on the same study, and this one shows the progress
until they are done; each worker gets ``cores // N`` torch threads (at least 1), so N workers on
N cores do not fight over them. The workers start first and import torch, Optuna and the
training module while this process opens the study; they begin once it is open (or exit, if it
cannot be). A worker that dies (SIGKILL, out of memory) leaves its trial to
the others, which take it up from its last checkpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .spec import SweepSpec
from .study import SweepError, open_study, optuna_module
from .subworker import GO, STORAGE_ENV, TRAIN_ENV
from .worker import counted, find_train, resolve_train, work

__all__ = ["run_sweep", "summary", "STORAGE_ENV"]


def run_sweep(spec: SweepSpec, sweep_dir: Path, *, storage: str | None = None, workers: int = 1,
              allow_changes: bool = False, progress: Callable[[int, str], None] | None = None) -> Any:
    """Run ``spec``'s trials in ``sweep_dir`` to ``n_trials`` ended; the Optuna study. ``progress``
    is called with the trials ended and the :func:`summary` line, each time they change."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SweepError(f"workers: expected a whole number >= 1, got {workers!r}")
    if workers == 1 or callable(spec.train):
        resolve_train(spec.train)  # an unimportable train fails here, before any trial starts
    else:
        find_train(spec.train)  # the workers import it: here only find it, without importing torch for nothing
    if workers > 1 and callable(spec.train) and spec.train.__module__ == "__main__":
        raise SweepError("workers > 1 runs each worker in a process of its own, which must import train: define it "
                         "in a module (not the __main__ script) or pass it as 'module:function'")
    say = progress or (lambda ended, line: None)
    if workers == 1:
        study = open_study(sweep_dir, spec, storage=storage, allow_changes=allow_changes)
        work(study, spec, sweep_dir, on_trial=lambda number, state: say(*summary(study, spec)))
        return study
    children = _start_workers(spec, sweep_dir, storage, workers)
    try:
        study = open_study(sweep_dir, spec, storage=storage, allow_changes=allow_changes)
    except BaseException:
        _tell_workers(children, "stop")
        raise
    _tell_workers(children, GO)
    last = None
    try:
        # every child polled (not any()'s first alive one): a dead worker is reaped at once, or
        # its zombie's pid looks alive and its trial is never taken back (worker._orphaned)
        while [child.poll() for child in children].count(None):
            now = summary(study, spec)
            if now != last:
                say(*now)
                last = now
            time.sleep(0.2)
    except KeyboardInterrupt:
        for child in children:
            child.terminate()
        raise
    failed = [child.returncode for child in children if child.returncode != 0]
    say(*summary(study, spec))
    if len(failed) == len(children):
        raise SweepError(f"every worker exited with an error (exit codes {failed}); see their output above")
    return study


def _start_workers(spec: SweepSpec, sweep_dir: Path, storage: str | None, workers: int) -> list[subprocess.Popen]:
    """The worker processes, started now: they import what they need, then wait for ``go``."""
    env = dict(os.environ)
    if storage:
        env[STORAGE_ENV] = storage
    threads = max(1, (os.cpu_count() or 1) // workers)
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env["SAVEGAME_SWEEP_THREADS"] = str(threads)
    env[TRAIN_ENV] = spec.fingerprint()["train"]  # "module:function", as the workers read it from the record
    return [subprocess.Popen([sys.executable, "-m", "savegame.sweeps.subworker", str(sweep_dir)], stdin=subprocess.PIPE,
                             text=True, env={**env, "SAVEGAME_SWEEP_WORKER": str(i)}, cwd=os.getcwd())
            for i in range(workers)]


def _tell_workers(children: list[subprocess.Popen], word: str) -> None:
    """``go`` (the study is open) or anything else (exit), to every worker still waiting."""
    for child in children:
        try:
            child.stdin.write(word + "\n")
            child.stdin.close()
        except OSError:  # it died already (its error is on the terminal); the others go on
            pass
    if word != GO:
        for child in children:
            child.wait()


def summary(study: Any, spec: SweepSpec) -> tuple[int, str]:
    """The trials ended, and ``7/16 trials ended (5 complete, 2 pruned) · 2 running · best 0.9312 (trial 4)``."""
    state = optuna_module().trial.TrialState
    trials = counted(study.get_trials(deepcopy=False))
    ended = [t for t in trials if t.state.is_finished()]
    kinds = {name: sum(t.state == getattr(state, name) for t in ended) for name in ("COMPLETE", "PRUNED", "FAIL")}
    running = sum(t.state == state.RUNNING for t in trials)
    parts = ", ".join(f"{n} {name.lower()}" for name, n in kinds.items() if n)
    line = f"{len(ended)}/{spec.n_trials} trials ended" + (f" ({parts})" if parts else "") + f" · {running} running"
    complete = [t for t in ended if t.state == state.COMPLETE and t.value is not None]
    if complete:
        best = (min if spec.direction == "minimize" else max)(complete, key=lambda t: t.value)
        line += f" · best {best.value:.6g} (trial {best.number})"
    return len(ended), line

