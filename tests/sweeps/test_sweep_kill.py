"""Sweeps killed with SIGKILL (issue 13): the same command run again keeps the ended trials,
resumes each interrupted one from its checkpoint in its own folder (its run.json shows the
resume, Optuna keeps the pruner's values from before the kill) and runs n_trials in all, none
twice; a worker killed among several leaves its trial to another, which resumes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from toy_train import KILL_SPEC as SPEC

pytest.importorskip("optuna")

HERE = Path(__file__).parent


def start(tmp_path: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(HERE), "TOY_STARTED": str(tmp_path / "started.txt")}
    return subprocess.Popen([sys.executable, "-m", "savegame.cli", "sweep", "run", "toy.yaml", *args], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(tmp_path: Path, predicate, *, process: subprocess.Popen, timeout: float = 120.0) -> list[str]:
    """The marker lines (``trial-NNNN step``) once ``predicate(lines)`` holds."""
    deadline = time.monotonic() + timeout
    marker = tmp_path / "started.txt"
    while time.monotonic() < deadline:
        lines = marker.read_text().split("\n")[:-1] if marker.exists() else []
        if predicate(lines):
            return lines
        if process.poll() is not None:
            pytest.fail(f"the sweep ended before the kill point: {process.stdout.read()}")
        time.sleep(0.05)
    pytest.fail("the sweep did not reach the kill point in time")


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


def show(tmp_path: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "savegame.cli", "sweep", "show", "sweeps/toy", "--json"],
                          cwd=tmp_path, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def kill_a_worker_mid_trial(tmp_path: Path, sweep: subprocess.Popen) -> tuple[str, int]:
    """SIGKILL the worker process of the first trial past its second epoch (a checkpoint behind
    it); (that trial's folder name, the pid killed). The pid is the trial folder lock's holder."""
    lines = wait_for(tmp_path, lambda ls: any(int(line.split()[1]) == 20 for line in ls), process=sweep)
    victim_trial = next(line.split()[0] for line in lines if int(line.split()[1]) == 20)
    lock = tmp_path / "sweeps" / "toy" / "trials" / victim_trial / "LOCK"
    victim = json.loads(lock.read_text())["pid"]
    os.kill(victim, signal.SIGKILL)
    return victim_trial, victim


def mid_trial(number_of_lines: int):
    """Kill once this many epochs have ended since the start, in a trial past its first epoch."""
    return lambda lines: len(lines) >= number_of_lines and int(lines[-1].split()[1]) in (20, 30)


def test_a_sweep_killed_twice_and_run_again_resumes_its_trials_and_runs_each_once(tmp_path):
    (tmp_path / "toy.yaml").write_text(SPEC % {"n": 4, "sleep": 0.01})
    first = start(tmp_path)
    lines = wait_for(tmp_path, mid_trial(6), process=first)  # trial 0 ended (4 epochs), trial 1 mid-way
    kill(first)
    killed = [lines[-1].split()[0]]
    second = start(tmp_path)
    count = len(lines)
    lines = wait_for(tmp_path, lambda ls: len(ls) >= count + 4 and mid_trial(0)(ls), process=second)
    kill(second)
    killed.append(lines[-1].split()[0])
    third = start(tmp_path)
    assert third.wait(timeout=300) == 0, third.stdout.read()

    table = show(tmp_path)
    numbers = sorted(t["number"] for t in table["trials"])
    assert numbers == [0, 1, 2, 3]  # n_trials in all, none twice
    assert {t["state"] for t in table["trials"]} == {"COMPLETE"}
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(tmp_path / "sweeps" / "toy" / "study.journal")))
    trials = {f"trial-{t.number:04d}": t for t in optuna.load_study(study_name="toy", storage=storage).trials}
    for name in set(killed):
        info = json.loads((tmp_path / "sweeps" / "toy" / "trials" / name / "run.json").read_text())
        assert info["resumes"], f"{name} was started again from step 0"
        resumed_at = info["resumes"][0]["from_step"]
        assert resumed_at >= 10  # from its checkpoint: at most the steps since it are redone
        # the pruner's values from before the kill are kept, and every epoch's is there once
        assert sorted(trials[name].intermediate_values) == [10, 20, 30, 40]
    for name, trial in trials.items():
        if name not in killed:
            info = json.loads((tmp_path / "sweeps" / "toy" / "trials" / name / "run.json").read_text())
            assert not info["resumes"]


def test_a_killed_worker_leaves_its_trial_to_another_which_resumes_it(tmp_path):
    (tmp_path / "toy.yaml").write_text(SPEC % {"n": 4, "sleep": 0.03})
    sweep = start(tmp_path, "--workers", "2")
    victim_trial, victim = kill_a_worker_mid_trial(tmp_path, sweep)
    assert sweep.wait(timeout=300) == 0, sweep.stdout.read()
    table = show(tmp_path)
    assert sorted(t["number"] for t in table["trials"]) == [0, 1, 2, 3]
    assert {t["state"] for t in table["trials"]} == {"COMPLETE"}
    info = json.loads((tmp_path / "sweeps" / "toy" / "trials" / victim_trial / "run.json").read_text())
    assert info["resumes"] and info["resumes"][0]["pid"] != victim  # another worker took it up
    assert info["resumes"][0]["from_step"] >= 10


def test_workers_started_before_the_study_exit_quietly_when_it_cannot_be_opened(tmp_path):
    """The workers start (and import) while the parent opens the study; when it cannot, they exit
    without a word and the parent's one-line error is all the user sees."""
    (tmp_path / "toy.yaml").write_text(SPEC % {"n": 2, "sleep": 0})
    sweep = start(tmp_path, "--workers", "2", "--storage", "postgresql://u:secret@127.0.0.1:9/db")
    output, _ = sweep.communicate(timeout=120)
    assert sweep.returncode == 2, output
    assert "cannot open the sweep storage postgresql://u:***@127.0.0.1:9/db" in output
    assert output.count("error") == 1 and "Traceback" not in output and "secret" not in output
    assert not (tmp_path / "sweeps" / "toy" / "trials").exists()
    workers = subprocess.run(["pgrep", "-f", "savegame.sweeps.subworker"], capture_output=True, text=True)
    assert workers.stdout == ""  # none left behind (the parent waited for them)


def test_a_training_module_that_fails_to_import_in_the_workers_is_one_line_each_not_a_traceback(tmp_path):
    (tmp_path / "bad_train.py").write_text("raise RuntimeError('no GPU here')\n\ndef train(config, run):\n    pass\n")
    (tmp_path / "toy.yaml").write_text(SPEC.replace("toy_train:train", "bad_train:train") % {"n": 2, "sleep": 0})
    sweep = start(tmp_path, "--workers", "2")
    output, _ = sweep.communicate(timeout=120)
    assert sweep.returncode == 2, output
    assert "Traceback" not in output, output
    for worker in (0, 1):
        assert f"savegame sweep worker {worker}: error: train: importing 'bad_train' raised RuntimeError: no GPU here" \
            in output
    assert "every worker exited with an error" in output
