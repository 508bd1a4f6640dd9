"""The training run of the kill storms: small (a few hundred milliseconds), but with everything
that could make a resumed run differ from one never stopped: dropout, a shuffling loader, a
random jitter in the data, AdamW, OneCycleLR, mid-epoch saves, a keep policy with a best, a
frozen layer (so incremental saves share it between checkpoints), per-step and per-epoch curves.

:func:`train` is called in a fresh process each time (the storm forks it from a server that
imported torch once). It notes in ``journal`` (one line per event, flushed: a SIGKILL keeps
what the kernel has) the step it resumed at and each checkpoint committed, and at the end
writes the final parameters to ``out``.

>>> import tempfile
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp())
>>> train(folder / "run", folder / "out.safetensors", folder / "journal", StormConfig(epochs=1))
>>> lines = (folder / "journal").read_text().split()
>>> lines[:2], lines[-1]
(['resumed', '0'], 'done')
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset

import savegame


@dataclass(frozen=True)
class StormConfig:
    """How the storm's run trains and saves (the same for the reference and the killed runs)."""

    epochs: int = 3
    batches: int = 20  # per epoch
    every: int = 3  # a save every this many steps, and at each epoch's end
    width: int = 512  # the frozen layer is 1 MiB: incremental saves share it (their minimum)
    async_save: bool = False
    incremental: bool = True


def warm_up() -> None:
    """Import what a first deterministic AdamW step imports (torch._dynamo, 1.5 s here), so that
    a server that forks the storm's processes pays it once, before the first fork. It leaves
    torch's global settings as they were (pytest imports this module too)."""
    with _deterministic():
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.AdamW([p])
        p.grad = torch.ones(1)
        opt.step()


@contextlib.contextmanager
def _deterministic():
    """Deterministic algorithms and one thread while inside; torch's settings put back after."""
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


class _Jittered(Dataset):
    def __init__(self, n: int, dim: int) -> None:
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, dim, generator=g)
        self.y = (self.x.sum(1) > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i] + 0.05 * torch.randn(self.x.shape[1]), self.y[i]


class _Journal(savegame.Hook):
    def __init__(self, path: Path) -> None:
        self.file = open(path, "a", buffering=1)  # noqa: SIM115 (line-buffered; closed at the end)

    def note(self, *words: object) -> None:
        self.file.write(" ".join(map(str, words)) + "\n")

    def on_start(self, run) -> None:
        self.note("resumed", run.step)

    def on_save(self, run, checkpoint) -> None:
        self.note("committed", checkpoint.step)


def train(run_dir: Path, out: Path, journal: Path, config: StormConfig) -> None:
    with _deterministic():
        _train(run_dir, out, journal, config)


def _train(run_dir: Path, out: Path, journal: Path, config: StormConfig) -> None:
    torch.manual_seed(0)
    dim = 16
    data = _Jittered(config.batches * 8, dim)
    loader = DataLoader(data, batch_size=8, shuffle=True)
    net = torch.nn.Sequential(torch.nn.Linear(dim, config.width), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                              torch.nn.Linear(config.width, config.width), torch.nn.ReLU(),
                              torch.nn.Linear(config.width, 2))
    net[3].requires_grad_(False)  # fine-tuning: incremental saves share this layer
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=config.epochs * len(loader))
    notes = _Journal(journal)
    run = savegame.Run(run_dir, save=savegame.EverySteps(config.every) | savegame.EveryEpochs(1),
                       keep=savegame.Keep(last=2, best=1, metric="loss/val"), async_save=config.async_save,
                       incremental=config.incremental, hooks=[notes], handle_signals=False)
    with run:
        run.track(model=net, optimizer=opt, lr_schedule=sched)
        for _ in run.epochs(config.epochs):
            net.train()
            for x, y in run.iterate(loader):
                loss = torch.nn.functional.cross_entropy(net(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                run.log("loss/train", loss.detach(), reduce="mean")
                run.save()
            net.eval()
            with torch.no_grad():
                val = torch.nn.functional.cross_entropy(net(data.x[:64]), data.y[:64]).item()
            run.log("loss/val", val)
            run.save(metrics={"loss/val": val})
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out))
    notes.note("done")
    notes.file.close()
