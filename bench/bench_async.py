"""Asynchronous saves (issue 14): how long ``run.save()`` blocks the loop, and how much a loop
that saves often slows down, against an in-memory copy, ``torch.save`` + fsync and the
synchronous save, all in one run.

(1) Stall: a 1 GiB CPU state (64 fp32 tensors of 16 MiB, an ``nn.Module``'s parameters) saved by
    ``Run(async_save=True).save()``; the time until it returns is the stall. Beside it, in the same
    run: an in-memory copy of the same state into buffers allocated beforehand (the least a
    snapshot must do), the same copy into fresh tensors (``clone``), ``torch.save`` + fsync, and
    the synchronous ``run.save()``. The first async save allocates its host buffers (page faults);
    the ones after reuse them: both are printed. Goals: the async stall <= 1.3x the in-memory copy,
    and <= 1/5 of torch.save + fsync.
(2) Loop slowdown: a loop of CPU steps (one torch thread, a 512x512 matmul and an in-place update
    of the state), saving every N steps, N set from the synchronous save time measured first so
    that sync saves take about 25% of the loop; the loop without saves, with sync saves and with
    async saves, in rounds. Each run saves once before the clock starts: the first async save
    allocates the host buffers (once a process; (1) prints what it costs). Goal: async <= 5% slower than no saves; the sync figure beside it.

(3) Incremental saves, bytes: a fine-tuning state (a frozen backbone, a trained head and its
    optimizer state) saved with ``incremental=False`` and with incremental saves (the default);
    the bytes each checkpoint wrote (its files less those hard-linked from an earlier one) against
    a full save's, for 90% frozen with AdamW, SGD with and without momentum, and 99% frozen
    (LoRA-like). Goal: <= 15% of a full save with 90% frozen.
(4) Incremental saves, change detection: what deciding what changed costs per GiB of state
    (``plan_sharing`` alone), when nothing changed (every byte hashed to confirm) and after an
    optimizer step (version counters settle it, nothing hashed), beside a raw write + fsync.

    python bench/bench_async.py                 # 1 GiB in (1) and (4), 256 MiB in (2), 512 MiB in (3)
    python bench/bench_async.py --size 128MiB   # quick run
    python bench/bench_async.py --parts 34      # only the incremental parts
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_save_restore import parse_size  # noqa: E402
from machine import machine  # noqa: E402

import savegame  # noqa: E402

N_TENSORS = 64


class Big(nn.Module):
    """64 fp32 parameters, like the layers of a mid-sized model."""

    def __init__(self, total_bytes: int) -> None:
        super().__init__()
        numel = total_bytes // 4 // N_TENSORS
        for i in range(N_TENSORS):
            self.register_parameter(f"p{i:02d}", nn.Parameter(torch.randn(numel)))


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def torch_save_fsync(state: dict, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------------------- (1) stall

def stall(total_bytes: int, repeats: int, work: Path) -> None:
    model = Big(total_bytes)
    state = model.state_dict()
    buffers = {k: torch.empty_like(v) for k, v in state.items()}
    rows: dict[str, list[float]] = {name: [] for name in (
        "in-memory copy into buffers allocated once", "in-memory copy into fresh tensors (clone)",
        "torch.save + fsync", "savegame run.save(), sync", "savegame run.save(), async: first save",
        "savegame run.save(), async: later saves (buffers reused)")}
    names = list(rows)
    async_run = savegame.Run(work / "async", async_save=True, keep=savegame.Keep(last=1))
    async_run.track(model=model)
    sync_run = savegame.Run(work / "sync", keep=savegame.Keep(last=1))
    sync_run.track(model=model)
    for index in range(repeats):
        with torch.no_grad():  # training changes every tensor between saves (so none is shared)
            for p in model.parameters():
                p.add_(1e-3)
        rows[names[0]].append(timed(lambda: [buffers[k].copy_(v) for k, v in state.items()]))
        rows[names[1]].append(timed(lambda: [v.clone() for v in state.values()]))
        rows[names[2]].append(timed(lambda: torch_save_fsync(state, work / "torch.pt")))
        sync_run.step = index + 1
        rows[names[3]].append(timed(sync_run.save))
        async_run.step = index + 1
        rows[names[4] if index == 0 else names[5]].append(timed(async_run.save))
        async_run.wait()  # the write ends before the next measurement starts
    async_run.finish()
    sync_run.finish()

    size = f"{total_bytes / (1 << 30):.2f} GiB" if total_bytes >= 1 << 30 else f"{total_bytes >> 20} MiB"
    print(f"\n## (1) stall: {size} CPU state, {N_TENSORS} fp32 tensors; {repeats} repetitions, interleaved; medians")
    print("| | s |")
    print("|---|---|")
    median = {name: statistics.median(values) for name, values in rows.items()}
    for name in names:
        print(f"| {name} | {median[name]:.3f} |")
    ours = median[names[5]]
    over_copy, under_save = ours / median[names[0]], median[names[2]] / ours
    print(f"async stall (buffers reused) / in-memory copy: {over_copy:.2f}x (goal <= 1.3x: "
          f"{'met' if over_copy <= 1.3 else 'NOT met'}); against clone: {ours / median[names[1]]:.2f}x")
    print(f"torch.save + fsync / async stall: {under_save:.1f}x (goal >= 5x: {'met' if under_save >= 5 else 'NOT met'}); "
          f"sync run.save / async stall: {median[names[3]] / ours:.1f}x")
    print(f"host memory the async run keeps for its snapshots: {async_run._saver._buffers.nbytes / (1 << 20):.0f} MiB "
          f"(one copy of the state)")


# ---------------------------------------------------------------------------------- (2) loop slowdown

def loop(model: Big, run: savegame.Run | None, steps: int, every: int) -> tuple[float, float]:
    """``steps`` steps, ``run.save()`` every ``every``; wall seconds to the last step's end, and
    to the last save's end (with async saves, the wait for the last write, paid once a run)."""
    torch.manual_seed(0)
    x, w = torch.randn(512, 512), torch.randn(512, 512)
    tensors = list(model.parameters())
    if run is not None:  # a first save outside the clock: an async run allocates its host buffers
        run.step = 0    # there, once a process (part (1) times it), which a long run never sees again
        run.save()
        run.wait()
    started = time.perf_counter()
    with torch.no_grad():
        for step in range(1, steps + 1):
            y = x @ w
            for t in tensors:  # every tensor changes at every step, as an optimizer's step does
                t[:8].add_(y[0, :8], alpha=1e-6)
            if run is not None and step % every == 0:
                run.step = step
                run.save()
        looped = time.perf_counter() - started
        if run is not None:
            run.wait()
    return looped, time.perf_counter() - started


