"""The GPU check of issue 14, as one script for a lent CUDA machine: the stall of an async save of
a 4 GiB CUDA state against the device-to-host copy it must make and against ``torch.save``; then
the CUDA tests (``tests/test_cuda.py``: async and incremental saves of CUDA states among them).

    python bench/gpu_async.py               # 4 GiB, 3 repetitions; about 2 minutes on an H200
    python bench/gpu_async.py --size 1GiB   # smaller

Printed, medians of interleaved repetitions, s: the D2H copy into pinned buffers allocated once
(the least a snapshot must do), the same into pageable fresh tensors (``.cpu()``), ``torch.save``
of the CUDA state + fsync (what a plain loop stalls for), ``run.save()`` sync, and async (first
save, which pins its buffers, and later saves). Goal of the issue, checked on CPU states by
``bench_async.py``: the async stall close to the D2H copy, far below torch.save.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_save_restore import parse_size  # noqa: E402
from machine import machine  # noqa: E402

import savegame  # noqa: E402


def timed(function) -> float:
    torch.cuda.synchronize()
    started = time.perf_counter()
    function()
    return time.perf_counter() - started  # the stall: until the call returns (no sync after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=4 << 30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-tests", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_async.py needs a CUDA device; on CPU run bench/bench_async.py")
    print(machine(), "|", torch.cuda.get_device_name())
    n = 64
    model = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(args.size // 4 // n, device="cuda"))
                                    for _ in range(n)])
    state = model.state_dict()
    pinned = {k: torch.empty(v.shape, dtype=v.dtype, pin_memory=True) for k, v in state.items()}
    rows: dict[str, list[float]] = {k: [] for k in (
        "D2H copy into pinned buffers allocated once", "D2H copy into fresh pageable tensors (.cpu())",
        "torch.save + fsync", "run.save(), sync", "run.save(), async: first save",
        "run.save(), async: later saves")}
    names = list(rows)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as work:
        work = Path(work)
        sync_run = savegame.Run(work / "sync", keep=savegame.Keep(last=1), handle_signals=False)
        async_run = savegame.Run(work / "async", keep=savegame.Keep(last=1), async_save=True, handle_signals=False)
        sync_run.track(model=model)
        async_run.track(model=model)

        def d2h_pinned():
            for k, v in state.items():
                pinned[k].copy_(v, non_blocking=True)
            torch.cuda.synchronize()

        def torch_save():
            with open(work / "t.pt", "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())

        for i in range(args.repeats):
            with torch.no_grad():
                for p in model:
                    p.add_(1e-3)  # changed at every save, as training changes it (none shared)
            rows[names[0]].append(timed(d2h_pinned))
            rows[names[1]].append(timed(lambda: [v.cpu() for v in state.values()]))
            rows[names[2]].append(timed(torch_save))
            sync_run.step = i + 1
            rows[names[3]].append(timed(sync_run.save))
            async_run.step = i + 1
            rows[names[4] if i == 0 else names[5]].append(timed(async_run.save))
            async_run.wait()
        sync_run.finish()
        async_run.finish()
    print(f"\n## {args.size / (1 << 30):.2f} GiB CUDA state, {n} fp32 tensors; {args.repeats} repetitions; medians")
    print("| | s |\n|---|---|")
    median = {k: statistics.median(v) for k, v in rows.items() if v}
    for name, value in median.items():
        print(f"| {name} | {value:.3f} |")
    ours = median.get(names[5], median[names[4]])
    print(f"async stall / D2H copy into pinned buffers: {ours / median[names[0]]:.2f}x; "
          f"torch.save + fsync / async stall: {median[names[2]] / ours:.1f}x")
    if not args.no_tests:
        root = Path(__file__).resolve().parent.parent
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/test_cuda.py", "-p", "no:cacheprovider"],
                              cwd=root, env={**os.environ, "PYTHONPATH": str(root / "src")})
        sys.exit(done.returncode)


if __name__ == "__main__":
    main()
