"""``Run``: save slots and exact resume for a hand-written training loop.

The loop stays the user's; a few lines hand its objects to the run, which counts steps and epochs,
saves when its policy says so, keeps the checkpoints its keep policy names, and on a rerun of the
same command continues from the newest valid checkpoint exactly where the last process stopped.

>>> import tempfile, torch, savegame
>>> from torch.utils.data import DataLoader
>>> net = torch.nn.Linear(2, 1)
>>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
>>> data = DataLoader(torch.randn(8, 2), batch_size=4, shuffle=True)
>>> with savegame.Run(tempfile.mkdtemp(), config={"lr": 0.1}) as run:
...     run.track(model=net, optimizer=opt)
...     for epoch in run.epochs(2):
...         for x in run.iterate(data):
...             opt.zero_grad(); net(x).pow(2).mean().backward(); opt.step()
...         info = run.save(metrics={"loss": 0.5})
>>> run.step, len(run.checkpoints)
(4, 2)
"""

from __future__ import annotations

import os
import socket
import sys
import time
import warnings
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

from .checkpoint.loader import LoaderTracker
from .checkpoint.policy import Always, Keep, KeepPolicy, SaveContext, SavePolicy, plan_deletions
from .checkpoint.rng import capture_rng, restore_rng
from .checkpoint.store import (
    CheckpointInfo,
    checkpoint_dirname,
    delete_checkpoint,
    list_checkpoints,
    metrics_from_json,
    plain_metrics,
    quarantine,
    read_checkpoint,
    remove_stale_temps,
    write_checkpoint,
)
from .errors import (CheckpointCorruptError, CheckpointNotFoundError, FormatVersionError, PreflightFailedError,
                     StateMismatchError)
from .io import load_into, object_kind
from .lock import RunLock
from .log.runlog import RunLog
from .log.writer import SummaryWriter
from .messages import notice, rerun_command
from .preemption import PreemptionGuard
from .preflight.budget import PreflightInterrupted
from .ranking import best_checkpoint, best_record
from .runinfo import (config_as_json, config_changes, hparams_from_config, new_run_info, read_run_info,
                      write_run_info)

if TYPE_CHECKING:
    from .doctor import Diagnosis, Doctor

_NO_METRICS: Mapping[str, float] = MappingProxyType({})
MAX_SAVED_STEPS = 10_000  # run.json lists at most this many saved steps (the newest)
RESERVED = "_savegame"  # the run's own state inside a checkpoint, beside the tracked objects


