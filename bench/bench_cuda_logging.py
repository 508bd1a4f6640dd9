"""GPU only: what logging a CUDA loss every step adds to a training step, and whether it syncs.

usage: python bench/bench_cuda_logging.py [--steps 500] [--width 4096]

Runs the same training step (an MLP, forward + backward + SGD, all on the GPU) three ways in one
process: without logging; with ``savegame.SummaryWriter.add_scalar(loss.detach())`` every step;
and with torch's ``SummaryWriter.add_scalar`` (which calls ``.item()``: a sync per step). Each
variant is timed over ``--steps`` steps with a synchronize only at the end, and the savegame
variant runs under ``torch.cuda.set_sync_debug_mode("error")``, so any hidden sync fails the run.
Prints the step times and the overhead ratios (goal: savegame adds < 1%).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch


def step_time(step, steps: int, repeats: int = 5) -> float:
    """Median over ``repeats`` of the mean step time (s), timed between two synchronizes."""
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(steps):
            step(i)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--width", type=int, default=4096)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_cuda_logging.py needs a CUDA device")
    import savegame
    from torch.utils.tensorboard import SummaryWriter as TorchWriter

    net = torch.nn.Sequential(torch.nn.Linear(args.width, args.width), torch.nn.ReLU(),
                              torch.nn.Linear(args.width, 1)).cuda()
    opt = torch.optim.SGD(net.parameters(), lr=1e-4)
    x = torch.randn(512, args.width, device="cuda")

    def train(_: int) -> torch.Tensor:
        loss = net(x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    ours = savegame.SummaryWriter(tempfile.mkdtemp())
    theirs = TorchWriter(tempfile.mkdtemp())
    ours.add_scalar("warmup", torch.ones((), device="cuda"), 0)
    step_time(train, 50, repeats=1)  # warm up kernels and the allocator

    base = step_time(train, args.steps)
    torch.cuda.set_sync_debug_mode("error")
    try:
        logged = step_time(lambda i: ours.add_scalar("loss", train(i).detach(), i), args.steps)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    synced = step_time(lambda i: theirs.add_scalar("loss", train(i).detach(), i), args.steps)
    ours.close()
    theirs.close()
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  width {args.width}")
    print(f"step without logging           {base * 1e3:8.3f} ms")
    print(f"step + savegame add_scalar     {logged * 1e3:8.3f} ms  overhead {100 * (logged / base - 1):+.2f}%"
          "  (0 syncs: set_sync_debug_mode('error') passed)")
    print(f"step + torch add_scalar        {synced * 1e3:8.3f} ms  overhead {100 * (synced / base - 1):+.2f}%")


if __name__ == "__main__":
    main()
