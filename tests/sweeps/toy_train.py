"""The training functions the sweep tests run: a 1-d linear regression that takes a few
milliseconds per step (``sleep`` makes it slower, for the kill tests), with variants that fail."""

import math
import os
import time

import torch

# The spec of the sweeps killed by the tests (tests/sweeps/test_sweep_kill.py, the kill storm of
# tests/reliability/job_kills.py): 4 epochs of 10 steps, a checkpoint after each epoch.
KILL_SPEC = """train: toy_train:train
objective: {metric: loss/val, direction: minimize}
n_trials: %(n)d
sampler: random
seed: 0
space:
  lr: {type: float, low: 0.01, high: 0.3, log: true}
  epochs: 4
  steps: 10
  sleep: %(sleep)s
"""


def train(config, run):
    """Fit y = 3x; logs loss/val at each of ``epochs`` epochs of ``steps`` steps and saves a checkpoint
    after it (``report_by_save``: only saves, with loss/val among the checkpoint's metrics)."""
    torch.manual_seed(config.get("seed", 0))
    net = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(net.parameters(), lr=config["lr"])
    run.track(model=net, optimizer=opt)
    x = torch.linspace(-1, 1, 32).unsqueeze(1)
    for _ in run.epochs(config.get("epochs", 3)):
        for _ in run.iterate(range(config.get("steps", 10))):
            loss = (net(x) - 3 * x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log("loss/train", loss.detach())
            if config.get("sleep"):
                time.sleep(config["sleep"])
        with torch.no_grad():
            val = float((net(x) - 3 * x).pow(2).mean())
        if config.get("report_by_save"):
            run.save(metrics={"loss/val": val})  # the objective reaches Optuna through the checkpoint
        else:
            run.log("loss/val", val)
            run.save()
        marker = os.environ.get("TOY_STARTED")
        if marker:  # tells a kill test that a trial is under way, with a checkpoint behind it
            with open(marker, "a") as file:
                file.write(f"{run.dir.name} {run.step}\n")


def train_raises(config, run):
    if config["lr"] > 0.05:
        raise RuntimeError("a bug in the user's loop")
    train(config, run)


def train_silent(config, run):
    """Never logs the objective."""
    for _ in run.iterate(range(3)):
        run.log("loss/train", 1.0)


def train_nan(config, run):
    for _ in run.iterate(range(3)):
        run.log("loss/val", math.nan)
