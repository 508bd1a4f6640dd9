"""The doctor's numbers (issue 5), each against its anchor in the same run.

1. Accuracy on the labeled set (tests/doctor/cases.py: 18 real trainings logged with torch's
   SummaryWriter), seed 0 (the rules were tuned on it) and held-out seeds 1 and 2, with the
   signals and on the curves alone; prints the confusion table. Goal: >= 90%, no alarm on a
   healthy run.
2. ``savegame doctor`` on a run with 100,000 points per series (written by torch's writer):
   the whole command in a fresh process, against loading the same run with tensorboard's own
   EventAccumulator. Goal: <= 2 s.
3. The live doctor with signals every 50 steps on the demo's training step: the same loop with
   ``Run(doctor=Doctor(every=50))`` and with ``doctor=False``, interleaved; and the doctor's own
   time (signal samples, judging at each validation, run.log bookkeeping) over the step time.
   Goal: <= 1%.

    python bench/bench_doctor.py                 # everything (~5 min on 2 cores)
    python bench/bench_doctor.py --only speed    # accuracy | speed | live
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "doctor"))
sys.path.insert(0, str(ROOT / "bench"))

from machine import machine  # noqa: E402


def accuracy(seeds: list[int]) -> None:
    from cases import generate

    from savegame.doctor import VERDICTS, diagnose, load_runs

    for signals in (True, False):
        confusion: Counter = Counter()
        per_seed = []
        for seed in seeds:
            with tempfile.TemporaryDirectory() as folder:
                labels = generate(Path(folder), seed=seed)
                right = 0
                for run in load_runs(folder):
                    if not signals:
                        run.scalars = {t: s for t, s in run.scalars.items() if not t.startswith("doctor/")}
                    verdict = diagnose(run).verdict or "cannot judge"
                    confusion[labels[run.name], verdict] += 1
                    right += verdict == labels[run.name]
                per_seed.append(f"seed {seed}: {right}/{len(labels)}")
        total = sum(confusion.values())
        right = sum(n for (label, verdict), n in confusion.items() if label == verdict)
        healthy_alarms = sum(n for (label, verdict), n in confusion.items() if label == "healthy" != verdict)
        print(f"\n## accuracy {'with signals' if signals else 'on the curves alone'}: {right}/{total} "
              f"= {right / total:.1%} ({', '.join(per_seed)}); alarms on healthy runs: {healthy_alarms}")
        columns = [v for v in VERDICTS] + (["cannot judge"] if any(v == "cannot judge" for _, v in confusion) else [])
        print("| true \\ verdict | " + " | ".join(columns) + " |")
        print("|---|" + "---|" * len(columns))
        for label in VERDICTS:
            print(f"| {label} | " + " | ".join(str(confusion[label, v] or "·") for v in columns) + " |")


def write_big_run(folder: Path, points: int) -> None:
    import math

    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(folder)) as writer:
        for step in range(1, points + 1):
            train = 2 * math.exp(-step / (points / 5)) + 0.05 + 0.02 * math.sin(step)
            writer.add_scalar("loss/train", train, step)
            writer.add_scalar("loss/val", train + 0.1, step)


def speed(points: int, repeats: int) -> None:
    from tensorboard.backend.event_processing import event_accumulator as ea

    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        started = time.perf_counter()
        write_big_run(run, points)
        print(f"\n## savegame doctor on {points:,} points per series (2 series, torch's writer; "
              f"written in {time.perf_counter() - started:.0f} s)")
        command = [sys.executable, "-m", "savegame.cli", "doctor", folder]
        ours, anchor = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            ours.append(time.perf_counter() - started)
            assert done.returncode == 0 and "run" in done.stdout, done.stderr
            started = time.perf_counter()
            accumulator = ea.EventAccumulator(str(run), size_guidance={ea.SCALARS: 0})
            accumulator.Reload()
            assert len(accumulator.Scalars("loss/train")) == points
            anchor.append(time.perf_counter() - started)
        mine, theirs = statistics.median(ours), statistics.median(anchor)
        print(f"`savegame doctor` (a new process: start, read, judge, print): median {mine:.2f} s (goal <= 2 s)")
        print(f"tensorboard's EventAccumulator, only loading the same run in-process: median {theirs:.2f} s")
        print(f"ratio: the whole doctor command takes {mine / theirs:.2f}x the anchor's load alone")
        print(f"verdict line: {next(line for line in done.stdout.splitlines() if line.startswith('run '))}")


def live(epochs: int, repeats: int) -> None:
    import torch

    import savegame
    from savegame import demo

    torch.set_num_threads(2)
    train_set, (val_images, val_labels) = demo.load_digits(0.2, 0)

    def trial(folder: Path, doctor) -> tuple[float, int, object]:
        """Median seconds per training step (batch loop and run.log; validation excluded)."""
        torch.manual_seed(0)
        loader = torch.utils.data.DataLoader(train_set, batch_size=32, shuffle=True)
        net = demo.make_model(64)
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        run = savegame.Run(folder, save=savegame.Never(), doctor=doctor)
        times = []
        with run:
            run.track(model=net, optimizer=opt)
            for _ in run.epochs(epochs):
                started = time.perf_counter()
                for images, labels in run.iterate(loader):
                    logits = net(demo.shift(images))
                    loss = torch.nn.functional.cross_entropy(logits, labels)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    hits = (logits.argmax(1) == labels).sum().item()
                    run.log({"loss/train": loss.detach(), "acc/train": hits / len(labels)})
                    now = time.perf_counter()
                    times.append(now - started)
                    started = now
                val_loss, val_acc, _ = demo.evaluate(net, val_images, val_labels)
                run.log({"loss/val": val_loss, "acc/val": val_acc})
        return statistics.median(times), run.step, run._doctor

    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", savegame.DoctorWarning)  # its verdicts are not measured here
        plain, doctored, judging, steps = [], [], [], 0
        for i in range(repeats):  # interleaved, so drifts of the machine hit both
            step_time, steps, _ = trial(Path(folder) / f"plain{i}", False)
            plain.append(step_time)
            step_time, steps, live_doctor = trial(Path(folder) / f"doctor{i}", savegame.Doctor(every=50))
            doctored.append(step_time)
            judging.append(live_doctor.seconds)
        base, with_doctor = statistics.median(plain), statistics.median(doctored)
        print(f"\n## live doctor, signals every 50 steps, on the demo's step ({steps} steps, {epochs} epochs, "
              f"{repeats} interleaved trials each)")
        print(f"median demo step without the doctor: {base * 1e3:.2f} ms; with it: {with_doctor * 1e3:.2f} ms "
              f"({100 * (with_doctor - base) / base:+.1f}%; trial-to-trial spread of the anchor alone: "
              f"{min(plain) * 1e3:.1f}-{max(plain) * 1e3:.1f} ms)")
        signal_cost = signal_sample_cost(train_set)
        judge = statistics.median(judging)
        own = (signal_cost * steps / 50 + judge) / (base * steps)
        print(f"the doctor's own time: {signal_cost * 1e3:.2f} ms per signal sample (every 50 steps: "
              f"{signal_cost / 50 / base:.3%} of a step) + judging {judge * 1e3:.1f} ms over {epochs} "
              f"validations = {own:.2%} of the training steps' time (goal <= 1%)")


def signal_sample_cost(train_set) -> float:
    """Seconds one signal sample adds to an optimizer step (every=1 against none, same steps)."""
    import torch

    from savegame import demo
    from savegame.doctor.signals import Signals

    images, labels = train_set[:32]
    net = demo.make_model(64)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)

    def steps(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            loss = torch.nn.functional.cross_entropy(net(images), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return time.perf_counter() - started

    steps(20)
    base, sampled = [], []
    for _ in range(5):
        base.append(steps(40))
        with Signals(net, opt, every=1, log=lambda values, step: [float(v) for v in values.values()]):
            sampled.append(steps(40))
    return max(statistics.median(sampled) - statistics.median(base), 0.0) / 40


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["accuracy", "speed", "live"], default=None)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    import tensorboard

    print(machine(tensorboard=tensorboard.__version__))
    if args.only in (None, "accuracy"):
        accuracy(args.seeds)
    if args.only in (None, "speed"):
        speed(args.points, repeats=5)
    if args.only in (None, "live"):
        live(epochs=4, repeats=5)


if __name__ == "__main__":
    main()
