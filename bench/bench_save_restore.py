"""Benchmark: saving and restoring a large state dict with savegame vs. raw writes and torch.save.

(a) Save a model's state dict (64 fp32 tensors; 1 GiB by default) with fsync:
    a raw ``os.write`` of the same bytes + fsync (the disk's ceiling), ``torch.save`` + fsync, and
    ``savegame`` ``write_checkpoint`` (full commit protocol: temp folder, hashing, manifest, rename,
    COMMIT, every fsync). Goal: savegame >= 0.9x raw and faster than torch.save.
(b) Restore into an ``nn.Module`` holding those 64 parameters, with a cold page cache when we may
    drop it: ``torch.load`` + ``load_state_dict`` vs. savegame ``read_checkpoint(verify=True)`` +
    ``load_state_dict``. Goal: savegame >= 3x faster.

Repetitions are interleaved and medians reported.

    python bench/bench_save_restore.py                 # 1 GiB, 3 repetitions
    python bench/bench_save_restore.py --size-mib 64   # quick run
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine import machine
from torch import nn

from savegame.checkpoint.store import read_checkpoint, write_checkpoint

N_TENSORS = 64


class Big(nn.Module):
    """64 fp32 parameters, like the layers of a mid-sized model."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        for i in range(N_TENSORS):
            self.register_parameter(f"p{i:02d}", nn.Parameter(torch.empty(numel)))


def drop_caches() -> bool:
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_raw(state: dict, path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for t in state["model"].values():
            view = memoryview(t.reshape(-1).view(torch.uint8).numpy())
            while view:
                view = view[os.write(fd, view[: 64 << 20]):]
        os.fsync(fd)
    finally:
        os.close(fd)


def save_torch(state: dict, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())


def save_savegame(state: dict, path: Path) -> None:
    write_checkpoint(path, state, step=1, epoch=0)


def remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    os.sync()  # let deletion work settle outside the timed region


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="total size of the state dict")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (medians reported)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp folder)")
    args = parser.parse_args()

    numel = args.size_mib * (1 << 20) // (4 * N_TENSORS)
    gib = numel * 4 * N_TENSORS / (1 << 30)
    work = Path(tempfile.mkdtemp(prefix="savegame-bench-", dir=args.dir))
    print(machine())
    print(f"state: {N_TENSORS} fp32 tensors x {numel} elements = {gib:.3f} GiB; folder {work}")

    torch.manual_seed(0)
    model = Big(numel)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    state = {"model": model.state_dict()}
    paths = {"raw": work / "raw.bin", "torch.save": work / "model.pt", "savegame": work / "step-000001"}
    savers = {"raw": save_raw, "torch.save": save_torch, "savegame": save_savegame}
    save_times: dict[str, list[float]] = {name: [] for name in savers}
    cold = drop_caches()
    if not cold:
        print("note: cannot drop the page cache (not root?); 'cold' restores are warm too")
    for rep in range(args.reps):
        names = list(savers)
        for name in names[rep % 3:] + names[: rep % 3]:  # rotate the order between repetitions
            remove(paths[name])
            drop_caches()
            start = time.perf_counter()
            savers[name](state, paths[name])
            save_times[name].append(time.perf_counter() - start)

    fresh = Big(numel)
    with torch.no_grad():  # a real model is initialized before it is restored into
        for p in fresh.parameters():
            p.zero_()
    restore_times: dict[str, list[float]] = {f"{name} {cache}": [] for cache in ("cold", "warm")
                                             for name in ("torch.load", "savegame")}
    for rep in range(args.reps):
        order = ["torch.load", "savegame"] if rep % 2 == 0 else ["savegame", "torch.load"]
        for name in order:
            for cache in ("cold", "warm"):  # warm: the same file again, now in the page cache
                if cache == "cold":
                    drop_caches()
                start = time.perf_counter()
                if name == "torch.load":
                    loaded = torch.load(paths["torch.save"], map_location="cpu", weights_only=True)
                else:
                    loaded, _ = read_checkpoint(paths["savegame"], verify=True)
                fresh.load_state_dict(loaded["model"])
                restore_times[f"{name} {cache}"].append(time.perf_counter() - start)
                del loaded
    for a, b in zip(model.parameters(), fresh.parameters()):
        if not torch.equal(a, b):
            sys.exit("restored parameters differ from the saved ones")
    shutil.rmtree(work)

    rows = [(f"save: {name}", times) for name, times in save_times.items()]
    rows += [(f"restore: {name}", times) for name, times in restore_times.items()]
    med = {label: statistics.median(times) for label, times in rows}
    print(f"\n{'operation':<30}{'median s':>10}{'GiB/s':>8}   all runs (s)")
    for label, times in rows:
        print(f"{label:<30}{med[label]:>10.3f}{gib / med[label]:>8.2f}   {' '.join(f'{t:.3f}' for t in times)}")
    sg = med["save: savegame"]
    print(f"\nsave throughput savegame/raw:        {med['save: raw'] / sg:.2f}x  (goal >= 0.90x)")
    print(f"save throughput savegame/torch.save: {med['save: torch.save'] / sg:.2f}x  (goal > 1x)")
    for cache in ("cold", "warm"):
        note = "" if cold or cache == "warm" else " (could not drop the page cache: this is warm too)"
        speedup = med[f"restore: torch.load {cache}"] / med[f"restore: savegame {cache}"]
        print(f"restore speedup vs torch.load, {cache}: {speedup:.2f}x  (goal >= 3x){note}")


if __name__ == "__main__":
    main()
