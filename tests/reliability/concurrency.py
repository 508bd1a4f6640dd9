"""Concurrency: processes that share a run folder, a study or a log folder, all real processes.

* :func:`two_processes_one_folder`: two processes open one run folder at the same moment (or the
  second a moment later): exactly one trains, the other gets :class:`savegame.RunLockedError`
  naming the folder and the holder's pid, and the winner's run ends intact (its checkpoints
  verify, its curves hold each step once, no file of the loser in the folder). And a process
  started after the holder was SIGKILLed takes the stale lock and resumes.
* :func:`two_sweeps_one_study`: two ``savegame sweep run`` processes on one study at once: the
  trials asked for, none lost, none run twice (each trial folder ran once, from start to end),
  each trial's folder intact, the journal whole and readable by Optuna, no two trials drawing
  the same parameters.
* :func:`readers_while_writing`: while a training process saves every few steps (and the keep
  policy deletes), ``savegame ls``, ``savegame doctor``, a process that verifies and loads every
  checkpoint it lists, and ``savegame board``'s TensorBoard (its HTTP API) read in loops. Readers
  never see a half checkpoint (every one listed verifies and loads, or was deleted by the keep
  policy meanwhile; no temp folder listed), never crash or warn, and never block the writer: it
  ends with exit 0 and all its saves, and ``/proc/locks`` never shows a lock on a file of the run
  folder held by any process but the writer.

The racing processes are this file run as a script (``python concurrency.py racer``): each
imports torch and savegame once, then opens the run folders it is told on stdin, so two of them
call ``savegame.Run(folder)`` within microseconds of each other.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
REPO = TESTS.parent
TRAIN_SCRIPT = TESTS / "fixtures" / "train_script.py"
for _path in (str(HERE), str(TESTS), str(TESTS / "log")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from tally import Tally  # noqa: E402

TEMP = re.compile(r"\.(tmp|old|del)-\d+-")


# --------------------------------------------------------------------------------------------
# The racing process (``python concurrency.py racer``)
# --------------------------------------------------------------------------------------------

def _race(folder: str, steps: int, sleep: float, every: int) -> dict:
    """Open ``folder`` as a Run and train ``steps`` steps, or say why not (runs in a racer)."""
    import torch

    import savegame

    torch.manual_seed(0)
    net = torch.nn.Linear(8, 8)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    try:
        run = savegame.Run(folder, save=savegame.EverySteps(every) | savegame.EveryEpochs(1),
                           keep=savegame.KeepLast(2))
    except Exception as error:
        return {"won": False, "error": type(error).__name__, "message": str(error)}
    with run:
        run.track(model=net, optimizer=opt)
        resumed_at = run.step
        for _ in run.epochs(1):
            for _ in run.iterate(range(steps)):
                loss = (net(x) - x).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                run.log("loss", loss.detach())
                run.save()
                if sleep:
                    time.sleep(sleep)
            run.save()  # at the epoch's end: EveryEpochs(1)
        step = run.step
    return {"won": True, "resumed_at": resumed_at, "step": step}


def _racer_main() -> None:
    import importlib

    import torch

    importlib.import_module("savegame")  # before READY: the race is on Run(), not on imports
    torch.set_num_threads(1)
    print(f"READY {os.getpid()}", flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        result = _race(**command)
        print("RESULT " + json.dumps(result), flush=True)


class Racer:
    """One racing process; ``send`` a command, ``result`` waits for its answer."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "racer"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=open(log, "a"), text=True, cwd=REPO,
                                        env={**os.environ, "OMP_NUM_THREADS": "1"})
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.pid = self.process.pid

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_line(self, prefix: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if line is None:
                return None
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def send(self, **command) -> None:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def result(self, timeout: float = 60.0) -> dict | None:
        found = self.wait_line("RESULT ", timeout)
        return json.loads(found) if found is not None else None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def errors(self) -> str:
        text = self.log.read_text() if self.log.exists() else ""
        return text if "Traceback" in text else ""


# --------------------------------------------------------------------------------------------
# Checks shared by the scenarios
# --------------------------------------------------------------------------------------------

def _check_run_intact(tally: Tally, folder: Path, steps: int, what: str, *, tag: str = "loss",
                      points: int | None = None, pids: set[int] | None = None) -> None:
    """The run in ``folder`` finished at ``steps``: run.json says so, every checkpoint verifies and
    the newest is at ``steps``, no temp folder left, the ``tag`` curve holds each step once
    (``points`` of them; default ``steps``), and the event files are the ``pids``' only."""
    from tb_read import read_scalars

    from savegame import RunFolder
    from savegame.checkpoint.store import verify_checkpoint

    run = RunFolder(folder)
    try:
        info = run.read_info()
    except (OSError, ValueError) as error:
        tally.fail("other", f"{what}: run.json unreadable: {error}")
        return
    if info.get("status") != "finished":
        tally.fail("other", f"{what}: run.json status {info.get('status')!r}, not 'finished'")
    checkpoints = run.checkpoints()
    if not checkpoints or checkpoints[-1].step != steps:
        tally.fail("data_lost", f"{what}: newest checkpoint "
                   f"{checkpoints[-1].step if checkpoints else None}, expected step {steps}")
    for checkpoint in checkpoints:
        problems = verify_checkpoint(checkpoint.path)
        if problems:
            tally.fail("corrupt_resume", f"{what}: {checkpoint.path.name} does not verify: {problems[0]}")
    left = [p.name for p in (folder / "checkpoints").iterdir() if TEMP.search(p.name)]
    if left:
        tally.fail("other", f"{what}: temp folders left behind: {left}")
    series = [p.step for p in read_scalars(folder).get(tag, [])]
    expected = points if points is not None else steps
    if len(series) != expected or len(set(series)) != len(series):
        dupes = sorted({s for s in series if series.count(s) > 1})[:5]
        tally.fail("data_lost" if len(set(series)) < expected else "other",
                   f"{what}: curve {tag!r} has {len(series)} points ({len(set(series))} steps, "
                   f"repeated: {dupes}), expected {expected}, each once")
    if pids is not None:
        files = [p.name for p in folder.glob("events.out.tfevents.*")]
        strangers = [name for name in files if int(name.split(".")[-3]) not in pids]
        if strangers:
            tally.fail("other", f"{what}: event files of another process: {strangers}")


# --------------------------------------------------------------------------------------------
# Two processes on one run folder
# --------------------------------------------------------------------------------------------

def two_processes_one_folder(workdir: Path, scale: str, seed: int) -> Tally:
    rounds, kill_rounds, lock_folders = (4, 1, 2000) if scale == "ci" else (40, 6, 20000)
    tally = Tally("concurrency: two processes on one run folder", "concurrent runs tried")
    tally.notes.append(f"{rounds} races (both at once, or the second 0-100 ms later), "
                       f"{kill_rounds} runs started after the holder was SIGKILLed")
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    racers = [Racer(workdir / "racer-0.log"), Racer(workdir / "racer-1.log")]
    try:
        for racer in racers:
            if racer.wait_line("READY", 120) is None:
                tally.fail("other", f"racer pid {racer.pid} did not start: {racer.log.read_text()[-2000:]}")
                return tally
            _warm_up(racer, workdir)
        for n in range(rounds):
            folder = (workdir / f"race-{n:03d}").resolve()
            steps, delay = rng.randint(6, 14), rng.choice([0.0, 0.0, rng.uniform(0.0, 0.1)])
            order = racers if rng.random() < 0.5 else racers[::-1]
            order[0].send(folder=str(folder), steps=steps, sleep=0.03, every=2)
            if delay:
                time.sleep(delay)
            order[1].send(folder=str(folder), steps=steps, sleep=0.03, every=2)
            results = [order[0].result(), order[1].result()]
            tally.tried += 1
            what = f"round {n} ({folder.name}, second {delay * 1000:.0f} ms later)"
            if None in results:
                tally.fail("other", f"{what}: a racer gave no answer (hung or died): "
                           f"{[r.errors()[-1500:] for r in racers]}")
                return tally
            winners = [(r, racer) for r, racer in zip(results, order) if r["won"]]
            if len(winners) == 2 and sorted(r["resumed_at"] for r in results) == [0, steps]:
                tally.tried -= 1  # one ended before the other began (a slow start): no race
                tally.notes.append(f"{what}: the two did not overlap")
                continue
            if len(winners) != 1:
                tally.fail("data_lost" if len(winners) > 1 else "other",
                           f"{what}: {len(winners)} processes trained (expected exactly one): {results}")
                continue
            won, winner = winners[0]
            lost = next(r for r in results if not r["won"])
            if lost["error"] != "RunLockedError":
                tally.fail("other", f"{what}: the second got {lost['error']}: {lost['message']}")
            elif str(folder) not in lost["message"] or f"pid {winner.pid}" not in lost["message"]:
                tally.fail("other", f"{what}: the RunLockedError does not name the folder and the "
                           f"holder (pid {winner.pid}): {lost['message']}")
            if won["step"] != steps or won["resumed_at"] != 0:
                tally.fail("other", f"{what}: the winner ended at step {won['step']} "
                           f"(resumed at {won['resumed_at']}), expected {steps} from 0")
            _check_run_intact(tally, folder, steps, what, pids={winner.pid})
        for n in range(kill_rounds):
            tally.tried += 1
            folder = (workdir / f"stale-{n:03d}").resolve()
            victim, heir = racers if rng.random() < 0.5 else racers[::-1]
            steps = 30
            victim.send(folder=str(folder), steps=steps, sleep=0.03, every=3)
            what = f"stale lock {n} ({folder.name})"
            deadline = time.monotonic() + 60
            from savegame import RunFolder
            while not RunFolder(folder).checkpoints() and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.3))
            victim.kill()
            heir.send(folder=str(folder), steps=steps, sleep=0.0, every=3)
            result = heir.result()
            if result is None or not result["won"]:
                tally.fail("other", f"{what}: the process after the SIGKILLed holder did not get "
                           f"the lock: {result or heir.errors()[-1500:]}")
            else:
                if result["step"] != steps or result["resumed_at"] == 0:
                    tally.fail("data_lost", f"{what}: ended at {result['step']}, resumed at "
                               f"{result['resumed_at']} (expected {steps}, from a checkpoint)")
                _check_run_intact(tally, folder, steps, what, pids={victim.pid, heir.pid})
            if n == kill_rounds - 1:
                racers.remove(victim)
                break
            replacement = Racer(workdir / f"racer-respawn-{n}.log")
            racers[racers.index(victim)] = replacement
            if replacement.wait_line("READY", 120) is None:
                tally.fail("other", "a new racer did not start")
                return tally
            _warm_up(replacement, workdir)
    finally:
        for racer in racers:
            racer.close()
    lock_races(tally, workdir, lock_folders)
    for racer in racers:
        if racer.errors():
            tally.fail("other", f"racer pid {racer.pid} printed a traceback: {racer.errors()[-1500:]}")
    return tally


