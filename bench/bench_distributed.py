"""Saves under ``torchrun`` (issue 15): the stall of a 2-rank save against the same state saved by
one process, and the bytes each writes, all in one run.

Each mode runs in its own job: ``one`` is one plain process, ``ddp`` is 2 ranks with the model
wrapped in ``DistributedDataParallel`` (replicated state: rank 0 writes it), ``fsdp`` is 2 ranks
with FSDP2's ``fully_shard`` (sharded state: every rank writes its half through
``torch.distributed.checkpoint``). All run on CPU with gloo, one torch thread per process. The
state is a model of 64 fp32 parameters (``--size`` in all) and its AdamW state (two more copies):
3x ``--size`` per save. Between saves a forward/backward/optimizer step changes every tensor (not
timed), so each save writes everything; the ranks meet at a barrier before each timed save.

Printed, per mode: the stall of ``run.save(force=True)`` on each rank (median of ``--repeats``),
``torch.save`` + fsync of the same state dict by the one process and by DDP rank 0 in its own job
(the anchors), the bytes of one checkpoint folder (hard links counted once), and what a
``run.save()`` that does not save costs at every step: with a policy of step counters
(``EverySteps``: each rank decides alone, the ranks meet every 8 steps) and with one that reads
metrics (``OnImprovement``: rank 0 decides for all, one all-reduce per call), beside a bare
all-reduce of three flags on a gloo group (the anchor).
Goals: the replicated state is written once (2-rank DDP bytes / one process's = 1.00x, plus the
other rank's random state), and the 2-rank DDP stall is close to a torch.save + fsync in the same
job (rank 0 does one process's write; the ranks add a gather and a broadcast). On this 2-core VM
writes are slower while a second process runs, for torch.save too: hence the same-job anchor.

    python bench/bench_distributed.py                   # 256 MiB of parameters, 4 saves
    python bench/bench_distributed.py --size 32MiB --repeats 2   # quick run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
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

MODES = ("one", "ddp", "fsdp")
N_TENSORS = 64
SKIPPED_CALLS = 400


class Big(nn.Module):
    """64 fp32 parameters; the forward touches each, so DDP and FSDP see every gradient."""

    def __init__(self, total_bytes: int) -> None:
        super().__init__()
        numel = total_bytes // 4 // N_TENSORS
        self.params = nn.ParameterList(nn.Parameter(torch.randn(numel)) for _ in range(N_TENSORS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(p.sum() for p in self.params) * x.mean()


def folder_bytes(folder: Path) -> int:
    """The bytes of the files under ``folder``, each inode once (incremental saves hard-link)."""
    seen, total = set(), 0
    for path in folder.rglob("*"):
        if path.is_file():
            stat = path.stat()
            if stat.st_ino not in seen:
                seen.add(stat.st_ino)
                total += stat.st_size
    return total


def torch_save_fsync(state: dict, path: Path) -> float:
    started = time.perf_counter()
    with open(path, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - started


def dcp_stalls(model: nn.Module, optimizer: torch.optim.Optimizer, work: Path, safetensors: bool,
               repeats: int) -> list[float]:
    """``dcp.save`` of the model's and optimizer's sharded state dicts, as savegame calls it, alone."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemWriter, HuggingFaceStorageWriter
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    stalls = []
    for i in range(repeats):
        folder = work / f"dcp-{safetensors}-{i}"
        writer = HuggingFaceStorageWriter(str(folder), save_distributed=True) if safetensors \
            else FileSystemWriter(str(folder))
        dist.barrier()
        started = time.perf_counter()
        state = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}
        if safetensors:  # the HF writer takes flat tensor names, as savegame gives it
            state = {f"{name}/{key}": value for name, part in state.items() for key, value in flat(part).items()}
        dcp.save(state, storage_writer=writer)
        stalls.append(time.perf_counter() - started)
        dist.barrier()
        if dist.get_rank() == 0:
            shutil.rmtree(folder)
    return stalls


