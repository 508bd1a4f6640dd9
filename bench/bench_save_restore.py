"""Benchmark: saving and restoring a large state dict with savegame vs. raw I/O and torch.save/load.

(a) Save a model's state dict (64 fp32 tensors; 1 GiB by default) with fsync: a raw
    ``os.write`` of the same bytes + fsync (the disk's ceiling), ``torch.save`` + fsync, and
    ``savegame`` ``write_checkpoint`` (full commit protocol: temp folder, hashing, manifest,
    rename, COMMIT, every fsync). Goal: savegame >= 0.9x raw and faster than torch.save.
(b) Warm restore (files in the page cache) into an initialized ``nn.Module`` holding those 64
    parameters: ``torch.load`` + ``load_state_dict`` vs. savegame ``restore_into`` (every hash
    checked). Goal: savegame >= 3x faster.
(c) Cold restore (page cache dropped before each read): savegame ``restore_into`` vs. a raw
    sequential ``readinto`` of the same file into a preallocated buffer (the disk's ceiling).
    Goal: savegame >= 0.9x the raw read's speed.

savegame restores two ways: a checkpoint whose manifest records per-tensor piece hashes (each
piece checked as it arrives) and one with the whole-file hash only (format version 1 as first
written: hashed in file order). Repetitions are interleaved and medians reported.

    python bench/bench_save_restore.py                # 1 GiB, 5 repetitions (about a minute)
    python bench/bench_save_restore.py --size 64MiB   # quick run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import xxhash
from machine import machine
from torch import nn

from savegame.checkpoint.restore import restore_into
from savegame.checkpoint.safetensors_io import hash_tensors
from savegame.checkpoint.store import COMMIT, MANIFEST, TENSORS, write_checkpoint

N_TENSORS = 64


class Big(nn.Module):
    """64 fp32 parameters, like the layers of a mid-sized model."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        for i in range(N_TENSORS):
            self.register_parameter(f"p{i:02d}", nn.Parameter(torch.empty(numel)))


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]?)i?B?", text.strip(), re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"--size takes a size like 1GiB, 256MiB or 64M, but got {text!r}")
    return int(float(m[1]) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m[2].upper()])


