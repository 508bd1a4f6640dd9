"""One trial of a sweep: a ``savegame.Run`` on ``SWEEPDIR/trials/trial-NNNN`` fed to ``train(config, run)``.

The trial's objective reaches Optuna through a :class:`TrialReporter` hook: each value of the
objective metric logged with ``run.log`` (or ``run.writer.add_scalar``) or saved with
``run.save(metrics=...)`` is reported at the run's step, and when Optuna's pruner says so the
run is asked to stop (it saves first, so its curves and last checkpoint stay). The live doctor
(on by default, ``doctor: false`` turns it off) stops a diverging trial the same way; that trial
is pruned with the doctor's reason.

A trial interrupted by a crash is taken up again by number (``worker.py``): the same Optuna
trial (its parameters and the pruner's intermediate values stay in the study), the same folder,
and ``Run`` resumes it from its last checkpoint, so nothing before that checkpoint is redone.

The trial's result is the metric's best reported value (``objective.use: last``: its last one).
It is marked:

* ``COMPLETE`` with that value;
* ``PRUNED`` when the pruner or the doctor stopped it (the reason in ``trial.json``);
* ``FAIL`` when ``train`` raised (its traceback in ``error.txt``), or when the metric was never
  reported or is NaN (the message names the metric and the tags the run did log).
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

from ..atomic import replace_file
from ..errors import RunLockedError
from ..hooks import Hook
from .spec import SweepSpec
from .study import SweepError, optuna_module

__all__ = ["TrialReporter", "run_trial", "trial_dir", "OWNER", "HEARTBEAT", "REASON", "DIR", "TRIAL_FILE", "ERROR_FILE"]

OWNER = "savegame:owner"          # {"host", "pid", "since"}: the process running the trial
HEARTBEAT = "savegame:heartbeat"  # time.time() of its last sign of life
REASON = "savegame:reason"        # why it was pruned or failed
DIR = "savegame:dir"
TRIAL_FILE = "trial.json"
ERROR_FILE = "error.txt"
HEARTBEAT_SECONDS = 10.0


def trial_dir(sweep_dir: Path, number: int) -> Path:
    """The run folder of trial ``number``."""
    return Path(sweep_dir) / "trials" / f"trial-{number:04d}"


class TrialReporter(Hook):
    """Reports the objective metric to an Optuna trial and stops the run when it is pruned."""

    writes_hparams = True  # at the end, with the trial's state (on_finish)

    def __init__(self, trial: Any, spec: SweepSpec, config: Mapping[str, Any]) -> None:
        self.trial = trial
        self.spec = spec
        self.config = dict(config)
        self.metric = spec.metric
        self.ended: tuple[str, float | None, str | None] | None = None  # (state, value, reason) at the end
        self.pruned: str | None = None
        self.tags: set[str] = set()
        self.nonfinite = 0  # NaN/inf values of the metric, not reported to Optuna

    def on_log(self, run: Any, values: Mapping[str, Any], step: int, *, every_step: bool, reduce: Any) -> None:
        self.tags.update(values)
        if self.metric in values:
            self._report(run, values[self.metric], step)

    def on_save(self, run: Any, checkpoint: Any) -> None:
        metrics = getattr(checkpoint, "metrics", None) or {}
        self.tags.update(metrics)
        if self.metric in metrics:
            self._report(run, metrics[self.metric], checkpoint.step)

    def on_finish(self, run: Any, status: str) -> None:
        """The trial's state, and its hparams session in its own run (TensorBoard's HPARAMS tab):
        its config, ``sweep.trial`` and ``sweep.state`` (COMPLETE, PRUNED, FAIL) beside the curves,
        and the trial's result as the metric ``sweep/value``."""
        from ..runinfo import hparams_from_config

        self.ended = self.outcome(run, status)
        state, value, _ = self.ended
        hparams = {**hparams_from_config(self.config), "sweep.trial": self.trial.number, "sweep.state": state}
        run.writer.add_hparams(hparams, {"sweep/value": value} if value is not None else {})

    def outcome(self, run: Any, status: str) -> tuple[str, float | None, str | None]:
        """(state, value, reason) of the run that just ended with ``status``."""
        if status == "failed":
            return "FAIL", None, "train raised"
        if self.pruned is not None:
            return "PRUNED", None, self.pruned
        stopped = run.should_stop
        if stopped is not None and stopped.startswith("the doctor stopped"):
            return "PRUNED", None, stopped
        values = self.trial.study._storage.get_trial(self.trial._trial_id).intermediate_values
        value, problem = _result(values, self.spec, self)
        return ("FAIL", None, problem) if problem is not None else ("COMPLETE", value, None)

    def _report(self, run: Any, value: Any, step: int) -> None:
        value = float(value)
        if not math.isfinite(value):
            self.nonfinite += 1
            return  # a NaN objective is no evidence for the pruner; the result check names it
        with warnings.catch_warnings():
            # a resumed trial logs again the steps since its checkpoint; Optuna keeps the first value
            warnings.simplefilter("ignore")
            self.trial.report(value, step)
        if self.pruned is None and self.trial.should_prune():
            self.pruned = f"pruned by the {type(self.trial.study.pruner).__name__} at step {step:,} " \
                          f"({self.metric} = {value:.6g})"
            run.request_stop(self.pruned, save=True)


