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

import json
import math
import os
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
from .preemption import PreemptionGuard
from .runinfo import hparams_from_config, jsonable, new_run_info, read_run_info, write_run_info

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

        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = RunLock(self.dir / "LOCK")
        self._lock.acquire()
        try:
            self._checkpoint_root = self.dir / "checkpoints"
            self._checkpoint_root.mkdir(exist_ok=True)
            remove_stale_temps(self._checkpoint_root)
            self.checkpoints: list[CheckpointInfo] = list_checkpoints(self._checkpoint_root)
            self._info = self._open_run_info()
            self._resume_state = self._load_resume_state(resume)
            self._start_epoch = 0
            self._pending_rng: dict[str, Any] | None = None  # restored when the loop starts
            self._resume_rng: dict[str, Any] | None = None  # restored again after a mid-epoch skip
            self._saved_loaders: dict[str, Any] = {}
            if self._resume_state is not None:
                self._apply_run_state()
            saved_log = (self._resume_state or {}).get(RESERVED, {}).get("log") or {}
            self._logs = RunLog(self.dir, saved=saved_log, step=self.step, resumed=self.resumed_from is not None,
                                epoch_finished=self._start_epoch > self.epoch)
            self._doctor = self._make_doctor(doctor)
            write_run_info(self.dir, self._info)
        except BaseException:
            self._lock.release()
            raise
        self._guard = PreemptionGuard()
        if handle_signals:
            self._guard.install()
        if self.config and not self._logs.has_history:
            self.writer.add_hparams(hparams_from_config(self.config), {})

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
            self._objects[name] = obj
            if self._resume_state is not None:
                if name not in self._resume_state:
                    saved = sorted(k for k in self._resume_state if k not in (RESERVED, "extras"))
                    raise StateMismatchError(
                        f"checkpoint {self.resumed_from.path} has no state for {name!r}; it holds "
                        f"{saved}. Track the same objects as the run that saved it, or start a new "
                        "run folder (or resume='never' in an empty one)."
                    )
                load_into(str(self.resumed_from.path), self._resume_state, {name: obj}, strict=True)
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
            return None
        from .preflight import preflight
        from .runinfo import write_json_atomic

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
        return self._logs.writer

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
        if self._logs.stats_pending:  # the last process saved after its epoch, died before logging it
            self._logs.end_of_epoch(self.step)
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
        """
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
        try:
            for batch in tracker.iterate(epoch=self.epoch, before_batch=self._before_batch):
                self.step += 1
                yield batch
        except _Stopped:  # the doctor asked to stop: no next batch, in this epoch or a later one
            return

    def save(self, *, metrics: Mapping[str, Any] | None = None, force: bool = False) -> CheckpointInfo | None:
        """Save a checkpoint if the save policy says so (or ``force``); returns it, else None.

        Call it after the optimizer step, inside the batch loop and/or at the end of the epoch.
        """
        if self._guard.requested:
            self._check_preemption()
        metrics = plain_metrics(metrics) if metrics else _NO_METRICS
        context = SaveContext(
            step=self.step, epoch=self.epoch, epochs_done=self._epochs_done(), now=time.monotonic(),
            metrics=metrics, last_save_step=self._last_save_step,
            last_save_epochs_done=self._last_save_epochs_done, last_save_time=self._last_save_time,
        )
        if not (self.save_policy.should_save(context) or force or self._stop_saves):
            return None
        return self._write(metrics, context.epochs_done)

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
            if stopped:
                self._stop_now()  # a loop without epochs(): the stop's save happens here
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
        elif kind is KeyboardInterrupt:
            self.finish("failed", "aborted by a second Ctrl-C, without saving")
        else:
            self.finish("failed", f"{kind.__name__}: {error}")

    @property
    def best(self) -> CheckpointInfo | None:
        """The best kept checkpoint by the keep policy's metric (None without one)."""
        metric = _best_metric(self.keep_policy)
        if metric is None:
            return None
        name, mode = metric
        scored = [c for c in self.checkpoints if _finite(c.metrics.get(name))]
        if not scored:
            return None
        pick = min if mode == "min" else max
        return pick(scored, key=lambda c: (c.metrics[name], -c.step if mode == "min" else c.step))

    # -- saving ------------------------------------------------------------------------------
    def _epochs_done(self) -> int:
        # An epoch counts as done once its batches ran out and no loader is half way.
        finished = False
        for tracker in self._trackers.values():
            if tracker.in_progress:
                return self.epoch
            finished = finished or (tracker.done and tracker.epoch == self.epoch)
        return self.epoch + 1 if finished else self.epoch

    def _write(self, metrics: dict[str, float], epochs_done: int) -> CheckpointInfo:
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
        protected = {self.resumed_from.step} if self.resumed_from is not None else set()
        for doomed in plan_deletions(self.checkpoints, self.keep_policy, protected=protected):
            delete_checkpoint(doomed.path)
            self.checkpoints.remove(doomed)
        self._record_best()
        write_run_info(self.dir, self._info)
        return info

    def _record_best(self) -> None:
        best = self.best
        if best is not None:
            name, mode = _best_metric(self.keep_policy)
            self._info["best"] = {"metric": name, "mode": mode, "value": best.metrics[name],
                                  "step": best.step, "checkpoint": best.path.name}

    def _make_doctor(self, doctor: Any) -> Any:
        if doctor is False or doctor is None:
            return None
        from .doctor.live import Doctor, LiveDoctor

        if doctor is True:
            doctor = Doctor()
        if not isinstance(doctor, Doctor):
            raise TypeError(f"Run(doctor=...) takes True, False or a savegame.Doctor(...), but got {doctor!r}")
        if not self._logs.writer._writes():  # a silent rank (not rank 0) logs nothing to judge
            return None
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
            self._write({}, self._epochs_done())
        self._info["status"], self._info["message"] = "stopped", self._stop_reason
        write_run_info(self.dir, self._info)

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
        info = self._saved_this_step() or self._write({}, self._epochs_done())
        command = " ".join(sys.argv) if sys.argv and sys.argv[0] else "your training command"
        message = (f"stopped by {signal_name} at step {self.step} (epoch {self.epoch}, counted from 0); saved "
                   f"{info.path}. To resume, run the same command again: {command}")
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
        if info.get("config") != _jsonish(self.config):
            warnings.warn(
                f"{self.dir}/run.json was started with config {info.get('config')} and now gets "
                f"{self.config}; continuing with the new one", stacklevel=4)
        if info.get("status") == "stopped":
            best = info.get("best") or {}
            hint = f" To start again from the best checkpoint: Run(..., resume={best['step']})." if best.get("step") else ""
            warnings.warn(f"{self.dir} was stopped early: {info.get('message')} Resuming from its newest "
                          f"checkpoint.{hint}", stacklevel=4)
        info["config"] = self.config
        info["status"], info["message"] = "running", None
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
        after S belong to the old one (their logs are cut off now), so they are renamed
        ``*.superseded`` and a later resume="auto" does not jump back to them."""
        newer = [c for c in self.checkpoints if c.step > self.resumed_from.step]
        for checkpoint in newer:
            quarantine(checkpoint.path, "superseded")
        if newer:
            self.checkpoints = [c for c in self.checkpoints if c not in newer]
            warnings.warn(f"resuming {self.dir} from step {self.resumed_from.step}: its later checkpoints "
                          f"(steps {[c.step for c in newer]}) are renamed *.superseded; they are kept, "
                          "but no longer resumed from", stacklevel=5)
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
        self._info["resumes"].append({
            "time": time.time(), "from_step": self.step, "from_checkpoint": self.resumed_from.path.name,
            "pid": os.getpid()})

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


def _finite(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def _best_metric(policy: Any) -> tuple[str, str] | None:
    metric = getattr(policy, "metric", None)
    if isinstance(metric, str):
        return metric, getattr(policy, "mode", "min")
    for child in getattr(policy, "policies", ()) or ():
        found = _best_metric(child)
        if found:
            return found
    return None


def _jsonish(config: dict[str, Any]) -> Any:
    return json.loads(json.dumps(config, default=jsonable))