def slowdown(total_bytes: int, rounds: int, work: Path) -> None:
    model = Big(total_bytes)
    probe = savegame.Run(work / "probe", keep=savegame.Keep(last=1))
    probe.track(model=model)
    # five saves back to back: the later ones wait for the disk's write-back as a loop's saves do;
    # the state changes before each, as in the loop (an unchanged one would be shared, not written)
    def changed_then_saved(i: int) -> float:
        with torch.no_grad():
            for p in model.parameters():
                p[:8].add_(1e-6)
        probe.step = i
        return timed(probe.save)

    probed = [changed_then_saved(i) for i in range(1, 6)]
    save_seconds = statistics.median(probed[2:])
    probe.finish()
    step_seconds = loop(model, None, 200, 1)[0] / 200
    every = max(1, math.ceil(3 * save_seconds / step_seconds))  # a save per 3 saves' worth of steps: 25%
    saves = 8
    # then from real loops of sync saves, as measured below: on this disk a loop's saves wait for
    # the write-back of the ones before and take longer than the probe's (up to 5 tries)
    for _ in range(5):
        calibration = savegame.Run(work / "calibration", keep=savegame.Keep(last=1))
        calibration.track(model=model)
        with_saves = loop(model, calibration, saves * every, every)[0]
        calibration.finish()
        shutil.rmtree(work / "calibration", ignore_errors=True)
        computing = saves * every * step_seconds
        share = max(with_saves - computing, 0.0) / with_saves
        if 0.2 <= share <= 0.3:
            break
        # saving / computing should be 1/3: scale the steps between saves by what it is now
        every = max(1, math.ceil(every * 3 * max(with_saves - computing, 1e-9) / computing))
    steps = every * saves
    times: dict[str, list[float]] = {"no saves": [], "sync saves": [], "async saves": []}
    ends: dict[str, list[float]] = {name: [] for name in times}
    for index in range(rounds):
        for name in times:
            folder = work / f"loop-{index}-{name.split()[0]}"
            run = None if name == "no saves" else savegame.Run(folder, keep=savegame.Keep(last=1),
                                                               async_save=name == "async saves")
            if run is not None:
                run.track(model=model)
            looped, ended = loop(model, run, steps, every)
            times[name].append(looped)
            ends[name].append(ended)
            if run is not None:
                run.finish()
            shutil.rmtree(folder, ignore_errors=True)
    base = statistics.median(times["no saves"])
    print(f"\n## (2) loop slowdown: {total_bytes >> 20} MiB state; a step {1e3 * step_seconds:.1f} ms (1 torch thread), "
          f"a sync save {save_seconds:.2f} s alone; a save every {every} steps ({saves} saves, {steps} steps), set from "
          f"up to 5 loops of sync saves for them to take about 25% of the loop (what they took is below); "
          f"{rounds} rounds; medians")
    print("| | s, to the last step | over no saves | s, to the last save's end | over no saves |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        loop_s, end_s = statistics.median(values), statistics.median(ends[name])
        print(f"| {name} | {loop_s:.2f} | {100 * (loop_s / base - 1):+.1f}% | {end_s:.2f} | {100 * (end_s / base - 1):+.1f}% |")
    over = statistics.median(times["async saves"]) / base - 1
    print(f"async saves slow the loop by {100 * over:+.1f}% (goal <= 5%: {'met' if over <= 0.05 else 'NOT met'}); "
          f"sync saves by {100 * (statistics.median(times['sync saves']) / base - 1):+.1f}%; with async saves the "
          f"run also waits {statistics.median(ends['async saves']) - statistics.median(times['async saves']):.2f} s "
          "for its last write, once, at its end")


# ------------------------------------------------------------------------- (3) incremental: bytes

class FineTuned(nn.Module):
    """A frozen backbone and a trained head; ``trained`` is the head's share of the parameters."""

    def __init__(self, total_bytes: int, trained: float) -> None:
        super().__init__()
        numel = total_bytes // 4
        head = max(1, int(numel * trained))
        per = (numel - head) // 16
        self.backbone = nn.ParameterList([nn.Parameter(torch.randn(per), requires_grad=False) for _ in range(16)])
        self.head = nn.Parameter(torch.randn(head))


def new_bytes(checkpoint: Path) -> int:
    """Bytes this checkpoint wrote: its files, less the ones hard-linked from an earlier one."""
    return sum(f.stat().st_size for f in checkpoint.iterdir() if not f.name.startswith("shared-"))


def incremental_bytes(total_bytes: int, saves: int, work: Path) -> None:
    cases = [("90% frozen, AdamW (2 state tensors per trained parameter)", 0.10, "adamw"),
             ("90% frozen, SGD with momentum (1 state tensor)", 0.10, "momentum"),
             ("90% frozen, SGD without momentum (no state)", 0.10, "sgd"),
             ("99% frozen (LoRA-like), AdamW", 0.01, "adamw")]
    print(f"\n## (3) incremental saves: bytes written per checkpoint; {total_bytes >> 20} MiB of parameters, "
          f"{saves} saves, an optimizer step between saves; medians of the saves after the first")
    print("| state | full save, MiB | incremental, MiB | incremental / full | changed bytes / full | "
          "sync save s, full | sync save s, incremental |")
    print("|---|---|---|---|---|---|---|")
    for label, trained, optimizer in cases:
        results = {}
        for incremental in (False, True):
            torch.manual_seed(0)
            model = FineTuned(total_bytes, trained)
            params = [model.head]
            opt = (torch.optim.AdamW(params, lr=1e-3) if optimizer == "adamw" else
                   torch.optim.SGD(params, lr=1e-3, momentum=0.9 if optimizer == "momentum" else 0.0))
            folder = work / f"bytes-{optimizer}-{trained}-{incremental}"
            run = savegame.Run(folder, keep=savegame.Keep(last=2), incremental=incremental)
            run.track(model=model, optimizer=opt)
            written, seconds = [], []
            for step in range(1, saves + 1):
                model.head.grad = torch.randn_like(model.head)
                opt.step()
                run.step = step
                seconds.append(timed(run.save))
                written.append(new_bytes(run.checkpoints[-1].path))
            run.finish()
            changed = sum(t.numel() * t.element_size() for t in [model.head] + [
                v for state in opt.state.values() for v in state.values() if isinstance(v, torch.Tensor)])
            results[incremental] = (statistics.median(written[1:]), statistics.median(seconds[1:]), changed)
            shutil.rmtree(folder, ignore_errors=True)
        (full, full_s, changed), (inc, inc_s, _) = results[False], results[True]
        print(f"| {label} | {full / 2**20:.1f} | {inc / 2**20:.1f} | {100 * inc / full:.1f}% | "
              f"{100 * changed / full:.1f}% | {full_s:.3f} | {inc_s:.3f} |")
    print("goal: <= 15% of a full save's bytes with 90% of the parameters frozen. An incremental save writes "
          "what changed: the trained parameters and their optimizer state (the 'changed bytes' column), "
          "plus the manifest; with AdamW that alone is 25% of the state, so only a lossless scheme that "
          "does not write changed values could go lower")


# ---------------------------------------------------------------------- (4) incremental: deciding

def change_detection(total_bytes: int, repeats: int, work: Path) -> None:
    """What ``plan_sharing`` costs per GiB: the decision alone, against writing the bytes."""
    from savegame.checkpoint.commit import persist_incremental, snapshot
    from savegame.checkpoint.sharing import plan_sharing

    model = Big(total_bytes)
    state = {"model": model.state_dict()}
    first = snapshot(state, copy=False, fingerprints=True)
    _, stored = persist_incremental(first, work / "detect", step=1, epoch=0)
    unchanged = snapshot(state, copy=False, fingerprints=True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-3)
    changed = snapshot(state, copy=False, fingerprints=True)
    gib = total_bytes / (1 << 30)
    rows = {
        "unchanged, version counters equal: every byte hashed to confirm": lambda: plan_sharing(
            unchanged.tensors, stored, fingerprints=unchanged.fingerprints, previous_fingerprints=first.fingerprints),
        "unchanged, first save after a restart (no counters): every byte hashed": lambda: plan_sharing(
            unchanged.tensors, stored),
        "changed in place (an optimizer step): counters differ, nothing hashed": lambda: plan_sharing(
            changed.tensors, stored, fingerprints=changed.fingerprints, previous_fingerprints=first.fingerprints),
        "anchor: raw write + fsync of the same bytes": lambda: raw_write(changed.tensors, work / "raw.bin"),
    }
    print(f"\n## (4) change detection: deciding what changed in a {gib:.2f} GiB state ({N_TENSORS} tensors); "
          f"{repeats} repetitions; medians, per GiB")
    print("| case | s per GiB | GB/s |")
    print("|---|---|---|")
    for name, function in rows.items():
        seconds = statistics.median(timed(function) for _ in range(repeats)) / gib
        print(f"| {name} | {seconds:.4f} | {(1 << 30) / 1e9 / seconds if seconds else float('inf'):.1f} |")


def raw_write(tensors: dict, path: Path) -> None:
    with open(path, "wb", buffering=0) as f:
        for t in tensors.values():
            f.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
        os.fsync(f.fileno())
    path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=1 << 30, help="the state in (1) (default 1GiB)")
    parser.add_argument("--loop-size", type=parse_size, default=256 << 20, help="the state in (2) (default 256MiB)")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bytes-size", type=parse_size, default=512 << 20, help="the parameters in (3)")
    parser.add_argument("--parts", default="1234", help="which parts to run (default all: 1234)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the training thread; the background write gets the other core
    print(machine())
    warnings.simplefilter("ignore", UserWarning)
    with tempfile.TemporaryDirectory(prefix="bench-async-", dir=os.environ.get("BENCH_DIR")) as work:
        if "1" in args.parts:
            stall(args.size, args.repeats, Path(work))
        if "2" in args.parts:
            slowdown(args.loop_size, args.rounds, Path(work))
        if "3" in args.parts:
            incremental_bytes(args.bytes_size, 5, Path(work))
        if "4" in args.parts:
            change_detection(args.size, args.repeats, Path(work))


if __name__ == "__main__":
    main()