def flat(tree, prefix: str = "") -> dict:
    """The tensors of a nested state dict, keyed by their path."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in flat(sub, f"{prefix}{key}/").items()}
    if isinstance(tree, (list, tuple)):
        return {k: v for i, sub in enumerate(tree) for k, v in flat(sub, f"{prefix}{i}/").items()}
    return {prefix.rstrip("/"): tree} if isinstance(tree, torch.Tensor) else {}


# --------------------------------------------------------------------------- one job (one mode)
def worker(mode: str, size: int, repeats: int, work: Path) -> None:
    """Runs in each process of one job; writes ``work/result.rank<r>.json``."""
    import torch.distributed as dist

    import savegame

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # DCP's notices about a CPU-only gloo job are not the subject
    rank = 0
    torch.manual_seed(0)
    net = Big(size)
    model: nn.Module = net
    if mode != "one":
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        if mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel
            model = DistributedDataParallel(net)
        else:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard
            model = fully_shard(net, mesh=init_device_mesh("cpu", (dist.get_world_size(),)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        model(torch.ones(2)).backward()
        optimizer.step()
        optimizer.zero_grad()

    def together() -> None:
        if mode != "one":
            dist.barrier()

    result: dict = {"mode": mode, "rank": rank, "stall_s": [], "torch_save_s": []}
    run_dir = work / "run"
    with savegame.Run(run_dir, save=savegame.EverySteps(10**9), keep=savegame.KeepLast(1)) as run:
        run.track(model=model, optimizer=optimizer)
        step()
        run.save(force=True)  # the first save of a process sets things up: not timed
        for _ in range(repeats):
            step()
            run.step += 1
            together()
            started = time.perf_counter()
            run.save(force=True)
            result["stall_s"].append(time.perf_counter() - started)
            if rank == 0 and mode != "fsdp":  # the anchor, in the same job (rank 1 waits at the barrier)
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
                result["torch_save_s"].append(torch_save_fsync(state, work / "torch_save.pt"))
                (work / "torch_save.pt").unlink()
        # What a run.save() that does not save costs at every step: a policy of step counters
        # (each rank decides alone; the ranks meet every 8 steps to compare preemption flags), and
        # one that reads metrics (rank 0 decides and tells all: one all-reduce per call).
        for name, policy in (("skipped_counters_us", savegame.EverySteps(10**9)),
                             ("skipped_metrics_us", savegame.OnImprovement("loss/val"))):
            run.saves.policy = policy
            together()
            started = time.perf_counter()
            for _ in range(SKIPPED_CALLS):
                run.step += 1
                run.save()
            result[name] = (time.perf_counter() - started) / SKIPPED_CALLS * 1e6
        if mode != "one":  # the anchor: one all-reduce of three flags on a gloo group, as an agreement's
            group, flags = dist.new_group(backend="gloo"), torch.zeros(3, dtype=torch.int64)
            together()
            started = time.perf_counter()
            for _ in range(SKIPPED_CALLS):
                dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=group)
            result["all_reduce_us"] = (time.perf_counter() - started) / SKIPPED_CALLS * 1e6
        if mode == "fsdp":  # the anchors: DCP itself, on the same state, safetensors and its own format
            result["dcp_s"] = {"dcp.save, HuggingFaceStorageWriter": dcp_stalls(model, optimizer, work, True, repeats),
                               "dcp.save, FileSystemWriter": dcp_stalls(model, optimizer, work, False, repeats)}
        together()
        if rank == 0:
            newest = run.checkpoints[-1].path
            result["checkpoint_bytes"] = folder_bytes(newest)
            result["sharded_bytes"] = folder_bytes(newest / "sharded") if (newest / "sharded").exists() else 0
    (work / f"result.rank{rank}.json").write_text(json.dumps(result))
    if mode != "one":
        dist.destroy_process_group()


def launch(mode: str, size: int, repeats: int, work: Path) -> list[dict]:
    """One job of ``mode`` (1 process, or 2 ranks through torchrun); each process's result."""
    args = [__file__, "--worker", mode, "--size", str(size), "--repeats", str(repeats), "--work", str(work)]
    if mode == "one":
        command = [sys.executable, *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {mode} job failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return [json.loads(path.read_text()) for path in sorted(work.glob("result.rank*.json"))]


def report(results: dict[str, list[dict]], size: int, repeats: int) -> None:
    one, ddp, fsdp = (results[mode] for mode in MODES)
    median = statistics.median
    state_mib = 3 * size / 2**20
    print(f"\n## saves of {state_mib:.0f} MiB (64 fp32 parameters + AdamW state), CPU, gloo, 1 torch thread a "
          f"process; {repeats} saves per job after one untimed; medians\n")
    print("| | stall of run.save(), s | run.save() that skips, us: EverySteps | OnImprovement "
          "| bytes of one checkpoint |")
    print("|---|---|---|---|---|")
    print(f"| one process: torch.save + fsync (anchor) | {median(one[0]['torch_save_s']):.3f} | | | |")
    print(f"| 2-rank DDP: torch.save + fsync on rank 0, same job (anchor) | {median(ddp[0]['torch_save_s']):.3f} "
          f"| | | |")
    print(f"| 2 ranks: one all_reduce of 3 ints, gloo (anchor) | | {ddp[0]['all_reduce_us']:.1f} | | |")
    rows = [("one process: savegame", one)] + [(f"2-rank {name}: savegame, rank {r}", [job[r]])
                                               for name, job in (("DDP", ddp), ("FSDP2", fsdp)) for r in (0, 1)]
    for label, (res, *_) in rows:
        size_cell = f"{res['checkpoint_bytes']:,}" if "checkpoint_bytes" in res else "(rank 0 writes the folder)"
        if res.get("sharded_bytes"):
            size_cell += f" ({res['sharded_bytes']:,} in sharded/)"
        print(f"| {label} | {median(res['stall_s']):.3f} | {res['skipped_counters_us']:.1f} | "
              f"{res['skipped_metrics_us']:.1f} | {size_cell} |")
    for label, stalls in fsdp[0]["dcp_s"].items():
        print(f"| 2-rank FSDP2: {label} of the same state, rank 0 (anchor) | {median(stalls):.3f} | | | |")
    one_stall, one_bytes = median(one[0]["stall_s"]), one[0]["checkpoint_bytes"]
    ddp_stall = max(median(res["stall_s"]) for res in ddp)
    fsdp_stall = max(median(res["stall_s"]) for res in fsdp)
    print(f"\n2-rank DDP stall (the slower rank) / one process's: {ddp_stall / one_stall:.2f}x; "
          f"/ torch.save + fsync in the same job: {ddp_stall / median(ddp[0]['torch_save_s']):.2f}x "
          f"(one process: {one_stall / median(one[0]['torch_save_s']):.2f}x)")
    dcp_hf = median(fsdp[0]["dcp_s"]["dcp.save, HuggingFaceStorageWriter"])
    print(f"2-rank FSDP2 stall (the slower rank) / one process's: {fsdp_stall / one_stall:.2f}x; "
          f"/ dcp.save with the same writer alone: {fsdp_stall / dcp_hf:.2f}x")
    extra = ddp[0]["checkpoint_bytes"] - one_bytes
    print(f"2-rank DDP bytes / one process's: {ddp[0]['checkpoint_bytes'] / one_bytes:.4f}x ({extra:+,} bytes: "
          f"rank 1's random state and loader positions); replicated state written once: "
          f"{'yes' if ddp[0]['checkpoint_bytes'] < 1.5 * one_bytes else 'NO'}")
    print(f"2-rank FSDP2 bytes / one process's: {fsdp[0]['checkpoint_bytes'] / one_bytes:.4f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("256MiB"), help="the parameters' bytes")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.size, args.repeats, args.work)
        return
    print(machine())
    results = {}
    root = Path(tempfile.mkdtemp(prefix="bench-distributed-", dir=os.environ.get("BENCH_DIR")))
    try:
        for mode in MODES:
            work = root / mode
            work.mkdir()
            results[mode] = launch(mode, args.size, args.repeats, work)
            shutil.rmtree(work / "run")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(results, args.size, args.repeats)


if __name__ == "__main__":
    main()
