"""The kill test: a real training process (a fresh interpreter, DataLoader worker processes)
killed with SIGKILL over and over and rerun each time with the same command ends bit-identical to
a run never killed; preemption signals save and exit 0. The kill storms of every save mode (sync,
async, incremental; kills uniform in time and aimed at each file op) are in
tests/reliability/test_kills.py."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tb_read import read_scalars

SCRIPT = Path(__file__).parent / "fixtures" / "train_script.py"


def command(run_dir, out, *extra):
    return [sys.executable, str(SCRIPT), str(run_dir), str(out), *extra]


def run_to_end(run_dir, out, *extra):
    done = subprocess.run(command(run_dir, out, *extra), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return load_file(out)


def curves(run_dir):
    """{tag: [(step, value)]}: what TensorBoard's loader reads, wall times left out."""
    return {tag: [(p.step, p.value) for p in points] for tag, points in read_scalars(run_dir).items()}


def saving_now(run_dir):
    checkpoints = Path(run_dir) / "checkpoints"
    return checkpoints.is_dir() and any(".tmp-" in p.name for p in checkpoints.iterdir())


def newest_step(run_dir):
    checkpoints = Path(run_dir) / "checkpoints"
    steps = [int(p.name.split("-")[1]) for p in checkpoints.iterdir()
             if p.name.startswith("step-") and "." not in p.name] if checkpoints.is_dir() else []
    return max(steps, default=-1)


def kill_loop(run_dir, out, extra, *, kills, seed, total_steps):
    """Start, kill at a random moment (or the moment a save is in flight), repeat.

    Each kill waits for the run to pass a random step of its own stretch of the run, then for a
    random fraction of a second: so the kills spread over the whole run however fast this
    machine trains, and the run never finishes before the last kill."""
    chooser = random.Random(seed)
    during_save = 0
    stretch = (total_steps - 15) / kills  # the last ~15 steps stay unkilled: the run may not finish
    for n in range(kills):
        process = subprocess.Popen(command(run_dir, out, *extra), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        if n % 3 == 0:  # aim at a save: wait until a temp checkpoint folder exists
            while not saving_now(run_dir) and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.001)
        else:
            target = int((n + chooser.random()) * stretch)
            while newest_step(run_dir) < target and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(chooser.uniform(0.0, 0.1))
        during_save += saving_now(run_dir)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if out.exists():
            pytest.fail(f"the run finished before kill {n}; make the fixture run longer")
    return during_save


@pytest.mark.slow
def test_sigkills_with_worker_processes_end_bit_identical(tmp_path):
    extra = ["--epochs", "2", "--width", "512", "--workers", "2"]
    reference = run_to_end(tmp_path / "ref", tmp_path / "ref.safetensors", *extra)
    out = tmp_path / "killed.safetensors"
    kill_loop(tmp_path / "killed", out, extra, kills=5, seed=os.getpid() + 1, total_steps=2 * 40)
    resumed = run_to_end(tmp_path / "killed", out, *extra)
    for name in reference:
        assert resumed[name].equal(reference[name]), name
    assert curves(tmp_path / "killed") == curves(tmp_path / "ref")


def wait_for_checkpoint(run_dir, process, timeout=60):
    deadline = time.monotonic() + timeout
    checkpoints = Path(run_dir) / "checkpoints"
    while time.monotonic() < deadline and process.poll() is None:
        if checkpoints.is_dir() and any((p / "COMMIT").exists() for p in checkpoints.iterdir()):
            return
        time.sleep(0.01)
    pytest.fail("the training process wrote no checkpoint")


@pytest.mark.parametrize("signal_number, saving", [(signal.SIGTERM, "sync"), (signal.SIGINT, "sync"),
                                                   (signal.SIGTERM, "async")])
def test_a_preemption_signal_saves_exits_zero_and_the_rerun_ends_identical(tmp_path, signal_number, saving):
    extra = ["--epochs", "2", "--width", "256"] + (["--async-save"] if saving == "async" else [])
    reference = run_to_end(tmp_path / "ref", tmp_path / "ref.safetensors", *extra)
    run_dir, out = tmp_path / "preempted", tmp_path / "out.safetensors"
    process = subprocess.Popen(command(run_dir, out, *extra), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(run_dir, process)
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "To resume, run the same command again" in stderr
    assert f"{sys.executable} {SCRIPT} {run_dir} {out}" in stderr  # the real command line, python included
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "preempted"
    assert not out.exists()
    resumed = run_to_end(run_dir, out, *extra)
    for name in reference:
        assert resumed[name].equal(reference[name]), name


def test_a_second_ctrl_c_aborts_at_once_without_saving(tmp_path):
    run_dir = tmp_path / "aborted"
    # A save policy that never fires on its own, so any new checkpoint would come from the abort.
    code = (
        "import time, savegame\n"
        f"with savegame.Run({str(run_dir)!r}, save=savegame.Never()) as run:\n"
        "    print('ready', flush=True)\n"
        "    for _ in run.iterate(range(10**9)):\n"
        "        time.sleep(0.5)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode != 0
    assert "KeyboardInterrupt" in stderr
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "failed" and "Ctrl-C" in info["message"]
    assert not any((run_dir / "checkpoints").iterdir())
