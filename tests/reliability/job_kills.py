"""Kill storms on jobs of many processes: a sweep (``savegame sweep run``, its worker processes)
and a 2-rank ``torchrun`` DDP job. Each is started with the same command again after every kill
until it ends on its own, then compared with an uninterrupted one.

These start real interpreters (torch, Optuna, torchrun's agent: 2-6 s each), so they run fewer
kills than the one-run storms of :mod:`kills`.

* **sweep**: SIGKILL the whole sweep (its process group: the parent and its workers) or one
  worker (the holder of a trial's lock), at a moment drawn over an uninterrupted sweep's time.
  At the end: ``n_trials`` trials, numbered once each, all complete, each with every epoch's
  value once and the same objective value as in the uninterrupted sweep.
* **torchrun**: SIGKILL the whole job (agent and ranks, as a lost machine) or one rank (torchrun
  then stops the other), at a random moment or while a save is being written. After each kill
  every committed checkpoint verifies; at the end the ranks' parameters and random streams are
  bit-identical to an uninterrupted job's and the curves hold each step once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tally import Tally

TESTS = Path(__file__).resolve().parent.parent
SCALES = {"ci": {"sweep": 3, "torchrun": 4}, "torture": {"sweep": 12, "torchrun": 12}}


def _spec(n: int) -> str:
    sys.path.insert(0, str(TESTS / "sweeps"))
    from toy_train import KILL_SPEC

    return KILL_SPEC % {"n": n, "sleep": 0.01}


# -- sweeps ---------------------------------------------------------------------------------
def _sweep(folder: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(TESTS / "sweeps")}
    return subprocess.Popen([sys.executable, "-m", "savegame.cli", "sweep", "run", "toy.yaml", *args], cwd=folder,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _trials(folder: Path) -> dict[int, tuple[str, float | None, list[int], dict]]:
    """{number: (state, value, the steps of its intermediate values, params)} from the study itself."""
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(folder / "sweeps" / "toy" / "study.journal")))
    study = optuna.load_study(study_name="toy", storage=storage)
    return {t.number: (t.state.name, t.value, sorted(t.intermediate_values), t.params) for t in study.trials}


def _uninterrupted_value(params: dict, folder: Path) -> float:
    """The objective a trial with ``params`` reaches when never killed: the toy training run in
    this process (the workers sample in no fixed order, so trial numbers do not fix params)."""
    import savegame

    sys.path.insert(0, str(TESTS / "sweeps"))
    import toy_train

    values = []

    class Catch(savegame.Hook):
        def on_log(self, run, logged, step, *, every_step, reduce):
            if "loss/val" in logged:
                values.append(float(logged["loss/val"]))

    with savegame.Run(folder, hooks=[Catch()], handle_signals=False, save=savegame.Never()) as run:
        toy_train.train({"epochs": 4, "steps": 10, **params}, run)
    return min(values)


def _worker_pids(folder: Path) -> list[int]:
    pids = []
    for lock in (folder / "sweeps" / "toy" / "trials").glob("*/LOCK"):
        try:
            pids.append(json.loads(lock.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            pass  # being written or released
    return pids


def sweep_storm(workdir: Path, scale: str, seed: int) -> Tally:
    """Kills of a 2-worker sweep of 4 trials, and of its workers, until it ends; see the module."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    chooser = random.Random(seed)
    tally = Tally("kill storm, sweep (2 workers)", "kills survived")
    goal, n = SCALES[scale]["sweep"], 4
    reference = Path(workdir) / "sweep-reference"
    reference.mkdir(parents=True)
    (reference / "toy.yaml").write_text(_spec(n))
    started = time.monotonic()
    done = _sweep(reference, "--workers", "2")
    output, _ = done.communicate(timeout=600)
    duration = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"the uninterrupted sweep failed: {output[-2000:]}")
    for number, (_, value, _, params) in _trials(reference).items():  # the oracle, checked once
        if value != _uninterrupted_value(params, reference / f"check-{number}"):
            raise RuntimeError(f"trial {number} of the uninterrupted sweep ended at {value}, its training "
                               f"run alone at another value: the storm's oracle is wrong")
    rounds = 0
    whole = worker = 0
    while tally.tried < goal and tally.ok:
        rounds += 1
        folder = Path(workdir) / f"sweep-{rounds}"
        folder.mkdir()
        (folder / "toy.yaml").write_text(_spec(n))
        for _ in range(20):
            sweep = _sweep(folder, "--workers", "2")
            killed = None  # "sweep" or "worker"
            if tally.tried < goal:
                moment = time.monotonic() + chooser.uniform(0.3, 1.0) * duration
                while time.monotonic() < moment and sweep.poll() is None:
                    time.sleep(0.02)
                pids = _worker_pids(folder) if chooser.random() < 0.5 else []
                try:
                    if sweep.poll() is None and pids:
                        os.kill(chooser.choice(pids), signal.SIGKILL)
                        killed, worker = "worker", worker + 1
                    elif sweep.poll() is None:
                        os.killpg(sweep.pid, signal.SIGKILL)  # the parent and its workers
                        killed, whole = "sweep", whole + 1
                except ProcessLookupError:
                    pass  # it ended just now
                tally.tried += killed is not None
            output, _ = sweep.communicate(timeout=600)
            if sweep.returncode == 0:
                break  # a killed worker's trial was taken up by the other
            if killed != "sweep":
                tally.fail("other", f"sweep round {rounds}: exit {sweep.returncode} after "
                                    f"{'a worker kill' if killed else 'no kill'}: {output[-800:]}")
                return tally
        got = _trials(folder)
        if sorted(got) != list(range(n)):
            tally.fail("data_lost", f"sweep round {rounds}: trials {sorted(got)}, expected 0..{n - 1} once each")
        for number, (state, value, steps, params) in got.items():
            if state != "COMPLETE":
                tally.fail("data_lost", f"sweep round {rounds}: trial {number} ended {state}")
            elif steps != [10, 20, 30, 40]:
                tally.fail("data_lost", f"sweep round {rounds}: trial {number} has values at steps {steps}")
            elif value != (want := _uninterrupted_value(params, folder / f"check-{number}")):
                tally.fail("other", f"sweep round {rounds}: trial {number} ({params}) ended at {value}, "
                                    f"uninterrupted at {want}")
    tally.notes.append(f"{rounds} sweeps of {n} trials; {whole} kills of the whole sweep, {worker} of one worker")
    return tally


