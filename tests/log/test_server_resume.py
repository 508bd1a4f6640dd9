"""The acceptance test of resume-correct curves: SIGKILL a training run after it logged past its
last checkpoint, rerun it, and the real TensorBoard server (both loaders) shows exactly one value
per step, the same values as a run never killed."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from savegame.checkpoint.store import list_checkpoints
from tb_read import read_scalars
from tbserver import LOADERS, tensorboard

SCRIPT = Path(__file__).parents[1] / "fixtures" / "train_script.py"
# --sleep: the run must last long enough to be caught between a checkpoint and the next one
ARGS = ["--epochs", "4", "--width", "768", "--every", "15", "--sleep", "0.02"]


def command(run_dir):
    return [sys.executable, str(SCRIPT), str(run_dir), str(run_dir) + ".safetensors", *ARGS]


def run_to_end(run_dir):
    done = subprocess.run(command(run_dir), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


def logged_steps(run_dir):
    try:
        return [p.step for p in read_scalars(run_dir).get("loss/train", [])]
    except Exception:  # noqa: BLE001 - the files are being written; try again
        return []


def kill_after_logging_past_a_checkpoint(run_dir):
    """Start the run and SIGKILL it once its files hold steps after its newest checkpoint."""
    for _ in range(5):
        process = subprocess.Popen(command(run_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            checkpoints = list_checkpoints(run_dir / "checkpoints") if (run_dir / "checkpoints").is_dir() else []
            steps = logged_steps(run_dir)
            if checkpoints and steps and max(steps) > checkpoints[-1].step + 2:
                process.send_signal(signal.SIGKILL)
                process.wait()
                # what the file held at the kill: the dead process's steps past the checkpoint
                return checkpoints[-1].step, max(logged_steps(run_dir))
            time.sleep(0.05)
        if process.poll() == 0:
            pytest.fail("the run finished before it logged past a checkpoint; make it longer")
        process.kill()
        process.wait()
    pytest.fail("could not catch the run with logs past its newest checkpoint")


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run_to_end(root / "straight")
    checkpoint_step, logged = kill_after_logging_past_a_checkpoint(root / "killed")
    assert logged > checkpoint_step  # the precondition: the dead process logged past its checkpoint
    run_to_end(root / "killed")
    return root


@pytest.mark.parametrize("load_fast", LOADERS.values(), ids=LOADERS.keys())
def test_the_server_shows_one_value_per_step_after_a_sigkill_and_a_rerun(logdir, load_fast):
    expected = read_scalars(logdir / "straight")
    with tensorboard(logdir, load_fast=load_fast) as server:
        for tag, points in expected.items():
            straight = server.wait_scalars("straight", tag, len(points))
            killed = server.wait_scalars("killed", tag, len(points))
            steps = [step for _, step, _ in killed]
            assert steps == sorted(set(steps)), f"{tag}: a step twice or out of order"
            assert [(s, v) for _, s, v in killed] == [(s, v) for _, s, v in straight], tag
        assert set(server.scalar_tags()["killed"]) == set(expected)


@pytest.mark.parametrize("load_fast", LOADERS.values(), ids=LOADERS.keys())
def test_a_server_watching_during_the_kill_and_the_rerun(tmp_path, load_fast):
    run_dir = tmp_path / "live"
    run_dir.mkdir()
    straight = tmp_path / "straight"
    run_to_end(straight)
    expected = [(p.step, p.value) for p in read_scalars(straight)["loss/train"]]
    with tensorboard(tmp_path, load_fast=load_fast) as server:
        kill_after_logging_past_a_checkpoint(run_dir)
        time.sleep(3)  # let the server read what the dead process wrote
        run_to_end(run_dir)
        time.sleep(3)
        points = server.wait_scalars("live", "loss/train", len(expected))
        print(load_fast, len(points), len(expected))
        assert [(s, v) for _, s, v in points] == expected