# Each folder has its 1 ms slot, counted from the start both racers are given: a racer that
# was held up (a loaded CI machine) hurries through the slots it missed and is back in step
# with the other, instead of running ahead of it for good and never meeting it again.
_LOCK_SLOT_SECONDS = 0.001


def _lock_race_main(root: str, folders: int) -> None:
    """Take and release the lock of ``folders`` folders in turn, each in its own slot from the
    start time read on stdin (another process does the same); print how often the lock was
    refused, and each refusal that did not name its holder. Only the lock: no torch, a
    thousand races a second."""
    from savegame.errors import RunLockedError
    from savegame.lock import RunLock

    print("READY", flush=True)
    start_at = float(sys.stdin.readline())
    refused, unnamed = 0, []
    for i in range(folders):
        while time.time() < start_at + i * _LOCK_SLOT_SECONDS:
            pass
        folder = Path(root) / f"f{i}"
        folder.mkdir(exist_ok=True)
        lock = RunLock(folder / "LOCK")
        try:
            lock.acquire()
        except RunLockedError as error:
            refused += 1
            if str(folder) not in str(error) or "pid " not in str(error):
                unnamed.append(str(error))
            continue
        time.sleep(_LOCK_SLOT_SECONDS / 2)
        lock.release()
    print(json.dumps({"refused": refused, "unnamed": unnamed[:5], "unnamed_count": len(unnamed)}), flush=True)