class Run:
    """One training run in one folder: its checkpoints, its ``run.json``, its lock.

    Args:
        dir: the run folder (created if missing). Rerunning with the same folder resumes.
        config: the run's hyperparameters (JSON-like); stored in ``run.json`` and every checkpoint.
        save: when ``run.save()`` really saves (default: every call).
            Compose ``EverySteps``, ``EveryEpochs``, ``EverySeconds``, ``OnImprovement``, ``When``.
        keep: which checkpoints stay on disk (default ``Keep(last=3)``).
        resume: ``"auto"`` (newest valid checkpoint, if any), ``"never"`` (the folder must have
            no checkpoints), a step number, or the path of a checkpoint folder.
        handle_signals: turn SIGTERM / the first Ctrl-C into save-and-exit (default True).
        doctor: judge the learning curves at each validation (``True`` or a
            :class:`savegame.Doctor`): warns about new findings, logs them, samples training
            signals, and stops the run (saving first) when it diverges. See ``savegame.doctor``.
    """

    def __init__(self, dir: str | Path, *, config: Mapping[str, Any] | None = None,
                 save: SavePolicy | None = None, keep: KeepPolicy | None = None,
                 resume: str | int | Path = "auto", handle_signals: bool = True,
                 doctor: "bool | Doctor" = False) -> None:
        _check_resume_argument(resume)
        self.dir = Path(dir)
        self.config = dict(config or {})
        self.save_policy = save if save is not None else Always()
        self.keep_policy = keep if keep is not None else Keep(last=3)
        self.extras: dict[str, Any] = {}  # the user's own resumable values, saved with each checkpoint
        self.step = 0
        self.epoch = 0
        self.resumed_from: CheckpointInfo | None = None
        self._objects: dict[str, Any] = {}
        self._trackers: dict[str, LoaderTracker] = {}
        self._epoch_slots: dict[int, str] = {}
        self._last_save_step: int | None = None
        self._last_save_epochs_done: int | None = None
        self._last_save_time: float | None = None
        self._finished = False
        self._stop_reason: str | None = None  # set by the doctor: save, end the loops, mark "stopped"
        self._stop_saves = False  # whether the stop saves the current state (not a diverged one)
        self._signals = None
        self._doctor_config = _doctor_config(doctor)
        self._doctor = None
        self._current: LoaderTracker | None = None  # the loader iterate() is in (for run.batch)
        self._superseded: list[CheckpointInfo] = []  # an explicit resume's newer checkpoints
        self._restored: set[str] = set()  # tracked objects whose state came from the checkpoint
        self._begun = False
        self._config_changes: dict[str, list[Any]] = {}  # what changed since the last process
        self._saved_log: dict[str, Any] = {}  # the checkpoint's record of the logs, cut back to at _begin
        self._where = ""  # where the checkpoint stands in its epoch, for the resume line

        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = RunLock(self.dir / "LOCK")
        self._lock.acquire()
        try:
            self._checkpoint_root = self.dir / "checkpoints"
            self._checkpoint_root.mkdir(exist_ok=True)
            # We hold the lock, so every temp folder is stale, even one whose pid is ours again
            # (containers restart with the same pid): clean them all, put back interrupted overwrites.
            remove_stale_temps(self._checkpoint_root, include_live=True)
            self.checkpoints: list[CheckpointInfo] = list_checkpoints(self._checkpoint_root)
            self._info = self._open_run_info()
            self._resume_state = self._load_resume_state(resume)
            self._start_epoch = 0
            self._pending_rng: dict[str, Any] | None = None  # restored when the loop starts
            self._resume_rng: dict[str, Any] | None = None  # restored again after a mid-epoch skip
            self._saved_loaders: dict[str, Any] = {}
            if self._resume_state is not None:
                self._apply_run_state()
            write_run_info(self.dir, self._info)
        except BaseException:
            self._lock.release()
            raise
        self._guard = PreemptionGuard()
        if handle_signals:
            self._guard.install()
        if self.resumed_from is None:
            self._begin()  # a new run has nothing to check against: start at once

    # -- the loop's side ---------------------------------------------------------------------
    def track(self, **objects: Any) -> None:
        """Save these objects with every checkpoint; when resuming, load their state now.

        Anything with ``state_dict()`` and ``load_state_dict()``: model, optimizer, LR scheduler,
        ``GradScaler``, an EMA ... The keyword is the object's name inside the checkpoint.
        """
        for name, obj in objects.items():
            if name.startswith("_") or name == "extras":
                raise ValueError(f"run.track(): the name {name!r} is reserved; pick another keyword")
            if not (callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))):
                raise TypeError(
                    f"run.track({name}=...): a {type(obj).__name__} has no state_dict()/load_state_dict(); "
                    "track models, optimizers, schedulers, scalers, or store plain values in run.extras"
                )
            if self.resumed_from is not None:
                self._restore(name, obj)
            self._objects[name] = obj
        if self._doctor is not None and self._signals is None:
            self._signals = self._doctor_signals()

    def preflight(self, model: Any, loss_fn: Any, data: Any, *, continue_on_failure: bool = False,
                  **options: Any) -> Any:
        """Check the setup before training starts (``savegame.preflight``), once per run.

        Skipped on resume (returns None). The report goes to ``preflight.json`` in the run folder
        and to TensorBoard (a table in TEXT, the first batch in IMAGES when it is images). A failed
        check raises :class:`~savegame.errors.PreflightFailedError` holding the report, unless
        ``continue_on_failure``. ``options`` go to ``savegame.preflight`` (``quick=True`` ...).
        """
        if self.resumed_from is not None:
            return self._earlier_preflight()
        from .preflight import preflight
        from .runinfo import write_json_atomic

        self._begin()
        report = preflight(model, loss_fn, data, **options)
        write_json_atomic(self.dir / "preflight.json", report.to_dict())
        self.writer.add_text("preflight", report.to_markdown(), self.step)
        if report.images is not None:
            self.writer.add_images("preflight/first_batch", report.images, self.step)
        if not report.passed and not continue_on_failure:
            raise PreflightFailedError(report)
        return report

    @property
    def writer(self) -> SummaryWriter:
        """A :class:`savegame.SummaryWriter` on the run folder (the TensorBoard run), made on first
        use. Its files are cut back to the checkpoint a run resumes from, so curves never zig-zag."""
        self._begin()
        return self._logs.writer

    @property
    def batch(self) -> int | None:
        """The 0-based index, inside its epoch, of the batch ``iterate()`` yielded last (like
        ``batch_idx`` in ``for batch_idx, (x, y) in enumerate(loader)``), also right after a resume
        inside an epoch; None before the first batch."""
        tracker = self._current
        return tracker.batches - 1 if tracker is not None and tracker.batches else None

    def log(self, values: Mapping[str, Any] | str, value: Any = None, *, step: int | None = None,
            reduce: str | tuple[str, ...] | None = None, every_step: bool = True) -> None:
        """Log scalars at the current step: ``run.log("loss/train", loss)`` or ``run.log({...})``.

        Values may be floats or tensors (a CUDA tensor is read without a device sync).
        ``reduce="mean"`` (or ``"min"``, ``"max"``, ``"sum"``, or a tuple) also logs the epoch's
        statistic as ``<tag>/epoch_mean`` at the epoch's last step; ``every_step=False`` logs only
        that. The running statistics are saved with checkpoints, so a resume keeps them exact.
        """
        if isinstance(values, str):
            values = {values: value}
        elif value is not None:
            raise TypeError("run.log(): pass a tag and a value, or one dict of {tag: value}")
        step = self.step if step is None else step
        self._begin()
        hosts = self._logs.log(values, step=step, reduce=reduce, every_step=every_step)
        if self._doctor is not None and hosts:
            self._doctor.observe(hosts, step, every_step=every_step, reduce=reduce)

    @property
    def should_stop(self) -> str | None:
        """Why the run was asked to stop early (by the doctor), else None. ``epochs()`` and
        ``iterate()`` end by themselves; a loop of your own can test this."""
        return self._stop_reason

    @property
    def doctor(self) -> "Diagnosis | None":
        """The live doctor's latest diagnosis (None without ``doctor=`` or before a validation)."""
        return self._doctor.last if self._doctor is not None else None

    def epochs(self, n: int) -> Iterator[int]:
        """Yield the epoch numbers still to do, from where the last process stopped, up to ``n``."""
        self._start_loop()
        if self._logs.stats_pending:  # the last process saved after its epoch, died before logging it
            self._logs.end_of_epoch(self.step)
        if self.resumed_from is not None and self._start_epoch >= n:
            notice(f"{self.dir} has already done its {n} epochs (step {self.step}): nothing to train. "
                   "To train it again, use a new folder or delete this one; for more epochs, raise n.")
        for epoch in range(self._start_epoch, n):
            self.epoch = epoch
            self._epoch_slots = {}
            self._restore_pending_rng()
            yield epoch
            self._logs.end_of_epoch(self.step)
            if self._doctor is not None:
                self._doctor.end_of_epoch(self.step)
            self._check_preemption()
            if self._stop_reason is not None:
                self._stop_now()
                return

    def iterate(self, loader: Iterable, *, name: str | None = None) -> Iterator[Any]:
        """Yield the batches of ``loader``, counting ``run.step``; resumes inside an epoch.

        ``name`` identifies the loader inside checkpoints (default: its order in the epoch).

        Leaving the loop early with ``break`` ends the epoch there: the epoch counts as done
        (``run.save()`` after the loop saves as at an epoch's end, ``EveryEpochs`` included), and
        a resume starts the next epoch rather than the rest of this one.
        """
        self._start_loop()
        self._restore_pending_rng()
        slot = self._epoch_slots.get(id(loader))
        if slot is None:
            slot = name or f"loader{len(self._epoch_slots)}"
            self._epoch_slots[id(loader)] = slot
        tracker = self._trackers.get(slot)
        if tracker is None or tracker.loader is not loader:
            tracker = self._trackers[slot] = LoaderTracker(loader)
            saved = self._saved_loaders.pop(slot, None)
            if saved is not None:
                continue_pass = saved["epoch"] == self.epoch and (saved["in_progress"] or saved["done"])
                tracker.load_state_dict(saved, rng=self._resume_rng, continue_pass=continue_pass)
        self._current = tracker
        try:
            for batch in tracker.iterate(epoch=self.epoch, before_batch=self._before_batch):
                self.step += 1
                yield batch
        except _Stopped:  # the doctor asked to stop: no next batch, in this epoch or a later one
            return

    def save(self, *, metrics: Mapping[str, Any] | None = None, force: bool = False) -> CheckpointInfo | None:
        """Save a checkpoint if the save policy says so (or ``force``); returns it, else None.

        Call it after the optimizer step, inside the batch loop and/or at the end of the epoch.
        A preemption (SIGTERM, Ctrl-C) that arrived during the step saves here, with these metrics.
        """
        self._begin()
        context = self._context(plain_metrics(metrics) if metrics else _NO_METRICS)
        preempted = self._guard.requested
        decided = self.save_policy.should_save(context) or force or self._stop_saves
        info = self._write(context) if decided or (preempted and self._saved_this_step() is None) else None
        if preempted:
            self._check_preemption()  # the step is saved now, with its metrics: exit
        return info

    def finish(self, status: str = "finished", message: str | None = None) -> None:
        """Mark the run ``status`` in run.json, release the folder and the signal handlers."""
        if self._finished:
            return
        self._finished = True
        stopped = status == "finished" and self._stop_reason is not None
        if stopped:
            status, message = "stopped", self._stop_reason
        self._guard.uninstall()
        if self._signals is not None:
            self._signals.close()
        try:
            if status != "failed":
                self._begin()  # the block ended cleanly: the resume checked out (a failed one changes no file)
            if stopped:
                self._stop_now()  # a loop without epochs(): the stop's save happens here
            if self._begun:  # else nothing was logged, and the logs were not cut back: leave them
                self._logs.close(step=self.step, hparams_status=status if self.config else None)
            self._info["status"] = status
            self._info["message"] = message
            write_run_info(self.dir, self._info)
        finally:
            self._lock.release()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is SystemExit and self._info["status"] == "preempted":
            self.finish("preempted", self._info["message"])
        elif kind is None or (kind is SystemExit and error.code in (0, None)):
            self.finish("finished")  # the block ended, or the script chose to exit cleanly
        elif kind is not None and issubclass(kind, PreflightInterrupted):
            self.finish("failed", f"stopped by Ctrl-C during preflight, before training; nothing was saved ({error})")
        elif kind is KeyboardInterrupt:
            self.finish("failed", "aborted by a second Ctrl-C, without saving")
        else:
            self.finish("failed", f"{kind.__name__}: {error}")

    @property
    def best(self) -> CheckpointInfo | None:
        """The best kept checkpoint by the keep policy's metric (None without one), ranked as
        :mod:`savegame.ranking` defines it; ``run.json``'s ``best`` and the CLI name the same one."""
        metric = _best_metric(self.keep_policy)
        return best_checkpoint(self.checkpoints, *metric) if metric is not None else None

    # -- saving ------------------------------------------------------------------------------
    def _epochs_done(self) -> int:
        # An epoch counts as done once its batches ran out and no loader is half way.
        finished = False
        for tracker in self._trackers.values():
            if tracker.in_progress:
                return self.epoch
            finished = finished or (tracker.done and tracker.epoch == self.epoch)
        return self.epoch + 1 if finished else self.epoch

    def _write(self, context: SaveContext) -> CheckpointInfo:
        # The save policy hears of the save before its state is stored with it (OnImprovement's
        # best is this value now); if the write fails, the policy goes back to where it was.
        before = self.save_policy.state_dict()
        self.save_policy.saved(context)
        try:
            return self._write_checkpoint(dict(context.metrics), context.epochs_done)
        except BaseException:
            self.save_policy.load_state_dict(before)
            raise

    def _write_checkpoint(self, metrics: dict[str, float], epochs_done: int) -> CheckpointInfo:
        newest = self.checkpoints[-1] if self.checkpoints else None
        state = {name: obj.state_dict() for name, obj in self._objects.items()}
        state["extras"] = self.extras
        state[RESERVED] = {
            "step": self.step, "epoch": self.epoch, "epochs_done": epochs_done,
            "rng": capture_rng(), "config": self.config,
            "loaders": {slot: t.state_dict() for slot, t in self._trackers.items()},
            "save_policy": self.save_policy.state_dict(),
            "log": self._logs.state_dict(),
        }
        path = self._checkpoint_root / checkpoint_dirname(self.step)
        replace = newest is not None and newest.step == self.step
        objects = {name: {"class": f"{type(obj).__module__}.{type(obj).__qualname__}", "kind": object_kind(obj)}
                   for name, obj in self._objects.items()}
        info = write_checkpoint(path, state, step=self.step, epoch=self.epoch, metrics=metrics,
                                info={"objects": objects}, overwrite=replace)
        self.checkpoints = [c for c in self.checkpoints if c.step != info.step] + [info]
        saved = self._info.setdefault("saved_steps", [])  # for the report: what the keep policy dropped
        saved[:] = [s for s in saved if s < self.step][-(MAX_SAVED_STEPS - 1):] + [self.step]
        self._last_save_step, self._last_save_epochs_done = self.step, epochs_done
        self._last_save_time = time.monotonic()
        # The checkpoint this process resumed from is protected only until a newer one has
        # committed; after that the keep policy treats it like any other, so a run resumed many
        # times ends with the same checkpoints as one that never stopped.
        protected = ({self.resumed_from.step} if self.resumed_from is not None and self.step <= self.resumed_from.step
                     else set())
        for doomed in plan_deletions(self.checkpoints, self.keep_policy, protected=protected):
            delete_checkpoint(doomed.path)
            self.checkpoints.remove(doomed)
        self._record_best()
        write_run_info(self.dir, self._info)
        return info

    def _record_best(self) -> None:
        """run.json's ``ranking`` (how "best" is ranked) and ``best`` (the best kept checkpoint)."""
        metric = _best_metric(self.keep_policy)
        if metric is not None:
            self._info["ranking"] = {"metric": metric[0], "mode": metric[1]}
            self._info["best"] = best_record(self.checkpoints, *metric)

    def _make_doctor(self, doctor: "Doctor | None") -> Any:
        if doctor is None or not self._logs.writer._writes():  # a silent rank logs nothing to judge
            return None
        from .doctor.live import LiveDoctor

        return LiveDoctor(doctor, self.dir, resumed_at=self.step if self.resumed_from is not None else None,
                          write_text=lambda text, step: self.writer.add_text("doctor", text, step),
                          request_stop=self._request_stop)

    def _doctor_signals(self) -> Any:
        """Signals on the tracked optimizer and the tracked module it trains, once both are
        tracked (an EMA copy or a frozen teacher tracked first is skipped)."""
        import torch

        if self._doctor.config.every == 0:
            return None
        optimizer = next((o for o in self._objects.values() if isinstance(o, torch.optim.Optimizer)), None)
        if optimizer is None:
            return None
        trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
        model = next((o for o in self._objects.values() if isinstance(o, torch.nn.Module)
                      and any(id(p) in trained for p in o.parameters())), None)
        if model is None:
            return None
        from .doctor.signals import Signals

        return Signals(model, optimizer, every=self._doctor.config.every, step=lambda: self.step,
                       log=lambda values, step: self.log(values, step=step))

    def _request_stop(self, reason: str, save: bool) -> None:
        if self._stop_reason is None:
            self._stop_reason, self._stop_saves = reason, save
            print(f"savegame: {reason}", file=sys.stderr, flush=True)

    def _before_batch(self) -> None:
        self._check_preemption()
        if self._stop_reason is not None:
            raise _Stopped

    def _stop_now(self) -> None:
        """The doctor asked to stop: save this step (unless saved already, or diverged) and say why."""
        if self._stop_saves and self._saved_this_step() is None:
            self._write(self._context())
        self._info["status"], self._info["message"] = "stopped", self._stop_reason
        write_run_info(self.dir, self._info)

    def _context(self, metrics: Mapping[str, float] = _NO_METRICS) -> SaveContext:
        return SaveContext(step=self.step, epoch=self.epoch, epochs_done=self._epochs_done(), now=time.monotonic(),
                           metrics=metrics, last_save_step=self._last_save_step,
                           last_save_epochs_done=self._last_save_epochs_done, last_save_time=self._last_save_time)

    def _saved_this_step(self) -> CheckpointInfo | None:
        """The checkpoint of the current step if this process already saved it, else None."""
        newest = self.checkpoints[-1] if self.checkpoints else None
        if newest is not None and newest.step == self.step and self._last_save_step == self.step:
            return newest
        return None

    def _check_preemption(self) -> None:
        if not self._guard.requested:
            return
        signal_name = self._guard.signal_name
        info = self._saved_this_step() or self._write(self._context())
        message = (f"stopped by {signal_name} at step {self.step} (epoch {self.epoch}, counted from 0); saved "
                   f"{info.path}. To resume, run the same command again: {rerun_command()}")
        self._info["status"], self._info["message"] = "preempted", message
        write_run_info(self.dir, self._info)
        print(f"savegame: {message}", file=sys.stderr, flush=True)
        raise SystemExit(0)

    # -- resuming ----------------------------------------------------------------------------
    def _open_run_info(self) -> dict[str, Any]:
        try:
            info = read_run_info(self.dir)
        except FileNotFoundError:
            return new_run_info(self.dir.name, config=self.config)
        self._config_changes = config_changes(info.get("config") or {}, self.config)
        if self._config_changes:
            listed = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in self._config_changes.items())
            warnings.warn(
                f"{self.dir}/run.json: the config changed since the last process ({listed}); run.json "
                "records the new values and the change. State restored from the checkpoint (the "
                "optimizer's lr, the schedule ...) keeps its saved values unless you set them again "
                "after run.track()", stacklevel=4)
            info.setdefault("config_history", []).append(
                {"time": time.time(), "step": None, "changed": self._config_changes})
        if info.get("status") == "stopped":
            best = info.get("best") or {}
            hint = f" To start again from the best checkpoint: Run(..., resume={best['step']})." if best.get("step") else ""
            warnings.warn(f"{self.dir} was stopped early: {info.get('message')} Resuming from its newest "
                          f"checkpoint.{hint}", stacklevel=4)
        info["config"] = config_as_json(self.config)
        info["status"], info["message"] = "running", None
        # this process owns the run now: `savegame ls` judges liveness by this pid on this host
        info["pid"], info["host"] = os.getpid(), socket.gethostname()
        return info

    def _load_resume_state(self, resume: str | int | Path) -> dict[str, Any] | None:
        if resume == "never":
            if self.checkpoints:
                raise FileExistsError(
                    f"{self.dir} already holds checkpoints ({self.checkpoints[-1].path.name} is the "
                    "newest) and resume='never' would mix two runs in one folder. Use a new folder, "
                    "delete this one, or resume='auto'.")
            return None
        if isinstance(resume, int) and not isinstance(resume, bool):
            matches = [c for c in self.checkpoints if c.step == resume]
            if not matches:
                steps = [c.step for c in self.checkpoints]
                raise CheckpointNotFoundError(
                    f"{self.dir} has no committed checkpoint at step {resume}; it has steps {steps}")
            return self._supersede_newer(self._read_for_resume(matches[0].path, fall_back=False))
        if resume != "auto":
            return self._supersede_newer(self._read_for_resume(Path(resume), fall_back=False))
        while self.checkpoints:
            state = self._read_for_resume(self.checkpoints[-1].path, fall_back=True)
            if state is not None:
                return state
        return None

    def _supersede_newer(self, state: dict[str, Any]) -> dict[str, Any]:
        """An explicit resume from step S starts a new timeline at S: this folder's checkpoints
        after S belong to the old one, so they are no longer resumed from. They are renamed
        ``*.superseded`` when the run begins (see :meth:`_begin`), not before its objects are checked."""
        self._superseded = [c for c in self.checkpoints if c.step > self.resumed_from.step]
        self.checkpoints = [c for c in self.checkpoints if c not in self._superseded]
        return state

    def _read_for_resume(self, path: Path, *, fall_back: bool) -> dict[str, Any] | None:
        try:
            state, manifest = read_checkpoint(path, verify=True)
        except (CheckpointCorruptError, FormatVersionError) as error:
            if not fall_back or isinstance(error, FormatVersionError):
                raise
            moved = quarantine(path)
            self.checkpoints = [c for c in self.checkpoints if c.path != path]
            warnings.warn(f"checkpoint {path} is damaged ({error}); moved it to {moved} and "
                          "falling back to the previous one", stacklevel=5)
            return None
        if RESERVED not in state:
            raise FormatVersionError(
                f"{path} was written by savegame.save(), not by a Run; load it with "
                "savegame.load(path, into={...}) instead of resuming from it")
        self.resumed_from = CheckpointInfo(path=path, step=manifest["step"], epoch=manifest["epoch"],
                                           metrics=metrics_from_json(manifest.get("metrics", {})),
                                           created=manifest.get("created", 0.0), size=0)
        return state

    def _apply_run_state(self) -> None:
        run_state = self._resume_state[RESERVED]
        self.step, self.epoch = run_state["step"], run_state["epoch"]
        self._start_epoch = run_state["epochs_done"]
        if self._start_epoch == self.epoch:  # saved inside an epoch: continue that epoch
            self._saved_loaders = dict(run_state["loaders"])
        else:  # only the loaders' own generators matter for the next epoch
            self._saved_loaders = {slot: {**s, "in_progress": False, "done": False}
                                   for slot, s in run_state["loaders"].items()}
        self._resume_rng = run_state["rng"]
        self._pending_rng = run_state["rng"]
        self.extras = dict(self._resume_state.get("extras") or {})
        self.save_policy.load_state_dict(run_state.get("save_policy") or {})
        self._last_save_step = self.step
        self._last_save_epochs_done = self._start_epoch
        self._saved_log = run_state.get("log") or {}
        self._where = _position(run_state)

    def _restore(self, name: str, obj: Any) -> None:
        """Load ``name``'s state from the checkpoint into ``obj``, then drop it from memory (a
        large model's tensors would otherwise stay alive beside the model for the whole run)."""
        if name in self._restored:
            raise ValueError(f"run.track({name}=...): {name!r} is tracked already and was restored from "
                             f"{self.resumed_from.path}; track each object once")
        if self._resume_state is None:
            raise RuntimeError(
                f"run.track({name}=...) after the loop started: a resumed run restores tracked objects "
                "from its checkpoint before the first epochs()/iterate(), and has released that state "
                "since. Call run.track() before the loop.")
        if name not in self._resume_state:
            saved = sorted(k for k in self._resume_state if k not in (RESERVED, "extras"))
            saved = sorted({*saved, *self._restored})
            raise StateMismatchError(
                f"checkpoint {self.resumed_from.path} has no state for {name!r}; it holds "
                f"{saved}. Track the same objects as the run that saved it, or start a new "
                "run folder (or resume='never' in an empty one).")
        load_into(str(self.resumed_from.path), self._resume_state, {name: obj}, strict=True)
        del self._resume_state[name]
        self._restored.add(name)
        self._note_kept_hyperparameters(name, obj)

    def _note_kept_hyperparameters(self, name: str, obj: Any) -> None:
        """A changed config value that names an optimizer hyperparameter (``lr``, ``weight_decay``
        ...) does not reach a restored optimizer: say so, and record what the run really uses."""
        changes = self._config_changes
        groups = getattr(obj, "param_groups", None)
        if not changes or not isinstance(groups, list):
            return
        kept = {}
        for key, (_, new) in changes.items():
            field = key.rsplit(".", 1)[-1]
            used = [g[field] for g in groups if isinstance(g, dict) and field in g]
            if used and any(u != new for u in used):
                kept[key] = used[0] if len(set(map(repr, used))) == 1 else used
        if kept:
            self._info["config_history"][-1].setdefault("kept_from_checkpoint", {}).update(
                {f"{name}.{k}": v for k, v in config_as_json(kept).items()})
            listed = ", ".join(f"{key}={value!r} (config: {changes[key][1]!r})" for key, value in kept.items())
            warnings.warn(
                f"the restored {name} goes on with {listed} from {self.resumed_from.path}; to use the new "
                f"value, set it after run.track(), e.g. for g in {name}.param_groups: g[...] = ...",
                stacklevel=4)

    def _earlier_preflight(self) -> Any:
        """On resume: the report of the preflight that ran when the run started (preflight.json),
        or a report with one skipped check, so that ``print(run.preflight(...))`` says what happened."""
        import json

        from .preflight.report import CheckResult, PreflightReport

        try:
            saved = json.loads((self.dir / "preflight.json").read_text())
            report = PreflightReport([CheckResult(**check) for check in saved["checks"]])
        except (OSError, ValueError, KeyError, TypeError):
            report = PreflightReport([CheckResult(
                "preflight", "skip", f"skipped: the run resumed from step {self.resumed_from.step}; preflight "
                "runs once, when a run starts")])
        else:
            notice(f"preflight skipped on resume; returning its report from when the run started "
                   f"({self.dir / 'preflight.json'})")
        return report

    def _is_own(self, checkpoint: Path) -> bool:
        return checkpoint.resolve().parent.parent == self.dir.resolve()

    def _begin(self) -> None:
        """Start the run for real, once: the first epochs(), iterate(), save(), log(), writer use.

        Until then a resume changes no file, so a track() that finds the checkpoint does not
        fit loses nothing. Now: supersede an explicit resume's newer checkpoints, cut the logs
        back to the checkpoint, record the resume, and say so."""
        if self._begun:
            return
        self._begun = True
        resumed = self.resumed_from is not None
        for checkpoint in self._superseded:
            quarantine(checkpoint.path, "superseded")
        if self._superseded:
            warnings.warn(f"resuming {self.dir} from step {self.resumed_from.step}: its later checkpoints "
                          f"(steps {[c.step for c in self._superseded]}) are renamed *.superseded; they are "
                          "kept, but no longer resumed from", stacklevel=4)
        # A checkpoint in another folder (resume=path) records that folder's event files, not ours.
        saved_log = self._saved_log if resumed and self._is_own(self.resumed_from.path) else {}
        self._logs = RunLog(self.dir, saved=saved_log, step=self.step, resumed=resumed,
                            epoch_finished=self._start_epoch > self.epoch)
        self._doctor = self._make_doctor(self._doctor_config)
        if self._doctor is not None and self._objects:
            self._signals = self._doctor_signals()
        if resumed:
            self._info["resumes"].append({
                "time": time.time(), "from_step": self.step, "from_checkpoint": self.resumed_from.path.name,
                "pid": os.getpid()})
            if self._config_changes:
                self._info["config_history"][-1]["step"] = self.step
            write_run_info(self.dir, self._info)
            notice(f"resumed {self.dir} from step {self.step} ({self._where})")
        if self.config and not self._logs.has_history:
            self.writer.add_hparams(hparams_from_config(self.config), {})

    def _start_loop(self) -> None:
        """The loop starts: every object is tracked, so the rest of the resume state can go."""
        self._begin()
        if self._resume_state is not None:
            self._resume_state = None

    def _restore_pending_rng(self) -> None:
        if self._pending_rng is not None:
            restore_rng(self._pending_rng)
            self._pending_rng = None


