"""Ctrl-C during preflight stops it within one training step, with the user's model, optimizer and
random state as they were, inside a ``savegame.Run`` (whose handler would otherwise turn it into
"save at the end of this step") and outside one."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

import savegame
from savegame.preflight import PreflightInterrupted

FEATURES, CLASSES = 16, 4


@pytest.fixture(autouse=True)
def ctrl_c_reaches_this_process():
    """These tests press Ctrl-C, so Python's own SIGINT handler must be in place. A test process
    started in the background by a non-interactive shell (``cmd &``) inherits SIGINT ignored, and
    an ignored SIGINT stays ignored by design (tested below): put the default back meanwhile."""
    inherited = signal.getsignal(signal.SIGINT)
    if inherited is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, inherited)


def data(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, FEATURES, generator=g)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    return [(x[:32], y[:32]), (x[32:], y[32:])]


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, CLASSES))


class CtrlCAt:
    """A cross-entropy that presses Ctrl-C (SIGINT to this process) at its ``at``-th call, ``times``
    times, and counts the calls after that."""

    def __init__(self, at: int, times: int = 1):
        self.at, self.times, self.calls, self.after = at, times, 0, 0

    def __call__(self, out, y):
        self.calls += 1
        if self.calls == self.at:
            for _ in range(self.times):
                signal.raise_signal(signal.SIGINT)
                for _ in range(1000):  # let the handler run (Python runs it between bytecodes)
                    pass
        elif self.calls > self.at:
            self.after += 1
        return nn.functional.cross_entropy(out, y)


def test_ctrl_c_stops_preflight_at_the_end_of_the_step_and_leaves_everything_as_it_was():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)  # a step would add state
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    handler = signal.getsignal(signal.SIGINT)
    loss = CtrlCAt(at=40)  # inside a training check (the cheap ones call the loss a dozen times)
    with pytest.raises(KeyboardInterrupt) as caught:
        savegame.preflight(model, loss, data(), optimizer=optimizer, steps=10_000, time_budget=None)
    assert isinstance(caught.value, PreflightInterrupted)
    assert caught.value.check in ("overfit one batch", "input-independent baseline")  # a training check
    assert f"in the check {caught.value.check!r}" in str(caught.value)
    assert "as they were" in str(caught.value)
    assert loss.after <= 1  # stopped within the step it was in: at most that step's own loss after it
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not optimizer.state  # the user's optimizer was never stepped
    assert torch.equal(rng[0], torch.get_rng_state())
    assert (rng[1] == np.random.get_state()[1]).all() and rng[2] == random.getstate()
    assert signal.getsignal(signal.SIGINT) is handler
    assert torch.is_grad_enabled() and not torch.are_deterministic_algorithms_enabled()
    # and the next preflight runs as usual
    assert savegame.preflight(mlp(), nn.CrossEntropyLoss(), data(), quick=True).passed


def test_a_second_ctrl_c_stops_at_once():
    loss = CtrlCAt(at=40, times=2)
    with pytest.raises(PreflightInterrupted, match="a second Ctrl-C"):
        savegame.preflight(mlp(), loss, data(), steps=10_000, time_budget=None)
    assert loss.after == 0  # raised inside the loss call that pressed it


def test_the_installed_sigint_handler_is_back_afterwards_and_an_ignored_sigint_stays_ignored():
    seen = []
    custom = lambda number, frame: seen.append(number)  # noqa: E731
    previous = signal.signal(signal.SIGINT, custom)
    try:
        assert savegame.preflight(mlp(), nn.CrossEntropyLoss(), data(), quick=True).passed
        assert signal.getsignal(signal.SIGINT) is custom
        with pytest.raises(PreflightInterrupted):  # the custom handler does not swallow it meanwhile
            savegame.preflight(mlp(), CtrlCAt(at=40), data(), steps=10_000, time_budget=None)
        assert signal.getsignal(signal.SIGINT) is custom and not seen
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # e.g. a background job: Ctrl-C is not for it
        loss = CtrlCAt(at=40)
        report = savegame.preflight(mlp(), loss, data(), steps=30)  # runs to the end
        assert loss.after > 0 and report["determinism"].status == "pass"
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_preflight_in_another_thread_installs_nothing():
    found = {}

    def work():
        found["report"] = savegame.preflight(mlp(), nn.CrossEntropyLoss(), data(), quick=True)

    handler = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert found["report"].passed and signal.getsignal(signal.SIGINT) is handler


# -- a real process, a real SIGINT --------------------------------------------------------------

SCRIPT = textwrap.dedent("""
    import sys, torch, savegame
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    # random labels: nothing to learn, so the input-independent baseline runs its whole (huge) step budget
    data = [(torch.randn(128, 256), torch.randint(0, 10, (128,))) for _ in range(2)]
    calls = 0

    def loss_fn(out, y):
        global calls
        calls += 1
        if calls == 30:  # inside the training checks (the others call it about a dozen times)
            print("training", flush=True)
        return nn.functional.cross_entropy(out, y)

    with savegame.Run(sys.argv[1]) as run:
        run.preflight(model, loss_fn, data, steps=100_000)
        print("preflight finished", flush=True)
        for step in range(3):
            run.step += 1
            run.save(force=True)
    print("done", flush=True)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_ctrl_c_stops_preflight_in_a_run_at_once_in_a_real_process(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    folder = tmp_path / "run"
    process = subprocess.Popen([sys.executable, str(script), str(folder)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = process.stdout.readline()
        assert line.strip() == "training", (line, process.stderr.read() if process.poll() is not None else "")
        pressed = time.monotonic()
        os.kill(process.pid, signal.SIGINT)
        try:
            out, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("preflight went on after Ctrl-C (still running 30 s later)")
        waited = time.monotonic() - pressed
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert waited < 15  # generous: a step of this model is milliseconds
    assert process.returncode in (-signal.SIGINT, 128 + signal.SIGINT, 1), (process.returncode, err)
    assert "PreflightInterrupted" in err and "as they were" in err, err
    assert "checks_" not in err  # the traceback ends at preflight(), not deep inside a check
    assert "saving at the end of this step" not in err  # not taken for "save and exit"
    assert "preflight finished" not in out and "done" not in out
    assert not list(folder.glob("checkpoints/*"))  # nothing saved
    info = json.loads((folder / "run.json").read_text())
    assert info["status"] == "failed" and "Ctrl-C" in (info.get("message") or ""), info