def lock_races(tally: Tally, workdir: Path, folders: int) -> None:
    """Two processes taking the locks of ``folders`` folders at the same moments: each refusal
    names the folder and the holder's pid."""
    root = workdir / "lock-races"
    root.mkdir(parents=True, exist_ok=True)
    racers = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "lockrace", str(root), str(folders)],
                               cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
              for _ in range(2)]
    for racer in racers:  # both imported savegame before the clock starts
        if racer.stdout.readline().strip() != "READY":
            racer.kill()
    start_at = time.time() + 0.2
    for racer in racers:
        if racer.poll() is None:
            racer.stdin.write(f"{start_at}\n")
            racer.stdin.flush()
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        if racer.returncode != 0:
            tally.fail("other", f"a lock racer exited {racer.returncode}: {err[-1500:]}")
            continue
        found = json.loads(out)
        tally.tried += found["refused"]
        for message in found["unnamed"]:
            tally.fail("other", f"a refused lock did not name the folder and its holder: {message}")
    tally.notes.append(f"and two processes racing for the locks of {folders} folders, lock only")


def _warm_up(racer: Racer, workdir: Path) -> None:
    """One run of its own, so that the first race is not lost to a first save's imports."""
    racer.send(folder=str(workdir / f"warm-up-{racer.pid}"), steps=2, sleep=0.0, every=1)
    racer.result()


