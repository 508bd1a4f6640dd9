"""I/O faults: ENOSPC and EIO at every file operation of a save (its retention and the event
file's fsync included) and of the event writer, through :mod:`faultfs`; the same for real on a
small tmpfs (a full disk, a read-only one); and a run folder deleted under a running job.

Each case must end with a clear error (an ``OSError`` or savegame's own, naming a path in the run
folder and what went wrong), nothing committed half-written, the older checkpoints intact (the
same bytes), and the folder usable: a new Run resumes from an intact checkpoint and saves.
Saves stop the loop with the error (the caller's ``with`` block ends, ``run.json`` says
``failed``); a log write that fails is a warning and training goes on (README: "When things go
wrong").
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import torch

import savegame
from savegame.checkpoint.layout import is_committed
from savegame.checkpoint.store import verify_checkpoint

import faultfs
from kills import class_regex, op_class
from tally import Tally

ERRNOS = {"ENOSPC": errno.ENOSPC, "EIO": errno.EIO}


def _model() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                              torch.nn.ReLU(), torch.nn.Linear(512, 2))
    net[2].requires_grad_(False)  # 1 MiB frozen: an incremental save hard-links it
    return net, torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)


def _step(net: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    loss = net(torch.randn(4, 8)).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def _open(run_dir: Path, async_save: bool) -> tuple[savegame.Run, torch.nn.Module, torch.optim.Optimizer]:
    net, opt = _model()
    run = savegame.Run(run_dir, save=savegame.Never(), keep=savegame.Keep(last=2), async_save=async_save,
                       handle_signals=False)
    run.track(model=net, optimizer=opt)
    return run, net, opt


def _checkpoints(run_dir: Path) -> dict[str, dict[str, str]]:
    """{committed checkpoint: {file: sha256}}."""
    found = {}
    root = run_dir / "checkpoints"
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if re.fullmatch(r"step-\d+", path.name) and is_committed(path):
            found[path.name] = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir())}
    return found


def prepare(folder: Path) -> Path:
    """A run folder with three committed checkpoints (steps 1-3; Keep(last=2) kept 2 and 3)."""
    run_dir = folder / "template"
    run, net, opt = _open(run_dir, async_save=False)
    with run:
        for _ in run.iterate(range(3)):
            _step(net, opt)
            run.log("loss", 1.0)
            run.save(force=True)
    return run_dir


def _save_under(run_dir: Path, fault: faultfs.Fault | None, async_save: bool) -> tuple[BaseException | None, list,
                                                                                        list[str]]:
    """Resume ``run_dir``, train a step, and save under ``fault``; (the error, the ops, warnings)."""
    error, files = None, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            run, net, opt = _open(run_dir, async_save)
            with run:
                for _ in run.iterate(range(100)):  # resumed at batch 3: one more step
                    _step(net, opt)
                    run.log("loss", 2.0)
                    with faultfs.FaultyFiles(run_dir, fault) as files:
                        run.save(force=True)
                        run.log("loss", 3.0)
                        run.writer.flush()
                        if async_save:
                            run.save(force=True)  # the background save's error surfaces here (or at finish)
                    break
        except BaseException as raised:  # noqa: BLE001 (the case decides what is right)
            error = raised
    return error, files.trace if files else [], [str(w.message) for w in caught]


def _clear(error: BaseException, run_dir: Path, errno_code: int) -> bool:
    """An OSError of that errno, or savegame's own error, naming a path in the run folder and
    what went wrong."""
    text = "".join([str(error), *getattr(error, "__notes__", [])])
    ours = isinstance(error, savegame.errors.SavegameError) and os.strerror(errno_code) in text
    return (ours or isinstance(error, OSError) and error.errno == errno_code) and str(run_dir) in text


def save_faults(workdir: Path, scale: str, seed: int) -> Tally:
    """ENOSPC and EIO at each file op of a save; see the module docstring."""
    tally = Tally("I/O faults: a save, its retention, the event file", "faults injected")
    workdir = Path(workdir)
    template = prepare(workdir)
    kinds_hit: set[str] = set()
    for async_save in (False, True):
        dry = workdir / f"dry-{async_save}"
        shutil.copytree(template, dry)
        error, trace, _ = _save_under(dry, None, async_save)
        if error is not None:
            raise RuntimeError(f"the storm's dry run failed: {error!r}")
        ops = _choose(trace, scale)
        for name, code in ERRNOS.items():
            for index, op in ops:
                case = workdir / f"case-{async_save}-{name}-{index}"
                shutil.copytree(template, case)
                before = _checkpoints(case)
                # the op by its class and its number in it: the log thread's ops interleave freely
                name_of = op_class(op.kind, op.path, op.thread)
                kind, where, thread = class_regex(name_of)
                nth = sum(1 for o in trace[:index + 1] if op_class(o.kind, o.path, o.thread) == name_of)
                fault = faultfs.Fault(kind, code, nth=nth, where=where, thread=thread)
                error, _, messages = _save_under(case, fault, async_save)
                tally.tried += 1
                label = f"{name} at {op.kind} {op.path} ({'async' if async_save else 'sync'} save)"
                if fault.hits == 0:
                    tally.fail("other", f"{label}: the op was not reached")
                    continue
                kinds_hit.add(op.kind)
                _judge(tally, label, case, before, error, messages, code, log_op="tfevents" in op.path
                       and op.kind != "fsync")
                shutil.rmtree(case, ignore_errors=True)
    tally.notes.append(f"{len(ops)} ops of a save x {len(ERRNOS)} errnos x sync/async; kinds: {sorted(kinds_hit)}")
    return tally


def _choose(trace: list, scale: str) -> list[tuple[int, faultfs.Op]]:
    """Every op of the trace, except that of a run of writes to one file only the first, a middle
    one and the last are taken at "ci" scale (every one at "torture")."""
    chosen, i = [], 0
    while i < len(trace):
        j = i
        while j + 1 < len(trace) and trace[j + 1].kind == "write" and trace[j + 1].path == trace[i].path \
                and trace[i].kind == "write":
            j += 1
        picks = range(i, j + 1) if scale == "torture" else sorted({i, (i + j) // 2, j})
        chosen += [(k, trace[k]) for k in picks]
        i = j + 1
    return chosen


def _judge(tally: Tally, label: str, case: Path, before: dict, error: BaseException | None, messages: list[str],
           code: int, *, log_op: bool) -> None:
    after = _checkpoints(case)
    for name, files in after.items():
        problems = verify_checkpoint(case / "checkpoints" / name)
        if problems:
            tally.fail("corrupt_resume", f"{label}: committed {name} is damaged: {problems[:2]}")
    lost = [name for name in before if name not in after and name != min(before)]  # the oldest: retention's
    changed = [name for name in before if name in after and after[name] != before[name]]
    if lost or changed:
        tally.fail("data_lost", f"{label}: older checkpoints lost {lost} or changed {changed}")
    if log_op:  # a log write: a warning, training goes on
        if error is not None:
            tally.fail("other", f"{label}: a failed log write stopped training: {error!r}")
        elif not any("log" in m and ("No space" in m or "Input/output" in m) for m in messages):
            tally.fail("other", f"{label}: a failed log write was not reported: {messages}")
    elif error is None:  # absorbed (a link that fell back to a write, a mkdir of a folder that is there):
        if "step-000004" not in after:  # then the save must really have happened
            tally.fail("other", f"{label}: no error, but no checkpoint of step 4 either")
    elif not _clear(error, case, code):
        tally.fail("other", f"{label}: an unclear error: {type(error).__name__}: {error}")
    # the folder is usable: a new Run resumes from an intact checkpoint and saves
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            run, net, opt = _open(case, async_save=False)
            with run:
                for _ in run.iterate(range(100)):
                    _step(net, opt)
                    run.save(force=True)
                    break
            resumed = run.resumed_from.step if run.resumed_from else None
        except Exception as again:  # noqa: BLE001
            tally.fail("other", f"{label}: the folder is unusable after the fault: {again!r}")
            return
    if resumed not in (3, 4):
        tally.fail("data_lost", f"{label}: the next run resumed from step {resumed}, not 3 or 4")
    leftovers = [p.name for p in (case / "checkpoints").iterdir() if "." in p.name]
    if leftovers:
        tally.fail("other", f"{label}: temp folders left after the next start: {leftovers}")


def event_writer_faults(workdir: Path, scale: str, seed: int) -> Tally:
    """ENOSPC (the disk stays full) and EIO (once) at the event file's create, at its writes and
    at its fsyncs, while a loop trains 30 steps, logs each and saves every 10: the loop must go
    on to its end, with its checkpoints; the loss is warned about, and the run's end raises it as
    ``LogWriteError`` (README: a log error never fails a checkpoint)."""
    tally = Tally("I/O faults: the event writer", "faults injected")
    nths = {"create": [1], "write": [1, 2, 5] if scale == "ci" else [1, 2, 3, 4, 5],
            "fsync": [1, 2] if scale == "ci" else [1, 2, 3, 4]}
    for name, code in ERRNOS.items():
        for kind, numbers in nths.items():
            for nth in numbers:
                run_dir = Path(workdir) / f"log-{name}-{kind}-{nth}"
                fault = faultfs.Fault(kind, code, nth=nth, where=r"tfevents", sticky=code == errno.ENOSPC)
                label = f"{name} at {kind} #{nth} of the event file"
                tally.tried += 1
                _log_under(tally, label, run_dir, fault, code)
    return tally


def _log_under(tally: Tally, label: str, run_dir: Path, fault: faultfs.Fault, code: int) -> None:
    net, opt = _model()
    error, steps = None, 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with faultfs.FaultyFiles(run_dir, fault):
            try:
                run = savegame.Run(run_dir, save=savegame.EverySteps(10), handle_signals=False)
                with run:
                    run.track(model=net, optimizer=opt)
                    for _ in run.iterate(range(30)):
                        _step(net, opt)
                        run.log("loss", float(steps))
                        run.save()
                        steps += 1
            except Exception as raised:  # noqa: BLE001
                error = raised
    if fault.hits == 0:
        tally.fail("other", f"{label}: the op was not reached")
        return
    if steps == 0 and isinstance(error, OSError) and error.errno == code and "tfevents" in str(error):
        return  # the event file could not be made: the run fails at its start, as torch's writer does
    if steps != 30:
        tally.fail("other", f"{label}: training stopped at step {steps}: {error!r}")
    if error is not None and not (isinstance(error, savegame.LogWriteError) and os.strerror(code) in str(error)
                                  and "tfevents" in str(error)):
        tally.fail("other", f"{label}: an unclear error: {error!r}")
    if not any("log" in str(w.message) and os.strerror(code) in str(w.message) for w in caught):
        tally.fail("other", f"{label}: the lost log writes were not warned about")
    kept = _checkpoints(run_dir)
    if sorted(kept) != ["step-000010", "step-000020", "step-000030"]:
        tally.fail("data_lost", f"{label}: checkpoints {sorted(kept)}, expected steps 10, 20, 30")
    for name in kept:
        if verify_checkpoint(run_dir / "checkpoints" / name):
            tally.fail("corrupt_resume", f"{label}: {name} is damaged")
    shutil.rmtree(run_dir, ignore_errors=True)


# -- for real: a small tmpfs ----------------------------------------------------------------
def _mount(point: Path, size: str) -> bool:
    point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True)
    return done.returncode == 0


def real_disk_faults(workdir: Path, scale: str, seed: int) -> Tally:
    """A full tmpfs (sync and async saves), a read-only one, and a run folder removed under a
    running job. Needs root for the mounts (else those cases are skipped and said so)."""
    tally = Tally("I/O faults for real: full and read-only tmpfs, folder removed", "faults injected")
    point = Path(workdir) / "disk"
    if _mount(point, "3m"):
        try:
            for async_save in (False, True):
                _full_disk(tally, point / f"run-{async_save}", async_save)
            _read_only(tally, point)
        finally:
            subprocess.run(["umount", "-l", str(point)], check=False)
    else:
        tally.notes.append("no tmpfs could be mounted (not root): the full and read-only disks were skipped")
    _folder_removed(tally, Path(workdir) / "removed")
    return tally


def _full_disk(tally: Tally, run_dir: Path, async_save: bool) -> None:
    """3 MiB: the first checkpoint (~1.1 MiB) fits, the second full one does not (KeepLast(2)
    with incremental=False: every save writes every tensor)."""
    label = f"a full tmpfs ({'async' if async_save else 'sync'} saves)"
    torch.manual_seed(0)
    net = torch.nn.Linear(512, 512)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    error = None
    run = savegame.Run(run_dir, save=savegame.Never(), keep=savegame.Keep(last=2), async_save=async_save,
                       incremental=False, handle_signals=False)
    run.track(model=net, optimizer=opt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with run:
                for _ in run.iterate(range(4)):
                    _step_linear(net, opt)
                    run.save(force=True)
        except OSError as raised:
            error = raised
    tally.tried += 1
    if error is None or error.errno != errno.ENOSPC or str(run_dir) not in str(error):
        tally.fail("other", f"{label}: expected a clear ENOSPC error, got {error!r}")
    kept = _checkpoints(run_dir)
    for name in kept:
        if verify_checkpoint(run_dir / "checkpoints" / name):
            tally.fail("corrupt_resume", f"{label}: {name} is damaged")
    if not kept:
        tally.fail("data_lost", f"{label}: the checkpoint that fitted is gone")
    if [p.name for p in (run_dir / "checkpoints").iterdir() if ".tmp-" in p.name]:
        tally.fail("other", f"{label}: the failed save's temp folder was left, holding the space")
    shutil.rmtree(run_dir, ignore_errors=True)


def _step_linear(net, opt) -> None:
    loss = net(torch.randn(2, 512)).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def _read_only(tally: Tally, point: Path) -> None:
    run_dir = point / "ro"
    net, opt = _model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with savegame.Run(run_dir, save=savegame.Never(), handle_signals=False) as run:
            run.track(model=net, optimizer=opt)
            run.save(force=True)
    before = _checkpoints(run_dir)
    subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)
    try:
        for what in ("resume", "load"):
            tally.tried += 1
            try:
                if what == "resume":
                    run, net, opt = _open(run_dir, async_save=False)
                    with run:
                        run.save(force=True)
                else:
                    savegame.load(run_dir / "checkpoints" / next(iter(before)))  # reading works on a read-only disk
                    continue
                tally.fail("other", "a read-only run folder was opened for writing without an error")
            except OSError as error:
                if error.errno != errno.EROFS or str(run_dir) not in str(error):
                    tally.fail("other", f"a read-only run folder: an unclear error {error!r}")
            except Exception as error:  # noqa: BLE001
                tally.fail("other", f"a read-only run folder ({what}): {error!r}")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(point)], check=True)
    if _checkpoints(run_dir) != before:
        tally.fail("data_lost", "a read-only run folder: its checkpoints changed")


def _folder_removed(tally: Tally, run_dir: Path) -> None:
    net, opt = _model()
    tally.tried += 1
    error = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with savegame.Run(run_dir, save=savegame.Never(), handle_signals=False) as run:
                run.track(model=net, optimizer=opt)
                for _ in run.iterate(range(3)):
                    _step(net, opt)
                    run.log("loss", 1.0)
                    run.save(force=True)
                    if run.step == 2:
                        shutil.rmtree(run_dir)
        except Exception as raised:  # noqa: BLE001
            error = raised
    if not isinstance(error, savegame.RunFolderGoneError) or str(run_dir) not in str(error):
        tally.fail("other", f"a run folder removed under a running job: expected RunFolderGoneError, got {error!r}")
    if run_dir.exists():
        tally.fail("other", f"a run folder removed under a running job was recreated: {sorted(run_dir.rglob('*'))}")
