"""How long preflight takes on the demo's CNN (digits 8x8), full and quick, beside one training
epoch of the same model (the anchor: what a check costs in epochs).

usage: python bench/bench_preflight.py [--reps 3]

Goals (issue 4, 2 CPU cores): full preflight <= 30 s, quick=True <= 5 s. Each timing is the median
of --reps runs in this process; the first preflight also pays torch's one-time set-up (the first
optimizer built costs ~2 s), so it is timed separately as "cold".
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from machine import machine

import savegame
from savegame.demo import preflight_setup


def one_epoch(setup: dict) -> float:
    model, loss_fn, data = setup["model"], setup["loss_fn"], setup["data"]
    optimizer = setup["optimizer"](model.parameters())
    start = time.perf_counter()
    for x, y in data:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
    return time.perf_counter() - start


def timed(quick: bool) -> tuple[float, savegame.PreflightReport]:
    setup = preflight_setup()
    start = time.perf_counter()
    report = savegame.preflight(setup["model"], setup["loss_fn"], setup["data"],
                                optimizer=setup["optimizer"], quick=quick)
    return time.perf_counter() - start, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    cold, _ = timed(quick=False)
    full = [timed(quick=False) for _ in range(args.reps)]
    quick = [timed(quick=True) for _ in range(args.reps)]
    epoch = statistics.median(one_epoch(preflight_setup()) for _ in range(args.reps))
    full_s, quick_s = statistics.median(t for t, _ in full), statistics.median(t for t, _ in quick)
    print(f"one training epoch (anchor)   {epoch:7.2f} s")
    print(f"preflight, first call (cold)  {cold:7.2f} s")
    print(f"preflight, full               {full_s:7.2f} s  = {full_s / epoch:5.1f} epochs  "
          f"(goal <= 30 s: {'met' if full_s <= 30 else 'MISSED'}); passed={full[0][1].passed}")
    print(f"preflight, quick=True         {quick_s:7.2f} s  = {quick_s / epoch:5.1f} epochs  "
          f"(goal <= 5 s: {'met' if quick_s <= 5 else 'MISSED'}); passed={quick[0][1].passed}")
    slowest = sorted(full[0][1].checks, key=lambda c: -c.seconds)[:3]
    print("slowest checks (full): " + ", ".join(f"{c.name} {c.seconds:.2f} s" for c in slowest))


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
