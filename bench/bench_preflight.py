"""How long preflight takes, full and quick, beside the cost of plain training of the same model
(the anchor, measured in the same run: what preflight costs in training steps or epochs).

Two setups:

- ``demo``: the demo's CNN on the digits (8x8), anchored on one training epoch;
- ``mnist``: the ``Net`` of PyTorch's official MNIST example (pytorch/examples, mnist/main.py:
  two convolutions, max-pool, dropout, two linear layers, log_softmax with ``F.nll_loss``,
  batch 64, Adadelta lr=1.0) on random 1x28x28 inputs normalised like MNIST, 10 classes, each
  class a bright band so there is something to learn (no download), anchored on plain training
  steps of batch 64.

usage: python bench/bench_preflight.py [--reps 3] [--setups demo,mnist]

Goals (issue 4, 2 CPU cores): full preflight <= 30 s, quick=True <= 5 s. Each timing is the median
of --reps runs in this process (with the range); the first preflight also pays torch's one-time
set-up (the first optimizer built costs ~2 s), so it is timed separately as "cold". On a shared
machine the seconds swing with the load; the "work" line does not: the samples that went through
the model's forward during one preflight, and what they add up to in training steps.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import torch
from machine import machine
from torch import nn
from torch.nn import functional as F

import savegame
from savegame.examples.digits import preflight_setup

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the normalisation of pytorch/examples mnist/main.py
ANCHOR_STEPS = 20  # plain training steps timed for the mnist anchor


class Net(nn.Module):
    """pytorch/examples mnist/main.py's ``Net``, unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)


def mnist_setup(n: int = 640) -> dict[str, Any]:
    """The example's model, loss, optimizer and a DataLoader of batch 64 over MNIST-shaped data."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.3
    for k in range(10):
        x[y == k, 0, 4 + 2 * k:6 + 2 * k, 4:24] += 0.7  # a bright band per class
    x = (x - MNIST_MEAN) / MNIST_STD
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True,
                                         generator=torch.Generator().manual_seed(1))
    torch.manual_seed(1)
    return {"model": Net(), "loss_fn": F.nll_loss, "data": loader,
            "optimizer": lambda params: torch.optim.Adadelta(params, lr=1.0)}


def train_steps(setup: dict, steps: int | None) -> float:
    """Seconds for ``steps`` plain training steps (None: one epoch of the loader)."""
    model, loss_fn, data = setup["model"], setup["loss_fn"], setup["data"]
    model.train()
    optimizer = setup["optimizer"](model.parameters())
    batches = list(data) if steps is None else [b for _, b in zip(range(steps), _forever(data))]
    start = time.perf_counter()
    for x, y in batches:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
    return time.perf_counter() - start


def _forever(data):
    while True:
        yield from data


class Passes:
    """Samples through the model's forward during preflight, with and without grad: the work done,
    which the machine's load does not change. A forward hook on the user's model rides along in
    every copy preflight makes (deepcopy keeps hooks; a plain function is not copied, so all the
    copies count into this one object)."""

    def __init__(self) -> None:
        self.grad = self.no_grad = 0
        counts = self

        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            n = args[0].shape[0] if args and isinstance(args[0], torch.Tensor) and args[0].dim() else 0
            if torch.is_grad_enabled():
                counts.grad += n
            else:
                counts.no_grad += n
        self.hook = hook

    def steps(self, batch: int) -> float:
        """In training steps of ``batch`` samples (forward + backward ~ 3 forwards; a forward
        without grad counts 1/3 of a step)."""
        return (self.grad + self.no_grad / 3) / batch


def timed(make: Callable[[], dict], quick: bool) -> tuple[float, savegame.PreflightReport, Passes]:
    torch.manual_seed(0)  # the same initial weights every repetition (the demo's model is not seeded)
    setup = make()
    passes = Passes()
    handle = setup["model"].register_forward_hook(passes.hook)
    start = time.perf_counter()
    report = savegame.preflight(setup["model"], setup["loss_fn"], setup["data"],
                                optimizer=setup["optimizer"], quick=quick)
    elapsed = time.perf_counter() - start
    handle.remove()
    return elapsed, report, passes


def bench(label: str, make: Callable[[], dict], anchor_steps: int | None, reps: int, cold: bool) -> None:
    print(f"-- {label}")
    if cold:
        first, _, _ = timed(make, quick=False)
    full = [timed(make, quick=False) for _ in range(reps)]
    quick = [timed(make, quick=True) for _ in range(reps)]
    anchor = statistics.median(train_steps(make(), anchor_steps) for _ in range(reps))
    batch = next(iter(make()["data"]))[0].shape[0]
    unit = "epochs" if anchor_steps is None else f"x {anchor_steps} steps"
    what = "one training epoch" if anchor_steps is None else f"{anchor_steps} training steps"
    full_s, quick_s = statistics.median(t for t, _, _ in full), statistics.median(t for t, _, _ in quick)
    print(f"{what + ' (anchor)':30}{anchor:7.2f} s")
    if cold:
        print(f"{'preflight, first call (cold)':30}{first:7.2f} s")
    for name, runs, median, goal in (("full", full, full_s, 30), ("quick=True", quick, quick_s, 5)):
        spread = f"{min(t for t, _, _ in runs):.2f}-{max(t for t, _, _ in runs):.2f}"
        passes = runs[0][2]
        print(f"{'preflight, ' + name:30}{median:7.2f} s  = {median / anchor:5.1f} {unit}  (range {spread} s; "
              f"goal <= {goal} s: {'met' if median <= goal else 'MISSED'}); passed={runs[0][1].passed}")
        print(f"{'':30}work: {passes.grad} samples forward with grad, {passes.no_grad} without "
              f"= {passes.steps(batch):.0f} training steps of {batch}")
    checks = full[0][1].checks
    slowest = sorted(checks, key=lambda c: -c.seconds)[:4]
    print("slowest checks (full): " + ", ".join(f"{c.name} {c.seconds:.2f} s" for c in slowest))
    for c in checks:
        if c.status != "pass":
            print(f"  [{c.status}] {c.name}: {c.message}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--setups", default="demo,mnist", help="comma-separated: demo, mnist")
    args = parser.parse_args()
    print(machine())
    setups = {"demo": ("the demo's CNN (digits 8x8)", preflight_setup, None),
              "mnist": ("pytorch/examples MNIST Net (1x28x28, batch 64, Adadelta)", mnist_setup, ANCHOR_STEPS)}
    for i, name in enumerate(s.strip() for s in args.setups.split(",")):
        label, make, steps = setups[name]
        bench(label, make, steps, args.reps, cold=i == 0)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