# -- torchrun -------------------------------------------------------------------------------
def torchrun_storm(workdir: Path, scale: str, seed: int) -> Tally:
    """Kills of a 2-rank DDP job (the whole job, or one rank), until it ends; see the module."""
    sys.path.insert(0, str(TESTS))
    from safetensors.torch import load_file
    from torchrun_jobs import kill_job, rank_pid, run_ddp, start_ddp

    from kills import _curves, _intact_checkpoints

    extra = ("--epochs", "4", "--sleep", "0.04")  # 48 steps of ~0.05 s
    chooser = random.Random(seed)
    tally = Tally("kill storm, torchrun (2 ranks, DDP)", "kills survived")
    goal = SCALES[scale]["torchrun"]
    root = Path(workdir)
    (root / "ref").mkdir(parents=True)
    run_ddp(root / "ref" / "run", root / "ref" / "out", *extra)
    expected = [load_file(f"{root / 'ref' / 'out'}.rank{r}.safetensors") for r in (0, 1)]
    expected_curves = _curves(root / "ref" / "run")
    rounds = whole = one_rank = during_save = 0
    while tally.tried < goal and tally.ok:
        rounds += 1
        run_dir, out = root / f"job-{rounds}" / "run", root / f"job-{rounds}" / "out"
        run_dir.parent.mkdir()
        for _ in range(min(6, goal - tally.tried)):
            job = start_ddp(run_dir, out, *extra)
            deadline = time.monotonic() + 90
            if chooser.random() < 0.4:  # aim at a save: wait for a temp checkpoint folder
                while not _saving(run_dir) and job.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.001)
            else:
                rank_pid(out, 1)
                time.sleep(chooser.uniform(0.0, 2.0))
            if job.poll() is not None:
                break
            during_save += _saving(run_dir)
            if chooser.random() < 0.5:
                try:
                    os.kill(rank_pid(out, chooser.randint(0, 1)), signal.SIGKILL)
                    one_rank += 1
                except ProcessLookupError:
                    pass
                try:
                    job.wait(60)
                except subprocess.TimeoutExpired:
                    tally.fail("other", f"job {rounds}: the other rank did not stop within 60 s of a rank's death")
                kill_job(job)
            else:
                kill_job(job)
                whole += 1
            tally.tried += 1
            _intact_checkpoints(run_dir, tally, f"job {rounds}")
        run_ddp(run_dir, out, *extra)
        got = [load_file(f"{out}.rank{r}.safetensors") for r in (0, 1)]
        for rank in (0, 1):
            if got[rank].keys() != expected[rank].keys() or any(
                    not got[rank][k].equal(expected[rank][k]) for k in expected[rank]):
                tally.fail("other", f"job {rounds}: rank {rank} ended with other bits than an uninterrupted job")
        if _curves(run_dir) != expected_curves:
            tally.fail("data_lost", f"job {rounds}: the curves differ from an uninterrupted job's")
    tally.notes.append(f"{rounds} jobs; {whole} kills of the whole job, {one_rank} of one rank, "
                       f"{during_save} during a save")
    return tally


def _saving(run_dir: Path) -> bool:
    root = Path(run_dir) / "checkpoints"
    return root.is_dir() and any(".tmp-" in p.name for p in root.iterdir())