class _Stopped(Exception):
    """Raised before a batch is fetched once the doctor asked the run to stop."""


def _check_resume_argument(resume: Any) -> None:
    if resume in ("auto", "never") or isinstance(resume, (Path, int)) and not isinstance(resume, bool):
        return
    if isinstance(resume, str) and resume:
        return  # a checkpoint path given as a string
    raise ValueError(f"resume must be 'auto', 'never', a step number or a checkpoint path, but got {resume!r}")


def _doctor_config(doctor: Any) -> "Doctor | None":
    if doctor is False or doctor is None:
        return None
    from .doctor.live import Doctor

    if doctor is True:
        return Doctor()
    if not isinstance(doctor, Doctor):
        raise TypeError(f"Run(doctor=...) takes True, False or a savegame.Doctor(...), but got {doctor!r}")
    return doctor


def _position(run_state: Mapping[str, Any]) -> str:
    """Where a checkpoint stands, for the resume line: "epoch 6, batch 30 of 45" or "end of epoch 5"."""
    epoch = run_state["epoch"]
    if run_state["epochs_done"] > epoch:
        return f"end of epoch {epoch}"
    loaders = [s for s in (run_state.get("loaders") or {}).values() if s.get("epoch") == epoch]
    if not loaders:
        return f"epoch {epoch}"
    batches, length = loaders[0].get("batches", 0), loaders[0].get("length")
    return f"epoch {epoch}, batch {batches}" + (f" of {length}" if length else "")


def _best_metric(policy: Any) -> tuple[str, str] | None:
    metric = getattr(policy, "metric", None)
    if isinstance(metric, str):
        return metric, getattr(policy, "mode", "min")
    for child in getattr(policy, "policies", ()) or ():
        found = _best_metric(child)
        if found:
            return found
    return None



