"""How much a run.save() costs when its policy says "not now" (goal: <= 5 µs).

The anchor is what a hand-written loop pays for the same decision: `if step % 500 == 0:`
inside a function call. Both are timed in the same process, interleaved, best of several rounds.

usage: python bench/bench_skip_save.py [--calls 200000]
"""

import argparse
import platform
import tempfile
import time

import torch

import savegame


def per_call(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}; python {platform.python_version()}; "
          f"torch {torch.__version__}")
    policies = {
        "EverySteps(500)": savegame.EverySteps(500),
        "EverySteps(500) | EveryEpochs(1)": savegame.EverySteps(500) | savegame.EveryEpochs(1),
        "EveryEpochs(1) | OnImprovement": savegame.EveryEpochs(1) | savegame.OnImprovement("loss/val"),
    }
    step = 1

    def by_hand():
        if step % 500 == 0:
            raise AssertionError("never reached")

    print(f"{'policy':40s} {'savegame µs':>12s} {'by hand µs':>11s} {'ratio':>7s}")
    worst = 0.0
    for name, policy in policies.items():
        with tempfile.TemporaryDirectory() as folder:
            with savegame.Run(folder, save=policy, handle_signals=False) as run:
                run.step = 1
                ours, anchor = [], []
                for _ in range(args.rounds):
                    ours.append(per_call(run.save, args.calls))
                    anchor.append(per_call(by_hand, args.calls))
                assert run.checkpoints == [], "the policy saved during the benchmark"
        best, base = min(ours) * 1e6, min(anchor) * 1e6
        worst = max(worst, best)
        print(f"{name:40s} {best:12.2f} {base:11.2f} {best / base:6.1f}x")
    verdict = "met" if worst <= 5 else "MISSED"
    print(f"skipped run.save(): worst {worst:.2f} µs per call (goal <= 5 µs: {verdict})")


if __name__ == "__main__":
    main()
