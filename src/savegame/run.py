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

import atexit
import sys
import warnings
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

from .atomic import fsync_files
from .checkpoint.layout import CheckpointInfo
from .checkpoint.policy import Always, Keep, KeepPolicy, SaveContext, SavePolicy, ranking_of
from .checkpoint.store import plain_metrics
from .checkpointer import Checkpointer
from .distributed import check_one_process
from .folder import RunFolder
from .hooks import Hook, check_hooks
from .io import object_kind
from .log.runlog import RunLog
from .log.writer import SummaryWriter
from .messages import notice, rerun_command
from .preemption import PreemptionGuard
from .progress import Progress, position
from .ranking import best_checkpoint
from .resumption import RESERVED, Resumption, check_resume_argument, note_kept_hyperparameters, open_run_info
from .runinfo import hparams_from_config, record_resume, status_on_exit
from .save_timing import NO_METRICS, SaveTiming

if TYPE_CHECKING:
    from .doctor import Diagnosis, Doctor



class Run:
    """One training run in one folder: a facade over its parts.

    :class:`~savegame.folder.RunFolder` (lock, ``run.json``, listing, best), a
    :class:`~savegame.checkpointer.Checkpointer` (snapshot, persist, retention),
    :class:`~savegame.progress.Progress` (step, epoch, loader positions), the logs
    (:class:`~savegame.log.runlog.RunLog`) and the hooks (:class:`savegame.Hook`).

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
        hooks: :class:`savegame.Hook` objects that watch the run (a sweep's pruner, your own).
        async_save: ``run.save()`` returns once the state is copied to host memory (buffers kept
            from one save to the next: one host copy of the state); the write, fsync, commit and
            the keep policy's deletions run on a thread while training goes on. One save is in
            flight at a time (the next waits for it); ``run.wait()``, ``finish()`` (the end of a
            ``with`` block), a preemption's save and the interpreter's exit wait for it. A failed
            background save raises its error at the next call into the run, once, and never costs
            an earlier checkpoint. ``run.checkpoints`` lists a save once it has committed. The
            copy is taken on the calling thread before ``save()`` returns: a tensor that another
            thread changes during it may be saved partly old, partly new (nothing is guaranteed
            then, as with a synchronous save); once ``save()`` has returned, changes are safe.
        incremental: a tensor whose bytes equal the newest checkpoint's is not written again:
            that checkpoint's file is hard-linked into the new folder (a frozen backbone is written
            once, not at every save). On by default; ``False`` writes every tensor at every save,
            so no two checkpoints share a file. See ``savegame.checkpoint.sharing``.
    """

    def __init__(self, dir: str | Path, *, config: Mapping[str, Any] | None = None,
                 save: SavePolicy | None = None, keep: KeepPolicy | None = None,
                 resume: str | int | Path = "auto", handle_signals: bool = True,
                 doctor: "bool | Doctor" = False, hooks: Iterable[Hook] = (), async_save: bool = False,
                 incremental: bool = True) -> None:
        check_resume_argument(resume)
        check_one_process("savegame.Run")  # before any file of the folder is touched
        self.dir = Path(dir)
        self.folder = RunFolder(self.dir)
        self.config = dict(config or {})
        self.saves = SaveTiming(save if save is not None else Always())
        self.keep_policy = keep if keep is not None else Keep(last=3)
        self.hooks: list[Hook] = check_hooks(hooks) + _doctor_hooks(doctor)
        self.extras: dict[str, Any] = {}  # the user's own resumable values, saved with each checkpoint
        self.progress = Progress()
        self.resumed_from: CheckpointInfo | None = None
        self._objects: dict[str, Any] = {}
        self._finished = False
        self._stop_reason: str | None = None  # request_stop(): end the loops, mark "stopped"
        self._stop_saves = False  # whether the stop saves the current state (not a diverged one)
        self._begun = False
        self._undo_save: Callable[[], None] | None = None  # the save policy's undo, for the save in flight

        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = self.folder.lock()
        self._lock.acquire()
        try:
            # We hold the lock, so every temp folder is stale, even one whose pid is ours again
            # (containers restart with the same pid): clean them all, put back interrupted overwrites.
            self.folder.checkpoint_root.mkdir(exist_ok=True)
            self.folder.clean_temps(include_live=True)
            self._saver = Checkpointer(self.folder, keep=self.keep_policy, on_committed=self._committed,
                                       background=async_save, incremental=incremental)
            self._info, self._config_changes = open_run_info(self.folder, self.config)
            self._resumption = Resumption(self.dir, self._saver.checkpoints, resume)
            self._apply_run_state()
            self.folder.write_info(self._info)
        except BaseException:
            if getattr(self, "_resumption", None) is not None:
                self._resumption.close()
            self._lock.release()
            raise
        self._guard = PreemptionGuard()
        if handle_signals:
            self._guard.install()
        if async_save:  # a script that never calls finish() still commits its last save's run.json
            atexit.register(self._wait_at_exit)
        if self.resumed_from is None:
            self._begin()  # a new run has nothing to check against: start at once

    # -- where the run is ----------------------------------------------------------------------
    @property
    def step(self) -> int:
        """Optimizer steps done: batches yielded by ``iterate()``, over every epoch."""
        return self.progress.step

    @step.setter
    def step(self, value: int) -> None:  # for loops that count steps themselves
        self.progress.step = value

    @property
    def epoch(self) -> int:
        """The current epoch, counted from 0."""
        return self.progress.epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        self.progress.epoch = value

    @property
    def batch(self) -> int | None:
        """The 0-based index, inside its epoch, of the batch ``iterate()`` yielded last (like
        ``batch_idx`` in ``for batch_idx, (x, y) in enumerate(loader)``), also right after a resume
        inside an epoch; None before the first batch."""
        return self.progress.batch

    @property
    def save_policy(self) -> SavePolicy:
        """The policy ``run.save()`` asks (``Run(save=...)``); its memory of the last save is in
        ``run.saves`` (:class:`~savegame.save_timing.SaveTiming`)."""
        return self.saves.policy

    @property
    def checkpoints(self) -> list[CheckpointInfo]:
        """The committed checkpoints the run keeps, by step."""
        return self._saver.checkpoints

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
            if self._begun:
                self._call("on_track", name, obj)

    def preflight(self, model: Any, loss_fn: Any, data: Any, *, continue_on_failure: bool = False,
                  **options: Any) -> Any:
        """Check the setup before training starts (``savegame.preflight``), once per run.

        On resume it does not run again and returns the first report (``preflight.json``). The
        report goes to ``preflight.json`` in the run folder and to TensorBoard (a table in TEXT,
        the first batch in IMAGES when it is images). A failed check raises
        :class:`~savegame.errors.PreflightFailedError` holding the report, unless
        ``continue_on_failure``. ``options`` go to ``savegame.preflight`` (``quick=True`` ...).
        """
        from .preflight.in_run import earlier_preflight, preflight_in_run

        if self.resumed_from is not None:
            return earlier_preflight(self.dir, self.resumed_from.step)
        self._begin()
        return preflight_in_run(self.dir, self.writer, self.step, model, loss_fn, data,
                                continue_on_failure=continue_on_failure, options=options)

    @property
    def writer(self) -> SummaryWriter:
        """A :class:`savegame.SummaryWriter` on the run folder (the TensorBoard run), made on first
        use. Its files are cut back to the checkpoint a run resumes from, so curves never zig-zag."""
        self._begin()
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
        self._begin()
        self._collect(wait=False)
        hosts = self._logs.log(values, step=step, reduce=reduce, every_step=every_step)
        if hosts:
            self._call("on_log", hosts, step, every_step=every_step, reduce=reduce)

    def request_stop(self, reason: str, *, save: bool = True) -> None:
        """Ask the run to stop early: ``epochs()`` and ``iterate()`` end before the next batch,
        the current step is saved (unless ``save=False``, e.g. for a diverged state) and
        ``run.json`` says ``stopped`` with ``reason``. The first request wins."""
        if self._stop_reason is None:
            self._stop_reason, self._stop_saves = reason, save
            print(f"savegame: {reason}", file=sys.stderr, flush=True)

    @property
    def should_stop(self) -> str | None:
        """Why the run was asked to stop early (``request_stop``, e.g. by the doctor), else None.
        ``epochs()`` and ``iterate()`` end by themselves; a loop of your own can test this."""
        return self._stop_reason

    @property
    def doctor(self) -> "Diagnosis | None":
        """The live doctor's latest diagnosis (None without ``doctor=`` or before a validation)."""
        from .doctor.hook import DoctorHook

        hook = next((h for h in self.hooks if isinstance(h, DoctorHook)), None)
        return hook.last if hook is not None else None

    def epochs(self, n: int) -> Iterator[int]:
        """Yield the epoch numbers still to do, from where the last process stopped, up to ``n``."""
        self._start_loop()
        if self._logs.stats_pending:  # the last process saved after its epoch, died before logging it
            self._logs.end_of_epoch(self.step)
        if self.resumed_from is not None and self.progress.start_epoch >= n:
            notice(f"{self.dir} has already done its {n} epochs (step {self.step}): nothing to train. "
                   "To train it again, use a new folder or delete this one; for more epochs, raise n.")
        for epoch in range(self.progress.start_epoch, n):
            self.progress.begin_epoch(epoch)
            yield epoch
            self._logs.end_of_epoch(self.step)
            self._call("on_epoch_end", self.step)
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
        try:
            yield from self.progress.iterate(loader, name=name, before_batch=self._before_batch)
        except _Stopped:  # request_stop(): no next batch, in this epoch or a later one
            return

    def save(self, *, metrics: Mapping[str, Any] | None = None, force: bool = False) -> CheckpointInfo | None:
        """Save a checkpoint if the save policy says so (or ``force``); returns it, else None
        (also with ``async_save``, where it commits later: ``run.wait()`` returns it).

        Call it after the optimizer step, inside the batch loop and/or at the end of the epoch.
        A preemption (SIGTERM, Ctrl-C) that arrived during the step saves here, with these metrics.
        """
        self._begin()
        self._collect(wait=False)  # a background save that failed raises here
        context = self.saves.context(self.progress, plain_metrics(metrics) if metrics else NO_METRICS)
        preempted = self._guard.requested
        if preempted:
            self._collect(wait=True)  # the save in flight may be this step's
        decided = self.saves.policy.should_save(context) or force or self._stop_saves
        info = self._write(context, wait=preempted) if decided or (preempted and self._saved_this_step() is None) \
            else None
        if preempted:
            self._check_preemption()  # the step is saved now, with its metrics: exit
        return info

    def wait(self) -> CheckpointInfo | None:
        """Wait for the background save in flight (``async_save=True``) to commit; returns it
        (None when none was in flight), or raises its error."""
        return self._collect(wait=True)

    def finish(self, status: str = "finished", message: str | None = None) -> None:
        """Mark the run ``status`` in run.json, release the folder and the signal handlers."""
        if self._finished:
            return
        self._finished = True
        stopped = status == "finished" and self._stop_reason is not None
        if stopped:
            status, message = "stopped", self._stop_reason
        self._guard.uninstall()
        self._resumption.close()  # a run that never started its loop still holds the checkpoint
        if self._saver.background:
            atexit.unregister(self._wait_at_exit)
        save_error = None
        try:
            save_error = self._last_save_failed(status)  # waits for the save in flight
            if save_error is not None:
                stopped, status, message = False, "failed", f"its last save failed: {save_error}"
            if status != "failed":
                self._begin()  # the block ended cleanly: the resume checked out (a failed one changes no file)
            if stopped:
                self._stop_now()  # a loop without epochs(): the stop's save happens here
            if self._begun:  # else nothing was logged, and the logs were not cut back: leave them
                self._call("on_finish", status)
                self._logs.close(step=self.step, hparams_status=status if self.config else None)
            self._info["status"] = status
            self._info["message"] = message
            self.folder.write_info(self._info)
            self._saver.close()  # nothing is in flight now: this stops the background thread
        finally:
            self._lock.release()
        if save_error is not None:
            raise save_error

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is SystemExit and self._info["status"] == "preempted":
            self.finish("preempted", self._info["message"])
        else:
            self.finish(*status_on_exit(kind, error))

    @property
    def best(self) -> CheckpointInfo | None:
        """The best kept checkpoint by the keep policy's metric (None without one), ranked as
        :mod:`savegame.ranking` defines it; ``run.json``'s ``best`` and the CLI name the same one."""
        metric = ranking_of(self.keep_policy)
        return best_checkpoint(self.checkpoints, *metric) if metric is not None else None

    # -- saving ------------------------------------------------------------------------------
    def _collect(self, *, wait: bool) -> CheckpointInfo | None:
        """Hear of the background save in flight, if it has ended (``wait``: once it has): it is
        listed and recorded in run.json, or its error is raised, once, with the save policy put
        back to where it was before that save."""
        if not self._saver.in_flight:
            return None
        try:
            info = self._saver.collect(wait=wait)
        except BaseException:
            undo, self._undo_save = self._undo_save, None
            if undo is not None:
                undo()
            raise
        if not self._saver.in_flight:
            self._undo_save = None
        return info

    def _last_save_failed(self, status: str) -> BaseException | None:
        """At finish: wait for the save in flight; its error, to raise once the run is closed
        (None when it committed, or when the run is failing already: then it is a warning)."""
        try:
            self._collect(wait=True)
        except BaseException as error:
            if status == "failed":  # the with-block's own exception goes on; do not hide it
                warnings.warn(f"{self.dir}: the last background save failed too: {error}", stacklevel=3)
                return None
            return error
        return None

    def _wait_at_exit(self) -> None:
        """The interpreter exits without finish(): the save in flight is committed by then (its
        thread is joined first); record it in run.json."""
        try:
            self._collect(wait=True)
        except BaseException as error:  # nowhere left to raise it
            print(f"savegame: {self.dir}: the last save failed: {error}", file=sys.stderr, flush=True)

    def _write(self, context: SaveContext, *, wait: bool = True) -> CheckpointInfo | None:
        """Save now. With ``async_save`` the write goes on in the background and this returns
        None, unless ``wait`` (a preemption's or a stop's save: the process ends after it)."""
        self._collect(wait=True)  # one save in flight: the last one commits (or raises) first
        with self.saves.saving(context) as undo:
            state = {name: obj.state_dict() for name, obj in self._objects.items()}
            state["extras"] = self.extras
            # The checkpoint records each event file's size, which must be on disk before it
            # commits: a sync save fsyncs the files here, an async one on its writing thread.
            background = self._saver.background
            state[RESERVED] = {**self.progress.state_dict(), "config": self.config,
                               "save_policy": self.saves.policy.state_dict(),
                               "log": self._logs.state_dict(fsync=not background)}
            before_commit = partial(fsync_files, self._logs.open_files()) if background else None
            objects = {name: {"class": f"{type(obj).__module__}.{type(obj).__qualname__}", "kind": object_kind(obj)}
                       for name, obj in self._objects.items()}
            # The checkpoint this process resumed from is protected only until a newer one has
            # committed; after that the keep policy treats it like any other, so a run resumed many
            # times ends with the same checkpoints as one that never stopped.
            resumed = self.resumed_from
            self._saver.protected = {resumed.step} if resumed is not None and self.step <= resumed.step else set()
            handle = self._saver.save(state, step=self.step, epoch=self.epoch, metrics=context.metrics,
                                      info={"objects": objects}, before_commit=before_commit)
        if not self._saver.background:
            return handle.result()
        self._undo_save = undo
        return self._collect(wait=True) if wait else None

    def _committed(self, info: CheckpointInfo) -> None:
        """The checkpointer committed ``info`` and applied retention: record it in run.json."""
        self.saves.committed(info.step)
        self.folder.record_save(self._info, info.step, self.checkpoints, ranking_of(self.keep_policy))
        self._call("on_save", info)

    def _before_batch(self) -> None:
        self._collect(wait=False)  # hear of a finished background save (or its error) at the next batch
        self._check_preemption()
        if self._stop_reason is not None:
            raise _Stopped

    def _stop_now(self) -> None:
        """A stop was requested: save this step (unless saved already, or asked not to) and say why."""
        self._collect(wait=True)  # the save in flight may be this step's
        if self._stop_saves and self._saved_this_step() is None:
            self._write(self.saves.context(self.progress))
        self._info["status"], self._info["message"] = "stopped", self._stop_reason
        self.folder.write_info(self._info)

    def _saved_this_step(self) -> CheckpointInfo | None:
        """The checkpoint of the current step if this process already saved it, else None."""
        newest = self.checkpoints[-1] if self.checkpoints else None
        if newest is not None and newest.step == self.step and self.saves.last_step == self.step:
            return newest
        return None

    def _check_preemption(self) -> None:
        if not self._guard.requested:
            return
        signal_name = self._guard.signal_name
        self._collect(wait=True)  # the save in flight may be this step's
        info = self._saved_this_step() or self._write(self.saves.context(self.progress))
        message = (f"stopped by {signal_name} at step {self.step} (epoch {self.epoch}, counted from 0); saved "
                   f"{info.path}. To resume, run the same command again: {rerun_command()}")
        self._info["status"], self._info["message"] = "preempted", message
        self.folder.write_info(self._info)
        print(f"savegame: {message}", file=sys.stderr, flush=True)
        raise SystemExit(0)

    def _writer_scalar(self, tag: str, host: Any, step: int | None) -> None:
        """``run.writer.add_scalar(...)``: the hooks hear it as they hear ``run.log``."""
        self._call("on_log", {tag: host}, self.step if step is None else step, every_step=True, reduce=None)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        for hook in self.hooks:
            getattr(hook, method)(self, *args, **kwargs)

    # -- resuming ----------------------------------------------------------------------------
    def _apply_run_state(self) -> None:
        """The run's own state in the chosen checkpoint: steps, epochs, loader positions, extras,
        the save policy's memory (nothing when starting fresh)."""
        chosen = self._resumption.chosen
        self._saver.checkpoints = chosen.remaining
        self.resumed_from = chosen.checkpoint
        if chosen.checkpoint is None:
            return
        run_state = chosen.state[RESERVED]
        self.progress.load_state_dict(run_state)
        self.extras = dict(chosen.state.get("extras") or {})
        self.saves.resumed(self.progress, run_state.get("save_policy") or {})

    def _restore(self, name: str, obj: Any) -> None:
        if self._resumption.restore(name, obj, self._objects, may_fall_back=not self._begun):
            self._apply_run_state()  # it fell back to an earlier checkpoint
        note_kept_hyperparameters(self._info, self._config_changes, name, obj, self.resumed_from.path)

    def _begin(self) -> None:
        """Start the run for real, once: the first epochs(), iterate(), save(), log(), writer use,
        or a clean finish().

        Until then a resume changes no file, so a track() that finds the checkpoint does not
        fit loses nothing. Now: supersede an explicit resume's newer checkpoints, cut the logs
        back to the checkpoint, record the resume, say so, and start the hooks."""
        if self._begun:
            return
        self._begun = True
        resumed, chosen = self.resumed_from, self._resumption.chosen
        self._resumption.supersede()
        # A checkpoint in another folder (resume=path) records that folder's event files, not ours.
        own = resumed is not None and resumed.path.resolve().parent.parent == self.dir.resolve()
        saved_log = (chosen.state[RESERVED].get("log") or {}) if own else {}
        self._logs = RunLog(self.dir, saved=saved_log, step=self.step, resumed=resumed is not None,
                            epoch_finished=self.progress.start_epoch > self.epoch,
                            on_scalar=self._writer_scalar if self.hooks else None)
        if resumed is not None:
            record_resume(self._info, self.step, resumed.path.name, config_changed=bool(self._config_changes))
            self.folder.write_info(self._info)
            notice(f"resumed {self.dir} from step {self.step} ({position(chosen.state[RESERVED])})")
        if self.config and not self._logs.has_history and not any(h.writes_hparams for h in self.hooks):
            self.writer.add_hparams(hparams_from_config(self.config), {})
        self._call("on_start")
        for name, obj in self._objects.items():
            self._call("on_track", name, obj)

    def _start_loop(self) -> None:
        """The loop starts: every object is tracked, so the checkpoint can be closed."""
        self._begin()
        self._resumption.close()


class _Stopped(Exception):
    """Raised before a batch is fetched once the run was asked to stop."""


def _doctor_hooks(doctor: Any) -> list[Hook]:
    if doctor is False or doctor is None:
        return []
    from .doctor.hook import doctor_hooks  # the doctor's modules load only for runs that use it

    return doctor_hooks(doctor)
