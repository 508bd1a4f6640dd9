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
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

import torch

from .atomic import fsync_files
from .checkpoint.layout import CheckpointInfo, aside_path, checkpoint_dirname
from .checkpoint.policy import Always, Keep, KeepPolicy, SaveContext, SavePolicy, ranking_of
from .checkpoint.store import plain_metrics
from . import sharded
from .checkpointer import Checkpointer
from .folder import RunFolder
from .hooks import Hook, check_hooks
from .io import object_kind
from .log.runlog import RunLog
from .log.writer import SummaryWriter
from .messages import notice, rerun_command
from .messages import warn
from .preemption import PreemptionGuard
from .progress import Progress, position
from .ranks import NO_STOP, STOP_AND_SAVE, STOP_WITHOUT_SAVE, Ranks
from .ranking import best_checkpoint
from .errors import CheckpointCorruptError, DistributedNotSupportedError, LogWriteError, RunFolderGoneError
from .resumption import (RESERVED, Resumption, check_resume_argument, note_kept_hyperparameters, open_run_info,
                         set_aside)
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
        self._ranks = Ranks.of_this_process()  # under torchrun: rank 0 owns the folder (before it is touched)
        self.dir = Path(dir)
        self.folder = RunFolder(self.dir)
        self.config = dict(config or {})
        self.saves = SaveTiming(save if save is not None else Always())
        self.keep_policy = keep if keep is not None else Keep(last=3)
        # Hooks watch the logs and the saves, which are rank 0's: the other ranks run none.
        self.hooks: list[Hook] = check_hooks(hooks) + _doctor_hooks(doctor) if self._ranks.leads else []
        self.extras: dict[str, Any] = {}  # the user's own resumable values, saved with each checkpoint
        self.progress = Progress()
        self.resumed_from: CheckpointInfo | None = None
        self._objects: dict[str, Any] = {}
        # tracked objects with DTensor state (FSDP2), saved through torch.distributed.checkpoint
        # by every rank: name -> the model (an optimizer's), or None (a model)
        self._sharded: dict[str, Any] = {}
        self._finished = False
        self._stop_reason: str | None = None  # request_stop(): end the loops, mark "stopped"
        self._stop_saves = False  # whether the stop saves the current state (not a diverged one)
        self._agreed_preemption = self._agreed_stop = False  # a torchrun job's, as of its last save point
        self._agreed_at: int | None = None  # the step of that save point
        self._begun = False
        self._undo_save: Callable[[], None] | None = None  # the save policy's undo, for the save in flight

        self._saver = Checkpointer(self.folder, keep=self.keep_policy, on_committed=self._committed,
                                   background=async_save and self._ranks.leads, incremental=incremental,
                                   list_now=False)
        self._lock = self.folder.lock() if self._ranks.leads else None
        # Rank 0 opens the folder and chooses the checkpoint; every rank resumes from that one (or
        # raises rank 0's error: a locked folder stops the whole job).
        chosen, listed = self._ranks.share(partial(self._open_folder, resume) if self._ranks.leads else None)
        if not self._ranks.leads:
            self._follow(chosen, listed)
        self._guard = PreemptionGuard()
        if handle_signals:
            self._guard.install()
        if async_save:  # a script that never calls finish() still commits its last save's run.json
            atexit.register(self._wait_at_exit)
        if self.resumed_from is None:
            self._begin()  # a new run has nothing to check against: start at once

    def _open_folder(self, resume: str | int | Path) -> tuple[str | None, list[CheckpointInfo]]:
        """Take the folder (rank 0, or the only process): lock it, clean its temp folders, open
        ``run.json``, choose the checkpoint to resume from; returns its path and the checkpoints."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            # We hold the lock, so every temp folder is stale, even one whose pid is ours again
            # (containers restart with the same pid): clean them all, put back interrupted overwrites.
            self.folder.checkpoint_root.mkdir(exist_ok=True)
            self.folder.clean_temps(include_live=True)
            damaged: list = []
            self._saver.checkpoints = self.folder.checkpoints(damaged=damaged)
            for path, error in damaged:  # a damaged manifest or COMMIT: set aside as any damaged one
                set_aside(path, error)   # (a save of the same step would otherwise meet it)
            self._info, self._config_changes = open_run_info(self.folder, self.config, self._saver.checkpoints)
            self._resumption = Resumption(self.dir, self._saver.checkpoints, resume)
            self._apply_run_state()
            self.folder.write_info(self._info)
        except BaseException:
            if getattr(self, "_resumption", None) is not None:
                self._resumption.close()
            self._lock.release()
            raise
        chosen = self._resumption.chosen.checkpoint
        return (str(chosen.path) if chosen is not None else None), list(self.checkpoints)

    def _follow(self, chosen: str | None, listed: list[CheckpointInfo]) -> None:
        """A rank other than 0: resume from the checkpoint rank 0 chose, reading it only."""
        self._info, self._config_changes = {"status": "running", "message": None}, {}
        self._resumption = Resumption(self.dir, [], Path(chosen) if chosen is not None else "never")
        self._apply_run_state()
        self._saver.checkpoints = listed

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
            if sharded.is_sharded(obj):
                self._sharded[name] = None if isinstance(obj, torch.nn.Module) else \
                    sharded.model_of(name, obj, self._objects)
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

        if self._ranks.many:
            raise DistributedNotSupportedError(
                f"run.preflight() in rank {self._ranks.rank} of a {self._ranks.size}-process torchrun job: its checks "
                "train the model alone, which a DDP or FSDP model cannot do on one rank. Check the setup as one "
                "process before launching the job (`savegame preflight ...`, or the same script run with python and "
                "a plain model), then launch it with torchrun without run.preflight().")
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
            if self._ranks.many:
                self._agree()  # the doctor (rank 0's) may have asked to stop; a rank may be preempted
            self._check_preemption()
            if self._stopping():
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
        In a torchrun job every rank calls it at the same points, with the same ``force``.
        """
        self._begin()
        self._collect(wait=False)  # a background save that failed raises here
        context = self.saves.context(self.progress, plain_metrics(metrics) if metrics else NO_METRICS)
        decided = self._decide(context, force)
        preempted = self._preempted()
        if preempted:
            self._collect(wait=True)  # the save in flight may be this step's
        info = self._write(context, wait=preempted) if decided or (preempted and not self._saved_this_step()) \
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
        if status == "finished" and self._ranks.many:
            self._agree()  # a stop asked for on one rank since the last save point: every rank stops
        stopped = status == "finished" and self._stopping()
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
                self._close_logs(status)
            self._info["status"] = status
            self._info["message"] = message
            if self._ranks.leads and self._folder_still_ours():
                self.folder.write_info(self._info)
            self._saver.close()  # nothing is in flight now: this stops the background thread
        finally:
            if self._lock is not None:
                self._lock.release()
        if save_error is not None:
            raise save_error

    def _close_logs(self, status: str) -> None:
        """Close the logs; a log error of a failing run is a warning: the with-block's own
        exception (a save that found the folder gone, say) is the one to see."""
        try:
            self._logs.close(step=self.step, hparams_status=status if self.config else None)
        except LogWriteError as error:
            if status != "failed":
                raise
            warn(f"{self.dir}: the logs could not be closed either: {error}", RuntimeWarning)

    def _folder_still_ours(self) -> bool:
        """At finish: False (with a warning) when the run folder was removed or replaced under
        the run, whose run.json is then not written (it would recreate the folder)."""
        try:
            self._lock.ensure_held(f"its end ({self._info['status']}) is not recorded in run.json")
        except RunFolderGoneError as gone:
            warn(str(gone), RuntimeWarning)
            return False
        return True

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
                warn(f"{self.dir}: the last background save failed too: {error}")
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
        """Save now. In a torchrun job every rank calls it at once: each sends its own progress
        to rank 0, which writes the checkpoint, and all get its result or raise its error. With
        ``async_save`` the write goes on in the background and this returns None, unless ``wait``
        (a preemption's or a stop's save: the process ends after it)."""
        self._collect(wait=True)  # one save in flight: the last one commits (or raises) first
        progress = self._ranks.gather(self.progress.state_dict()) if self._ranks.many else None
        with self.saves.saving(context) as undo:
            attach = self._save_sharded() if self._sharded else None
            if not self._ranks.many:
                return self._persist(context, undo, None, wait=wait, attach=attach)
            lead = partial(self._persist_for_ranks, context, undo, progress, wait=wait, attach=attach) \
                if self._ranks.leads else None
            listed, info = self._ranks.share(lead)
        if not self._ranks.leads:  # rank 0 wrote it (or has it in flight): every rank knows the same list
            self._saver.checkpoints = listed
        return info

    def _save_sharded(self) -> Callable[[Path], dict[str, Any]] | None:
        """Every rank writes its shards of the sharded objects (DCP) into a temp folder rank 0
        made; returns, on rank 0, what its commit calls to take them in (None elsewhere). A
        failure on any rank raises on every rank; the temp folder is cleaned at the next start."""
        root = self.folder.checkpoint_root
        stage = Path(self._ranks.share(
            (lambda: str(aside_path(root / checkpoint_dirname(self.step), "tmp"))) if self._ranks.leads else None))
        if self._ranks.leads:
            stage.mkdir()
        states = {name: sharded.state_of(self._objects[name], model) for name, model in self._sharded.items()}
        sharded.save_tensors({name: sharded.tensors_of(state) or {} for name, state in states.items()}, stage,
                             self._ranks.group)
        parts = self._ranks.gather(sharded.hash_my_part(stage, self._ranks.rank, self._ranks.size))
        if not self._ranks.leads:
            return None
        return sharded.attacher(stage, {name: sharded.skeleton_of(state) for name, state in states.items()},
                                self._ranks.size, {name: entry for part in parts for name, entry in part.items()})

    def _persist_for_ranks(self, context: SaveContext, undo: Callable[[], None], progress: list[dict[str, Any]], *,
                           wait: bool, attach: Any) -> tuple[list[CheckpointInfo], CheckpointInfo | None]:
        """Rank 0's part of a torchrun job's save; returns what the other ranks hear of it."""
        info = self._persist(context, undo, progress, wait=wait, attach=attach)
        return list(self.checkpoints), info

    def _persist(self, context: SaveContext, undo: Callable[[], None], progress: list[dict[str, Any]] | None, *,
                 wait: bool, attach: Callable[[Path], dict[str, Any]] | None = None) -> CheckpointInfo | None:
        """The folder owner's part of a save: every tracked object (the sharded ones: what
        ``attach`` brings in), the run's own state and each rank's ``progress`` (None in one
        process); returns the committed checkpoint (None while a background save is in flight)."""
        self._lock.ensure_held(f"the checkpoint of step {self.step} was not written")
        state = {name: obj.state_dict() for name, obj in self._objects.items() if name not in self._sharded}
        state["extras"] = self.extras
        # The checkpoint records each event file's size, which must be on disk before it
        # commits: a sync save fsyncs the files here, an async one on its writing thread.
        background = self._saver.background
        state[RESERVED] = {**self.progress.state_dict(), "config": self.config,
                           "save_policy": self.saves.policy.state_dict(),
                           "log": self._logs.state_dict(fsync=not background)}
        if progress is not None:  # each rank's own random state and loader positions (rank 0's: above)
            state[RESERVED]["world_size"] = len(progress)
            state[RESERVED]["ranks"] = {str(rank): own for rank, own in enumerate(progress) if rank > 0}
        before_commit = partial(fsync_files, self._logs.open_files()) if background else None
        objects = {name: {"class": f"{type(obj).__module__}.{type(obj).__qualname__}", "kind": object_kind(obj)}
                   for name, obj in self._objects.items()}
        # The checkpoint this process resumed from is protected only until a newer one has
        # committed; after that the keep policy treats it like any other, so a run resumed many
        # times ends with the same checkpoints as one that never stopped.
        resumed = self.resumed_from
        self._saver.protected = {resumed.step} if resumed is not None and self.step <= resumed.step else set()
        handle = self._saver.save(state, step=self.step, epoch=self.epoch, metrics=context.metrics,
                                  info={"objects": objects}, before_commit=before_commit, attach=attach)
        if not background:
            return handle.result()
        self._undo_save = undo
        return self._collect(wait=True) if wait else None

    def _committed(self, info: CheckpointInfo) -> None:
        """The checkpointer committed ``info`` and applied retention: record it in run.json."""
        self.folder.record_save(self._info, info.step, self.checkpoints, ranking_of(self.keep_policy))
        self._call("on_save", info)

    # -- what every rank must agree on -------------------------------------------------------
    def _decide(self, context: SaveContext, force: bool) -> bool:
        """Whether this ``run.save()`` saves. In a torchrun job a policy of step and epoch counters
        answers the same on every rank, so each asks its own and the ranks meet only to save and
        every ``CHECK_EVERY`` steps (one all-reduce costs 0.4-0.7 ms between two CPU ranks); any
        other policy is asked on rank 0, which tells every rank. ``force`` must be the same on every rank."""
        policy = self.saves.policy
        if not self._ranks.many:
            return policy.should_save(context) or force or self._stop_saves
        if policy.decided_by_counters and not force:
            decided = policy.should_save(context)
            if decided or self._flags_due():
                decided = self._agree(save=decided)
            return decided
        return self._agree(save=(self._ranks.leads and policy.should_save(context)) or force or self._stop_saves)

    def _flags_due(self) -> bool:
        """Whether the ranks compare their preemption and stop flags here: once at every
        ``CHECK_EVERY``-th step (the same points on every rank, whichever call comes first)."""
        return self._ranks.checks_preemption_now(self.step) and self._agreed_at != self.step

    def _agree(self, save: bool = False) -> bool:
        """A torchrun job's save point: every rank learns whether to save now (rank 0's policy),
        and whether any rank was preempted or asked to stop; returns whether to save."""
        stop = NO_STOP if self._stop_reason is None else STOP_AND_SAVE if self._stop_saves else STOP_WITHOUT_SAVE
        agreed = self._ranks.agree(save=save, preempted=self._guard.requested, stop=stop)
        self._agreed_at = self.step
        self._agreed_preemption = agreed.preempted
        if agreed.stop != NO_STOP:
            if self._stop_reason is None:
                self.request_stop("another rank of this torchrun job asked the run to stop")
            self._stop_saves, self._agreed_stop = agreed.stop == STOP_AND_SAVE, True
        return agreed.save or self._agreed_stop and self._stop_saves

    def _preempted(self) -> bool:
        """Whether to save and exit now: a signal this process caught, or in a torchrun job one that
        any rank caught, as of the last save point (every rank then exits at the same step)."""
        return self._agreed_preemption if self._ranks.many else self._guard.requested

    def _stopping(self) -> bool:
        """Whether a stop was asked for (in a torchrun job: agreed at the last save point)."""
        return self._agreed_stop if self._ranks.many else self._stop_reason is not None

    def _before_batch(self) -> None:
        self._collect(wait=False)  # hear of a finished background save (or its error) at the next batch
        if self._ranks.many and self._flags_due():
            self._agree()
        self._check_preemption()
        if self._stopping():
            raise _Stopped

    def _stop_now(self) -> None:
        """A stop was requested: save this step (unless saved already, or asked not to) and say why."""
        self._collect(wait=True)  # the save in flight may be this step's
        if self._stop_saves and not self._saved_this_step():
            self._write(self.saves.context(self.progress))
        self._info["status"], self._info["message"] = "stopped", self._stop_reason
        if self._ranks.leads:
            self.folder.write_info(self._info)

    def _saved_this_step(self) -> bool:
        """Whether this step is saved already (by this process, or in a torchrun job by rank 0 at a
        save point every rank took part in)."""
        if self.saves.last_step != self.step:
            return False
        return not self._ranks.leads or bool(self.checkpoints) and self.checkpoints[-1].step == self.step

    def _check_preemption(self) -> None:
        if not self._preempted():
            return
        signal_name = self._guard.signal_name or "a signal to another rank"
        self._collect(wait=True)  # the save in flight may be this step's
        if not self._saved_this_step():
            self._write(self.saves.context(self.progress))
        self._info["status"] = "preempted"
        if self._ranks.leads:  # in a torchrun job, rank 0 says it for all
            self._info["message"] = message = (
                f"stopped by {signal_name} at step {self.step} (epoch {self.epoch}, counted from 0); saved "
                f"{self.checkpoints[-1].path}. To resume, run the same command again: {rerun_command()}")
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
        self.progress.load_state_dict(self._ranks.own_progress(run_state))
        self.extras = dict(chosen.state.get("extras") or {})
        self.saves.resumed(self.progress, run_state.get("save_policy") or {})

    def _restore(self, name: str, obj: Any) -> None:
        skeleton = sharded.skeletons_in(self._resumption.chosen.reader.manifest).get(name) \
            if self._resumption.chosen.reader is not None else None
        if skeleton is not None:  # saved sharded: DCP reads it into this job's sharding (or whole)
            self._restore_sharded(name, obj, skeleton)
            return
        many = self._ranks.many  # every rank reads the same checkpoint: none falls back alone
        try:
            fell_back = self._resumption.restore(name, obj, self._objects, may_fall_back=not self._begun and not many)
        except CheckpointCorruptError as error:
            if many and self._ranks.leads and self._resumption.mode == "auto":
                set_aside(self.resumed_from.path, error)  # the job's next start falls back past it
            raise
        if fell_back:
            self._apply_run_state()  # it fell back to an earlier checkpoint
        note_kept_hyperparameters(self._info, self._config_changes, name, obj, self.resumed_from.path)

    def _restore_sharded(self, name: str, obj: Any, skeleton: Any) -> None:
        """Every rank: ask ``obj`` for its state in this job's sharding (the template), let DCP
        fill its tensors from the checkpoint's ``sharded/`` files, put the saved values around them."""
        if name in self._resumption.restored:
            raise ValueError(f"run.track({name}=...): {name!r} is tracked already; track each object once")
        model = None if isinstance(obj, torch.nn.Module) else sharded.model_of(name, obj, self._objects)
        template = sharded.template_for(skeleton, sharded.state_of(obj, model), name) or {}
        sharded.load_tensors({name: template}, self.resumed_from.path / sharded.SHARDED_DIR, self._ranks.group)
        sharded.load_state(obj, model, sharded.filled(skeleton, template))
        self._resumption.restored.add(name)
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
        leads = self._ranks.leads  # the other ranks of a torchrun job never write the folder
        if leads:
            self._resumption.supersede()
        # A checkpoint in another folder (resume=path) records that folder's event files, not ours.
        own = resumed is not None and resumed.path.resolve().parent.parent == self.dir.resolve()
        saved_log = (chosen.state[RESERVED].get("log") or {}) if own else {}
        try:
            self._logs = RunLog(self.dir, saved=saved_log, step=self.step, resumed=resumed is not None,
                                epoch_finished=self.progress.start_epoch > self.epoch,
                                on_scalar=self._writer_scalar if self.hooks else None, owner=leads)
        except BaseException:
            self._begun = False  # no logs to close: finish() must not reach for them, hiding this error
            raise
        if not leads:
            return
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