# --------------------------------------------------------------------------------------------
# Two sweeps on one study
# --------------------------------------------------------------------------------------------

SWEEP_SPEC = """train: toy_train:train
objective: {metric: loss/val, direction: minimize}
n_trials: %(n)d
sampler: %(sampler)s
seed: %(seed)d
space:
  lr: {type: float, low: 0.01, high: 0.3, log: true}
  epochs: 3
  steps: 4
"""


def two_sweeps_one_study(workdir: Path, scale: str, seed: int) -> Tally:
    rounds = [(6, "random")] if scale == "ci" else [(12, "random"), (12, "tpe"), (12, "random"), (16, "random")]
    tally = Tally("concurrency: two sweeps on one study", "trials asked of two sweeps at once")
    tally.notes.append(f"{len(rounds)} rounds of two `savegame sweep run` on one journal study "
                       f"({', '.join(f'{n} trials {s}' for n, s in rounds)})")
    if importlib.util.find_spec("optuna") is None:
        tally.notes.append("optuna is not installed: skipped")
        return tally
    for n, (n_trials, sampler) in enumerate(rounds):
        folder = workdir / f"sweeps-{n}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "toy.yaml").write_text(SWEEP_SPEC % {"n": n_trials, "sampler": sampler, "seed": seed})
        env = {**os.environ, "PYTHONPATH": str(TESTS / "sweeps"), "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "savegame.cli", "sweep", "run", "toy.yaml"]
        sweeps = [subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True) for _ in range(2)]
        outputs = []
        for process in sweeps:
            try:
                outputs.append(process.communicate(timeout=240)[0])
            except subprocess.TimeoutExpired:
                process.kill()
                outputs.append(process.communicate()[0])
                tally.fail("other", f"round {n}: a sweep did not end within 240 s (hung?)")
        tally.tried += n_trials
        for process, output in zip(sweeps, outputs):
            if process.returncode != 0 or "Traceback" in output:
                tally.fail("other", f"round {n}: sweep pid {process.pid} exited {process.returncode}: "
                           f"{output[-1500:]}")
        _check_study(tally, folder / "sweeps" / "toy", n_trials, {p.pid for p in sweeps}, f"round {n}")
    return tally


