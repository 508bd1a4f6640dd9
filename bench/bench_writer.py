"""Benchmark: savegame.SummaryWriter vs. torch.utils.tensorboard.SummaryWriter (the anchor), in one run.

(1) Caller cost of ``add_scalar`` with a Python float and with a 0-d CPU tensor: every call is
    timed on its own with ``time.perf_counter_ns`` (``--batch K`` times K calls at once and divides
    by K); median, p90, p99, mean, max in µs. The timer's own cost (one empty perf_counter_ns pair)
    is printed and is included in the per-call numbers. 1,000 untimed warm-up calls first (thread
    start, file creation). Goal: median <= 2 µs and >= 50x less than torch.
(2) Sustained throughput to disk: M scalars, 1 tag per step and 8 tags per step (a typical
    training loop), then ``close()``; rate = scalars / (first call -> ``close()`` returned), so the
    background encoding and writing are counted. Also printed: the loop's own time per call, i.e.
    what the caller paid while the writer's thread was busy. Goal: >= 100,000 scalars/s.
(3) Bytes on disk per scalar and read-back check, with the same input for both writers (the
    bytes of an event depend on its step and value, and the runs in (2) have different lengths):
    per variant, N scalars (half the calls pass a float, half a reused 0-d tensor changed in place
    before each call), ``flush()``, read back with tensorboard's EventAccumulator (size_guidance
    scalars=0) *before* ``close()``, ``close()``, read back again; the (tag, step, float32 value)
    multiset read must equal the one logged and every wall time must fall inside the run, or the
    script fails (exit 1). Bytes = every file under the log dir (recursive) / N.
    Goal: savegame <= torch.

Torch costs ~10-150 µs per call (bimodal: its own writer thread competes for the GIL), so it gets
fewer calls than savegame; per-call and per-scalar figures are comparable, totals are not.

    python bench/bench_writer.py           # 200k calls / 1M scalars for savegame
    python bench/bench_writer.py --quick   # smoke run, 10x fewer of everything (< 30 s)
    python bench/bench_writer.py --ours tensorboardX:SummaryWriter   # measure another writer
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import tensorboard
import torch
from machine import machine
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util
from torch.utils.tensorboard import SummaryWriter as TorchWriter

WARMUP = 1_000
TAGS8 = [f"train/metric{k}" for k in range(8)]


def load_writer(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr or "SummaryWriter")


def dir_bytes(path: Path) -> tuple[int, int]:
    files = [Path(root, name) for root, _, names in os.walk(path) for name in names]
    return sum(f.stat().st_size for f in files), len(files)


# ---------------------------------------------------------------------------------------------- (1)

def timer_overhead() -> float:
    pc = time.perf_counter_ns
    out = [0] * 100_000
    for i in range(len(out)):
        t0 = pc()
        out[i] = pc() - t0
    return float(np.median(out)) / 1e3


def time_calls(add, tag: str, value, calls: int, batch: int) -> np.ndarray:
    """Per-call µs of ``add(tag, value, step)``; one timer pair per ``batch`` calls."""
    pc = time.perf_counter_ns
    for step in range(WARMUP):
        add(tag, value, step)
    out = [0] * (calls // batch)
    step = WARMUP
    if batch == 1:
        for i in range(len(out)):
            t0 = pc()
            add(tag, value, step + i)
            out[i] = pc() - t0
    else:
        for i in range(len(out)):
            t0 = pc()
            for s in range(step, step + batch):
                add(tag, value, s)
            out[i] = pc() - t0
            step += batch
    return np.asarray(out, dtype=np.float64) / (1e3 * batch)


def latency(writer_cls, work: Path, calls: int, batch: int) -> dict[str, tuple[np.ndarray, float]]:
    """{value kind: (per-call µs, close() seconds)}; one writer (and log dir) per value kind."""
    results = {}
    for kind, value in (("float", 0.5), ("tensor", torch.tensor(0.5))):
        logdir = Path(tempfile.mkdtemp(prefix="lat-", dir=work))
        writer = writer_cls(log_dir=str(logdir))
        per_call = time_calls(writer.add_scalar, f"bench/{kind}", value, calls, batch)
        start = time.perf_counter()
        writer.close()
        results[kind] = (per_call, time.perf_counter() - start)
        shutil.rmtree(logdir)
    return results


# ---------------------------------------------------------------------------------------------- (2)

def throughput(writer_cls, work: Path, scalars: int, tags_per_step: int) -> dict[str, float]:
    logdir = Path(tempfile.mkdtemp(prefix=f"tp{tags_per_step}-", dir=work))
    writer = writer_cls(log_dir=str(logdir))
    add = writer.add_scalar
    steps = scalars // tags_per_step
    gc.collect()
    start = time.perf_counter()
    if tags_per_step == 1:
        for step in range(steps):
            add("train/loss", step * 1e-6, step)
    else:
        tags = TAGS8[:tags_per_step]
        for step in range(steps):
            base = step * 1e-6
            for k, tag in enumerate(tags):
                add(tag, base + k, step)
    looped = time.perf_counter()
    writer.close()
    closed = time.perf_counter()
    size, nfiles = dir_bytes(logdir)
    shutil.rmtree(logdir)
    n = steps * tags_per_step
    return {"n": n, "loop": looped - start, "close": closed - looped, "total": closed - start,
            "rate": n / (closed - start), "bytes": size, "files": nfiles, "bps": size / n}


# ---------------------------------------------------------------------------------------------- (3)

def value_for(step: int, k: int) -> float:
    return ((step * 7919 + k * 104729) % 100_003) / 997.0 - 50.0


def read_back(logdir: Path) -> tuple[Counter, list[float], int]:
    """(tag, step, float32 value) multiset, wall times, and how many were tensor-style scalars."""
    got: Counter = Counter()
    walls: list[float] = []
    tensor_style = 0
    for root, _, names in os.walk(logdir):
        if not any("tfevents" in name for name in names):
            continue
        acc = EventAccumulator(root, size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        tags = acc.Tags()
        for tag in tags.get("scalars", []):
            for ev in acc.Scalars(tag):
                got[(tag, ev.step, float(np.float32(ev.value)))] += 1
                walls.append(ev.wall_time)
        for tag in tags.get("tensors", []):  # new-style scalars (scalars plugin, tensor payload)
            if acc.SummaryMetadata(tag).plugin_data.plugin_name != "scalars":
                continue
            for ev in acc.Tensors(tag):
                got[(tag, ev.step, float(np.float32(tensor_util.make_ndarray(ev.tensor_proto).item())))] += 1
                walls.append(ev.wall_time)
                tensor_style += 1
    return got, walls, tensor_style


def compare(label: str, expected: Counter, got: Counter, walls: list[float], t0: float, t1: float) -> list[str]:
    errors = []
    n_exp, n_got = sum(expected.values()), sum(got.values())
    if got != expected:
        missing, extra = expected - got, got - expected
        errors.append(f"{label}: logged {n_exp} scalars, read back {n_got}; {sum(missing.values())} missing "
                      f"(e.g. {sorted(missing)[:3]}), {sum(extra.values())} unexpected (e.g. {sorted(extra)[:3]})")
    bad = [w for w in walls if not t0 - 1.0 <= w <= t1 + 1.0]
    if bad:
        errors.append(f"{label}: {len(bad)} wall times outside the run [{t0:.3f}, {t1:.3f}], e.g. {bad[:3]}")
    return errors


def verify(writer_cls, work: Path, scalars: int, tags_per_step: int) -> dict:
    """Log, flush, read back (before close), close, read back again; measure the bytes on disk."""
    logdir = Path(tempfile.mkdtemp(prefix=f"verify{tags_per_step}-", dir=work))
    tags = ["train/loss"] if tags_per_step == 1 else TAGS8[:tags_per_step]
    held = torch.zeros(())  # reused and changed in place, as a running-loss tensor would be
    expected: Counter = Counter()
    t0 = time.time()
    writer = writer_cls(log_dir=str(logdir))
    for step in range(scalars // tags_per_step):
        for k, tag in enumerate(tags):
            value = value_for(step, k)
            if (step + k) % 2:  # alternate floats and the held tensor on every tag
                held.fill_(value)
                writer.add_scalar(tag, held, step)
            else:
                writer.add_scalar(tag, value, step)
            expected[(tag, step, float(np.float32(value)))] += 1
    writer.flush()
    got, walls, _ = read_back(logdir)
    errors = compare(f"{tags_per_step} tag(s)/step, after flush()", expected, got, walls, t0, time.time())
    writer.close()
    got, walls, tensor_style = read_back(logdir)
    errors += compare(f"{tags_per_step} tag(s)/step, after close()", expected, got, walls, t0, time.time())
    size, nfiles = dir_bytes(logdir)
    shutil.rmtree(logdir)
    n = sum(expected.values())
    return {"n": n, "read": sum(got.values()), "tensor_style": tensor_style, "errors": errors,
            "bytes": size, "files": nfiles, "bps": size / n}


# -------------------------------------------------------------------------------------------------

def variant_name(tags_per_step: int) -> str:
    return f"{tags_per_step} tag/step" if tags_per_step == 1 else f"{tags_per_step} tags/step"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, help="timed add_scalar calls per value kind, savegame (default 200000)")
    parser.add_argument("--torch-calls", type=int, help="the same for torch (default 20000)")
    parser.add_argument("--scalars", type=int, help="scalars per throughput variant, savegame (default 1000000)")
    parser.add_argument("--torch-scalars", type=int, help="the same for torch (default 50000)")
    parser.add_argument("--verify-scalars", type=int, help="scalars per read-back check, each writer (default 20000)")
    parser.add_argument("--batch", type=int, default=1, help="calls per timer reading in (1) (default 1: every call)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10x fewer of everything (< 30 s)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp folder)")
    parser.add_argument("--ours", default="savegame:SummaryWriter",
                        help="writer to measure against torch, module:attr (default savegame:SummaryWriter)")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    calls = args.calls or 200_000 // scale
    torch_calls = args.torch_calls or 20_000 // scale
    scalars = args.scalars or 1_000_000 // scale
    torch_scalars = args.torch_scalars or 50_000 // scale
    verify_scalars = args.verify_scalars or 20_000 // scale

    ours_cls = load_writer(args.ours)
    writers = {"savegame": (ours_cls, calls, scalars), "torch": (TorchWriter, torch_calls, torch_scalars)}
    print(machine(tensorboard=tensorboard.__version__))
    print(f"writers: savegame = {ours_cls.__module__}.{ours_cls.__qualname__}; "
          f"torch = {TorchWriter.__module__}.{TorchWriter.__qualname__}")
    work = Path(tempfile.mkdtemp(prefix="savegame-bench-writer-", dir=args.dir))
    try:
        # (1) caller cost
        overhead = timer_overhead()
        how = ("every call timed on its own" if args.batch == 1
               else f"timed in batches of {args.batch} calls / {args.batch}")
        print(f"\n(1) add_scalar caller cost, µs per call ({how}; perf_counter_ns pair costs {overhead:.3f} µs, "
              f"included; {WARMUP} warm-up calls not counted)")
        print(f"{'value':<8}{'writer':<10}{'calls':>8}{'median':>9}{'p90':>9}{'p99':>9}{'mean':>9}{'max':>10}"
              f"{'close s':>9}")
        lat = {name: latency(cls, work, n, args.batch) for name, (cls, n, _) in writers.items()}
        med, mean = {}, {}
        for kind in ("float", "tensor"):
            for name in writers:
                per_call, close_s = lat[name][kind]
                med[name, kind], mean[name, kind] = float(np.median(per_call)), float(per_call.mean())
                p90, p99 = np.percentile(per_call, [90, 99])
                print(f"{kind:<8}{name:<10}{len(per_call) * args.batch:>8}{med[name, kind]:>9.2f}{p90:>9.2f}"
                      f"{p99:>9.2f}{per_call.mean():>9.2f}{per_call.max():>10.1f}{close_s:>9.3f}")
        for kind in ("float", "tensor"):
            ours, ratio = med["savegame", kind], med["torch", kind] / med["savegame", kind]
            print(f"{kind}: savegame median {ours:.2f} µs, torch/savegame {ratio:.1f}x on the median "
                  f"({mean['torch', kind] / mean['savegame', kind]:.1f}x on the mean) "
                  f"(goal <= 2 µs and >= 50x on the median: {verdict(ours <= 2 and ratio >= 50)})")

        # (2) throughput
        print("\n(2) sustained throughput, first add_scalar -> close() returned (B/scalar: info only, see (3))")
        print(f"{'variant':<13}{'writer':<10}{'scalars':>9}{'loop s':>9}{'µs/call':>9}{'close s':>9}{'total s':>9}"
              f"{'scalars/s':>11}{'files':>7}{'bytes':>11}{'B/scalar':>10}")
        tp = {}
        for tags_per_step in (1, 8):
            for name, (cls, _, n) in writers.items():
                r = tp[name, tags_per_step] = throughput(cls, work, n, tags_per_step)
                print(f"{variant_name(tags_per_step):<13}{name:<10}{r['n']:>9}{r['loop']:>9.3f}"
                      f"{r['loop'] / r['n'] * 1e6:>9.2f}{r['close']:>9.3f}"
                      f"{r['total']:>9.3f}{r['rate']:>11,.0f}{r['files']:>7}{r['bytes']:>11}{r['bps']:>10.2f}")
        for tags_per_step in (1, 8):
            ours, anchor = tp["savegame", tags_per_step], tp["torch", tags_per_step]
            print(f"{variant_name(tags_per_step)}: savegame {ours['rate']:,.0f} scalars/s, savegame/torch "
                  f"{ours['rate'] / anchor['rate']:.1f}x (goal >= 100,000/s: {verdict(ours['rate'] >= 100_000)})")

        # (3) bytes on disk and read-back check, identical input
        print(f"\n(3) bytes on disk and read-back check: the same {verify_scalars} scalars per variant to both "
              f"writers; EventAccumulator (scalars=0) after flush() and after close()")
        print(f"{'variant':<13}{'writer':<10}{'logged':>8}{'read':>8}{'files':>7}{'bytes':>10}{'B/scalar':>10}"
              "  read-back")
        errors = []
        vf = {}
        for tags_per_step in (1, 8):
            for name, (cls, _, _) in writers.items():
                r = vf[name, tags_per_step] = verify(cls, work, verify_scalars, tags_per_step)
                note = f" ({r['tensor_style']} tensor-style scalars)" if r["tensor_style"] else ""
                print(f"{variant_name(tags_per_step):<13}{name:<10}{r['n']:>8}{r['read']:>8}{r['files']:>7}"
                      f"{r['bytes']:>10}{r['bps']:>10.2f}  {'ok' if not r['errors'] else 'FAILED'}{note}")
                errors += [f"{name}: {e}" for e in r["errors"]]
        for tags_per_step in (1, 8):
            ours, anchor = vf["savegame", tags_per_step]["bps"], vf["torch", tags_per_step]["bps"]
            print(f"{variant_name(tags_per_step)}: savegame {ours:.2f} B/scalar, torch {anchor:.2f}, savegame/torch "
                  f"{ours / anchor:.2f}x (goal <= 1x: {verdict(ours <= anchor)})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit("read-back check FAILED: a writer lost, added or changed scalars")
    print("read-back check: every scalar logged was read back, same tag, step and value")


if __name__ == "__main__":
    main()