class Cache:
    """Empties the page cache: all of it if we may (root), else each file's pages (fadvise)."""

    def __init__(self) -> None:
        try:
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            self.how = "echo 3 > /proc/sys/vm/drop_caches before each cold read"
        except OSError:
            self.how = "posix_fadvise(POSIX_FADV_DONTNEED) on the files before each cold read (not root)"

    def drop(self, *paths: Path) -> None:
        os.sync()
        if self.how.startswith("echo"):
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            return
        for path in paths:
            for file in path.rglob("*") if path.is_dir() else [path]:
                fd = os.open(file, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
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


def remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    os.sync()  # let deletion work settle outside the timed region


def set_piece_hashes(checkpoint: Path, present: bool) -> None:
    """Make the manifest record per-tensor piece hashes or not, whatever the writer did (and
    rewrite COMMIT to match), so both checkpoint kinds are measured."""
    manifest = json.loads((checkpoint / MANIFEST).read_bytes())
    entry = manifest["files"][TENSORS]
    entry.pop("tensor_hashes", None)
    if present:
        entry["tensor_hashes"] = hash_tensors(checkpoint / TENSORS)
    data = json.dumps(manifest, ensure_ascii=False, indent=1).encode()
    (checkpoint / MANIFEST).write_bytes(data)
    commit = {MANIFEST: {"size": len(data), "hash": f"xxh3_128:{xxhash.xxh3_128_hexdigest(data)}"}}
    (checkpoint / COMMIT).write_text(json.dumps(commit))


def read_raw(path: Path, buffer: memoryview) -> None:
    with open(path, "rb", buffering=0) as f:
        filled = 0
        while got := f.readinto(buffer[filled:filled + (64 << 20)]):
            filled += got


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=parse_size, default=1 << 30, help="state dict size, e.g. 1GiB, 64MiB")
    parser.add_argument("--size-mib", type=int, default=None, help=argparse.SUPPRESS)  # the old spelling
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions (medians reported)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp folder)")
    args = parser.parse_args()
    size = args.size_mib << 20 if args.size_mib else args.size

    numel = max(1, size // (4 * N_TENSORS))
    gib = numel * 4 * N_TENSORS / (1 << 30)
    work = Path(tempfile.mkdtemp(prefix="savegame-bench-", dir=args.dir))
    cache = Cache()
    print(machine())
    print(f"state: {N_TENSORS} fp32 tensors x {numel} elements = {gib:.3f} GiB; folder {work}")
    print(f"cold: {cache.how}")

    torch.manual_seed(0)
    model = Big(numel)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    state = {"model": model.state_dict()}
    paths = {"raw": work / "raw.bin", "torch.save": work / "model.pt", "savegame": work / "step-000001"}
    savers = {"raw": save_raw, "torch.save": save_torch,
              "savegame": lambda state, path: write_checkpoint(path, state, step=1, epoch=0)}
    save_times: dict[str, list[float]] = {name: [] for name in savers}
    for rep in range(args.reps):
        names = list(savers)
        for name in names[rep % 3:] + names[: rep % 3]:  # rotate the order between repetitions
            remove(paths[name])
            cache.drop(work)
            save_times[name].append(timed(lambda: savers[name](state, paths[name])))

    pieces, whole = work / "pieces" / "step-000001", work / "whole" / "step-000001"
    for target, present in ((pieces, True), (whole, False)):
        target.parent.mkdir()
        shutil.copytree(paths["savegame"], target)
        set_piece_hashes(target, present)

    fresh = Big(numel)
    with torch.no_grad():  # a real model is initialized before it is restored into
        for p in fresh.parameters():
            p.zero_()
    buffer = memoryview(np.ones((pieces / TENSORS).stat().st_size, dtype=np.uint8))  # preallocated, touched

    def torch_load() -> None:
        fresh.load_state_dict(torch.load(paths["torch.save"], map_location="cpu", weights_only=True)["model"])

    restores = {
        "torch.load + load_state_dict": (torch_load, paths["torch.save"]),
        "savegame restore_into, piece hashes": (lambda: restore_into(pieces, {"model": fresh}), pieces),
        "savegame restore_into, file hash (v1)": (lambda: restore_into(whole, {"model": fresh}), whole),
        "raw readinto of tensors.safetensors": (lambda: read_raw(pieces / TENSORS, buffer), pieces / TENSORS),
    }
    times: dict[str, list[float]] = {f"{name} {cache_state}": [] for cache_state in ("warm", "cold")
                                     for name in restores}
    for rep in range(args.reps):
        names = list(restores)
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            fn, path = restores[name]
            fn()  # warm: read once so the file is in the page cache
            times[f"{name} warm"].append(timed(fn))
            cache.drop(path)
            times[f"{name} cold"].append(timed(fn))
    for a, b in zip(model.parameters(), fresh.parameters()):
        if not torch.equal(a, b):
            sys.exit("restored parameters differ from the saved ones")
    shutil.rmtree(work)

    rows = [(f"save: {name}", t) for name, t in save_times.items()] + [(f"restore: {k}", t) for k, t in times.items()]
    med = {label: statistics.median(t) for label, t in rows}
    print(f"\n{'operation':<52}{'median s':>9}{'GiB/s':>7}   all runs (s)")
    for label, t in rows:
        print(f"{label:<52}{med[label]:>9.3f}{gib / med[label]:>7.2f}   {' '.join(f'{x:.3f}' for x in t)}")
    sg = med["save: savegame"]
    print(f"\nsave throughput savegame/raw:        {med['save: raw'] / sg:.2f}x  (goal >= 0.90x)")
    print(f"save throughput savegame/torch.save: {med['save: torch.save'] / sg:.2f}x  (goal > 1x)")
    for kind in ("piece hashes", "file hash (v1)"):
        ours = f"restore: savegame restore_into, {kind}"
        warm = med["restore: torch.load + load_state_dict warm"] / med[f"{ours} warm"]
        cold = med["restore: raw readinto of tensors.safetensors cold"] / med[f"{ours} cold"]
        print(f"restore warm, savegame ({kind}) vs torch.load + load_state_dict: {warm:.2f}x  (goal >= 3x)")
        print(f"restore cold, savegame ({kind}) vs raw read of the same bytes:   {cold:.2f}x  (goal >= 0.9x)")
    print(f"load average at end={os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