def _check_study(tally: Tally, sweep_dir: Path, n_trials: int, pids: set[int], what: str) -> None:
    from savegame.sweeps.study import JOURNAL, load_study
    from savegame.sweeps.worker import counted

    for i, line in enumerate((sweep_dir / JOURNAL).read_text().splitlines()):
        try:
            json.loads(line)
        except ValueError:
            tally.fail("other", f"{what}: {JOURNAL} line {i + 1} is not JSON: {line[:200]!r}")
    try:
        study = load_study(sweep_dir)
    except Exception as error:
        tally.fail("other", f"{what}: the study cannot be loaded: {type(error).__name__}: {error}")
        return
    trials = counted(study.get_trials(deepcopy=False))
    numbers = sorted(t.number for t in trials)
    if numbers != list(range(n_trials)):
        tally.fail("data_lost" if len(numbers) < n_trials else "other",
                   f"{what}: the counted trials are {numbers}, expected 0..{n_trials - 1}")
    for trial in trials:
        if trial.state.name != "COMPLETE":
            tally.fail("data_lost", f"{what}: trial {trial.number} is {trial.state.name}")
    drawn = [round(t.params.get("lr", -1), 12) for t in trials]
    twins = sorted({lr for lr in drawn if drawn.count(lr) > 1})
    if twins:
        tally.fail("other", f"{what}: trials drew the same parameters (lr {twins[:3]}): two sweeps "
                   f"on one study ran the same experiment twice")
    folders = sorted((sweep_dir / "trials").iterdir())
    if len(folders) != n_trials:
        tally.fail("other", f"{what}: {len(folders)} trial folders, expected {n_trials}: "
                   f"{[f.name for f in folders]}")
    for folder in folders:
        name = f"{what} {folder.name}"
        info = json.loads((folder / "run.json").read_text())
        if info.get("resumes"):
            tally.fail("other", f"{name}: run again by another process: {info['resumes']}")
        if info.get("pid") not in pids:
            tally.fail("other", f"{name}: run by pid {info.get('pid')}, not one of the sweeps {pids}")
        _check_run_intact(tally, folder, 12, name, tag="loss/val", points=3)


# --------------------------------------------------------------------------------------------
# Readers while a run writes
# --------------------------------------------------------------------------------------------

def _reader_main(run_dir: str, stop_file: str) -> None:
    """List, verify and load every checkpoint of ``run_dir`` until ``stop_file`` exists; print a
    JSON summary. A checkpoint the keep policy deleted meanwhile is counted apart."""
    import warnings

    import savegame
    from savegame import RunFolder
    from savegame.checkpoint.store import verify_checkpoint

    report = {"lists": 0, "verified": 0, "loaded": 0, "deleted_meanwhile": 0, "bad": [], "warnings": []}
    folder = RunFolder(run_dir)
    while not os.path.exists(stop_file):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            listed = folder.checkpoints()
        report["warnings"] += [str(w.message) for w in caught]
        report["lists"] += 1
        for checkpoint in listed:
            if TEMP.search(checkpoint.path.name):
                report["bad"].append(f"a temp folder listed as a checkpoint: {checkpoint.path.name}")
        for i, checkpoint in enumerate(listed):
            problems = verify_checkpoint(checkpoint.path)
            newest = i == len(listed) - 1
            loaded = None
            if not problems and newest:
                try:
                    savegame.load(checkpoint.path)
                    loaded = True
                except Exception as error:
                    problems = [f"load: {type(error).__name__}: {error}"]
            if problems and not checkpoint.path.exists():
                report["deleted_meanwhile"] += 1
            elif problems:
                report["bad"].append(f"{checkpoint.path.name}: {problems[0]}")
            else:
                report["verified"] += 1
                report["loaded"] += bool(loaded)
    print(json.dumps(report), flush=True)