class _Heartbeat:
    """Writes the trial's sign of life into the study every few seconds, from a thread."""

    def __init__(self, storage: Any, trial_id: int, every: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(storage, trial_id, every), daemon=True,
                                        name="savegame-sweep-heartbeat")
        self._thread.start()

    def _beat(self, storage: Any, trial_id: int, every: float) -> None:
        while not self._stop.wait(every):
            try:
                storage.set_trial_system_attr(trial_id, HEARTBEAT, time.time())
            except Exception:  # a finished trial, a storage hiccup: the next beat tries again
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def run_trial(study: Any, spec: SweepSpec, train: Callable[..., Any], trial: Any, sweep_dir: Path, *,
              heartbeat: float = HEARTBEAT_SECONDS) -> str | None:
    """Run (or resume) one asked trial to its end and tell Optuna how it ended; the state's name,
    or None when another live process holds the trial's folder (it is running there)."""
    import savegame

    folder = trial_dir(sweep_dir, trial.number)
    params = {}
    for name, param in spec.space.items():
        try:
            params[name] = param.suggest(trial, name)
        except ValueError as error:  # Optuna's: a categorical's choices changed, log turned on or off
            # back in the queue, so that the next run with the spec put back takes it at once
            study._storage.set_trial_state_values(trial._trial_id, optuna_module().trial.TrialState.WAITING)
            raise SweepError(f"space.{name} changed in a way the study cannot take ({error}): trials already "
                             "sampled it the old way. Put it back, or start a new sweep folder (--dir)") from None
    config = spec.config(params)
    reporter = TrialReporter(trial, spec, config)
    # the live doctor prunes a trial that diverges or stops learning (no signals: the curves only)
    doctor = savegame.Doctor(every=0, stop_on_plateau=True) if spec.doctor else False
    try:
        run = savegame.Run(folder, config=config, hooks=[reporter], doctor=doctor)
    except RunLockedError:
        return None
    storage = study._storage  # the study's own storage object: Optuna's public BaseStorage API
    # the folder first: a worker that finds an owner looks for its lock there
    storage.set_trial_system_attr(trial._trial_id, DIR, str(folder))
    storage.set_trial_system_attr(trial._trial_id, OWNER, {"host": socket.gethostname(), "pid": os.getpid(),
                                                           "since": time.time()})  # "since": the first beat
    beat = _Heartbeat(storage, trial._trial_id, heartbeat)
    try:
        with run:
            train(config, run)
    except Exception as error:
        beat.stop()
        text = traceback.format_exc()
        replace_file(folder / ERROR_FILE, text)
        reason = f"train raised {type(error).__name__}: {error} (traceback in {folder / ERROR_FILE})"
        return _tell(study, trial, folder, "FAIL", None, reason, params)
    beat.stop()
    state, value, reason = reporter.ended if reporter.ended is not None else reporter.outcome(run, "finished")
    return _tell(study, trial, folder, state, value, reason, params)


def _result(values: Mapping[int, float], spec: SweepSpec, reporter: TrialReporter) -> tuple[float | None, str | None]:
    finite = {step: v for step, v in values.items() if math.isfinite(v)}
    if not finite:
        if values or reporter.nonfinite:
            return None, f"the objective {spec.metric} was NaN/inf at every report; the trial diverged"
        logged = ", ".join(sorted(reporter.tags)[:12]) or "nothing"
        return None, (f"the objective {spec.metric} was never reported: log it with run.log({spec.metric!r}, value) "
                      f"or save it with run.save(metrics={{{spec.metric!r}: value}}) at each validation "
                      f"(the run logged: {logged})")
    if spec.use == "last":
        return finite[max(finite)], None
    best = min if spec.direction == "minimize" else max
    return best(finite.values()), None


def _tell(study: Any, trial: Any, folder: Path, state: str, value: float | None, reason: str | None,
          params: Mapping[str, Any]) -> str:
    optuna = optuna_module()
    if reason is not None:
        study._storage.set_trial_system_attr(trial._trial_id, REASON, reason)
    record = {"number": trial.number, "state": state, "value": value, "params": dict(params), "reason": reason}
    # not fsynced: the study holds the trial's state durably, this copy is for a person reading the folder
    replace_file(folder / TRIAL_FILE, json.dumps(record, indent=2, default=str), durable=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna warns on every FAIL it is told
        # the grid sampler calls study.stop() once its grid is used up, which Optuna allows only inside
        # its own optimize loop; here the worker loop (n_trials) decides when to stop
        study._thread_local.in_optimize_loop = True
        try:
            study.tell(trial, value, state=getattr(optuna.trial.TrialState, state))
        finally:
            study._thread_local.in_optimize_loop = False
    return state