def _held_locks(paths: set[int]) -> list[tuple[int, int]]:
    """(pid, inode) of every lock in /proc/locks on one of the inodes ``paths``."""
    held = []
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return held
    for line in lines:
        fields = line.split()
        if "->" in fields:  # a waiter: "1: -> POSIX ..."
            fields.remove("->")
        try:
            pid, inode = int(fields[4]), int(fields[5].split(":")[-1])
        except (IndexError, ValueError):
            continue
        if inode in paths:
            held.append((pid, inode))
    return held


def _writer(folder: Path, args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(TRAIN_SCRIPT), str(folder), str(folder.parent / "out.safetensors"),
                             *args], cwd=folder.parent, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def readers_while_writing(workdir: Path, scale: str, seed: int) -> Tally:
    from savegame.log.board import start_board, tensorboard_available
    from tbserver import HttpError, request_json

    modes = [["--epochs", "1"]] if scale == "ci" else [
        ["--epochs", "3"], ["--epochs", "3", "--async-save"], ["--epochs", "3", "--full-saves"],
        ["--epochs", "3", "--async-save", "--freeze"]]
    common = ["--width", "192", "--every", "2", "--sleep", "0.015"]
    tally = Tally("concurrency: readers while a run writes", "reads during writes")
    workdir.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "savegame.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    alone = workdir / "alone" / "run"
    alone.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    writer = _writer(alone, common + modes[0], alone.parent / "writer.log")
    code = writer.wait(300)
    baseline = time.monotonic() - started
    if code != 0:
        tally.fail("other", f"the writer alone exited {code}: {(alone.parent / 'writer.log').read_text()[-1500:]}")
        return tally

    for n, mode in enumerate(modes):
        root = workdir / f"read-{n}"
        folder = root / "run"
        root.mkdir(parents=True, exist_ok=True)
        what = f"mode {' '.join(mode)}"
        started = time.monotonic()
        writer = _writer(folder, common + mode, root / "writer.log")
        while not (folder / "LOCK").exists() and writer.poll() is None:
            time.sleep(0.01)
        lock_inode = (folder / "LOCK").stat().st_ino if (folder / "LOCK").exists() else -1
        stop = root / "stop"
        reader = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "reader", str(folder), str(stop)],
                                  cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        board = None
        if tensorboard_available():
            board = start_board(folder.parent, host="127.0.0.1", reload_interval=0.5, load_fast="false")
        counts = {"ls": 0, "doctor": 0, "board": 0, "locks": 0}
        problems: list[tuple[str, str]] = []  # from the watching threads, tallied here
        writing = threading.Event()
        writing.set()

        def watch_locks() -> None:
            while writing.is_set():
                for pid, inode in _held_locks({lock_inode} | _inodes(folder)):
                    counts["locks"] += 1
                    if pid != writer.pid:
                        problems.append(("other", f"{what}: pid {pid} (not the writer {writer.pid}) holds a "
                                         f"lock on a file of the run folder (inode {inode})"))
                time.sleep(0.005)

        def watch_board() -> None:
            while writing.is_set():
                time.sleep(0.2)
                counts["board"] += 1
                try:
                    points = request_json(board.url + "data/plugin/scalars/scalars?run=run&tag=loss/train",
                                          timeout=30)
                except (HttpError, OSError) as error:  # 400 until the series is loaded
                    if not isinstance(error, HttpError):
                        problems.append(("other", f"{what}: TensorBoard did not answer: {error}"))
                    continue
                steps = [p[1] for p in points]
                if len(set(steps)) != len(steps) or steps != sorted(steps):
                    problems.append(("other", f"{what}: TensorBoard shows steps repeated or out of "
                                     f"order while the run writes: {steps[:40]}"))

        watchers = [threading.Thread(target=watch_locks, daemon=True)]
        if board is not None:
            watchers.append(threading.Thread(target=watch_board, daemon=True))
        for thread in watchers:
            thread.start()
        try:
            turn = 0
            while writer.poll() is None:
                command = ("ls", "doctor")[turn % 2]
                turn += 1
                counts[command] += 1
                tally.tried += 1
                args = ["ls", str(folder.parent), "--json"] if command == "ls" else ["doctor", str(folder), "--json"]
                done = subprocess.run(cli + args, capture_output=True, text=True, cwd=root, env=env, timeout=120)
                if done.returncode not in ((0,) if command == "ls" else (0, 1)) or done.stderr.strip():
                    tally.fail("other", f"{what}: savegame {command} exited {done.returncode} while the run "
                               f"writes: {done.stderr.strip()[-800:]}")
                    continue
                try:
                    json.loads(done.stdout)
                except ValueError:
                    tally.fail("other", f"{what}: savegame {command} --json printed no JSON: {done.stdout[:300]!r}")
            writing.clear()
            for thread in watchers:
                thread.join(30)
            tally.tried += counts["board"]
            for kind, problem in dict.fromkeys(problems):
                tally.fail(kind, problem)
            duration = time.monotonic() - started
            stop.touch()
            out, err = reader.communicate(timeout=120)
            code = writer.wait()
            if code != 0:
                tally.fail("other", f"{what}: the writer exited {code} with readers on: "
                           f"{(root / 'writer.log').read_text()[-1500:]}")
                continue
            try:
                report = json.loads(out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                tally.fail("other", f"{what}: the verify/load reader crashed: {err[-1500:]}")
                continue
            tally.tried += report["lists"]
            for bad in report["bad"]:
                tally.fail("corrupt_resume", f"{what}: a reader saw a half checkpoint: {bad}")
            for warning in sorted(set(report["warnings"]))[:5]:
                tally.fail("other", f"{what}: listing the checkpoints warned while the run writes: {warning}")
            if err.strip():
                tally.fail("other", f"{what}: the reader printed: {err.strip()[-800:]}")
            total = int(re.search(r"done step=(\d+)", (root / "writer.log").read_text())[1])
            info = json.loads((folder / "run.json").read_text())
            expected = sorted({s for s in range(2, total + 1, 2)} | {total // int(mode[1]) * e
                                                                     for e in range(1, int(mode[1]) + 1)})
            if info.get("saved_steps") != expected:
                tally.fail("data_lost", f"{what}: the writer saved {info.get('saved_steps')}, expected {expected}")
            _check_run_intact(tally, folder, total, what, tag="loss/train", pids={writer.pid})
            if board is not None:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        steps = [p[1] for p in request_json(
                            board.url + "data/plugin/scalars/scalars?run=run&tag=loss/train")]
                    except HttpError:
                        steps = []
                    if len(steps) >= total:
                        break
                    time.sleep(0.3)
                if sorted(set(steps)) != steps or len(steps) != total:
                    tally.fail("data_lost", f"{what}: TensorBoard ends with {len(steps)} steps of loss/train, "
                               f"expected {total}, each once")
            tally.notes.append(f"{what}: writer {duration:.1f} s with readers ({counts['ls']} ls, "
                               f"{counts['doctor']} doctor, {counts['board']} board queries, "
                               f"{report['lists']} listings: {report['verified']} verified, {report['loaded']} "
                               f"loaded, {report['deleted_meanwhile']} deleted by the keep policy meanwhile), "
                               f"{baseline:.1f} s alone (first mode); {counts['locks']} lock sightings, all the writer's")
        finally:
            writing.clear()
            stop.touch()
            if reader.poll() is None:
                try:
                    reader.wait(30)
                except subprocess.TimeoutExpired:
                    reader.kill()
            if writer.poll() is None:
                writer.kill()
                writer.wait()
            if board is not None:
                board.stop()
    return tally


def _inodes(folder: Path) -> set[int]:
    """The inodes of the files below ``folder`` now (one deleted meanwhile is left out)."""
    found = set()
    for top, _, names in os.walk(folder):
        for name in names:
            try:
                found.add(os.stat(os.path.join(top, name)).st_ino)
            except OSError:
                pass
    return found


if __name__ == "__main__":
    if sys.argv[1] == "racer":
        _racer_main()
    elif sys.argv[1] == "reader":
        _reader_main(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "lockrace":
        _lock_race_main(sys.argv[2], int(sys.argv[3]))
