"""Exact resume inside one process: a run that "crashes" (an exception, no save) and is started
again in the same folder must end with the same bits as a run that never stopped.

The real-process SIGKILL version lives in test_kill.py; these are the fast variants that cover
each kind of loader."""

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

import savegame


class Crash(Exception):
    pass


class Jittered(Dataset):
    """Map-style data whose samples get a random jitter at load time, from all three RNGs."""

    def __init__(self, n=48, dim=4):
        g = torch.Generator().manual_seed(7)
        self.x = torch.randn(n, dim, generator=g)
        self.y = torch.randn(n, 1, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        noise = 0.1 * torch.randn(self.x.shape[1]) + 0.01 * float(np.random.rand()) + 0.01 * random.random()
        return self.x[i] + noise, self.y[i]


class JitteredStream(IterableDataset):
    def __init__(self, n=48, dim=4):
        self.inner = Jittered(n, dim)

    def __iter__(self):
        order = torch.randperm(len(self.inner)).tolist()
        for i in order:
            yield self.inner[i]


def make_loader(kind, workers):
    if kind == "shuffle":
        return DataLoader(Jittered(), batch_size=4, shuffle=True, num_workers=workers)
    if kind == "persistent":
        return DataLoader(Jittered(), batch_size=4, shuffle=True, num_workers=workers, persistent_workers=True)
    if kind == "generator":
        return DataLoader(Jittered(), batch_size=4, shuffle=True, num_workers=workers,
                          generator=torch.Generator().manual_seed(3))
    if kind == "sequential":
        return DataLoader(Jittered(), batch_size=4, shuffle=False, num_workers=workers)
    if kind == "unbatched":
        return DataLoader(Jittered(), batch_size=None, shuffle=True, num_workers=workers)
    if kind == "drop_last":
        return DataLoader(Jittered(n=50), batch_size=4, shuffle=True, drop_last=True, num_workers=workers)
    if kind == "iterable":
        return DataLoader(JitteredStream(), batch_size=4, num_workers=workers)
    raise ValueError(kind)


def train(run_dir, *, kind="shuffle", workers=0, crash_at=None, epochs=3, every=5):
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    loader = make_loader(kind, workers)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.3), torch.nn.Linear(16, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)
    try:
        with savegame.Run(run_dir, save=savegame.EverySteps(every) | savegame.EveryEpochs(1),
                          keep=savegame.Keep(last=2), handle_signals=False) as run:
            run.track(model=net, optimizer=opt, lr_schedule=sched)
            for _ in run.epochs(epochs):
                for x, y in run.iterate(loader):
                    if y.dim() == 1:
                        x, y = x.unsqueeze(0), y.unsqueeze(0)
                    loss = torch.nn.functional.mse_loss(net(x), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    run.save()
                    if run.step == crash_at:
                        raise Crash
                sched.step()
                run.save(metrics={"loss": loss.item()})
    except Crash:
        return None
    return {k: v.clone() for k, v in net.state_dict().items()}, run.step


def assert_same_bits(a, b):
    params_a, step_a = a
    params_b, step_b = b
    assert step_a == step_b
    for name in params_a:
        assert torch.equal(params_a[name], params_b[name]), name


@pytest.mark.parametrize("kind", ["shuffle", "generator", "sequential", "unbatched", "drop_last", "iterable"])
def test_a_run_crashed_mid_epoch_resumes_to_identical_parameters(tmp_path, kind):
    reference = train(tmp_path / "ref", kind=kind)
    assert train(tmp_path / "crashed", kind=kind, crash_at=17) is None  # last save: step 15
    if kind == "iterable":  # an iterable dataset can only skip by reading: said in a warning
        with pytest.warns(UserWarning, match="reading 3 batches again to reach the saved position"):
            resumed = train(tmp_path / "crashed", kind=kind)
    else:
        resumed = train(tmp_path / "crashed", kind=kind)
    assert_same_bits(reference, resumed)


@pytest.mark.parametrize("kind", ["shuffle", "persistent", "generator"])
def test_worker_processes_resume_to_identical_parameters(tmp_path, kind):
    reference = train(tmp_path / "ref", kind=kind, workers=2)
    assert train(tmp_path / "crashed", kind=kind, workers=2, crash_at=17) is None
    assert_same_bits(reference, train(tmp_path / "crashed", kind=kind, workers=2))


@pytest.mark.parametrize("kind", ["persistent", "shuffle"])
def test_worker_processes_resumed_at_an_epoch_boundary_end_identical(tmp_path, kind):
    # A persistent-workers DataLoader draws its base seed from the global RNG once per process,
    # when its iterator is made: the run never stopped made it in epoch 0, the resumed process
    # makes it in epoch 1, just before the sampler draws that epoch's order.
    reference = train(tmp_path / "ref", kind=kind, workers=2)
    assert train(tmp_path / "crashed", kind=kind, workers=2, crash_at=13) is None  # last save: step 12
    assert_same_bits(reference, train(tmp_path / "crashed", kind=kind, workers=2))


def test_a_crash_right_after_an_epoch_boundary_resumes_at_the_next_epoch(tmp_path):
    reference = train(tmp_path / "ref")
    assert train(tmp_path / "crashed", crash_at=13) is None  # epoch 1 starts at step 13
    assert_same_bits(reference, train(tmp_path / "crashed"))


def test_several_crashes_in_a_row_still_end_identical(tmp_path):
    reference = train(tmp_path / "ref")
    for crash_at in (3, 9, 22, 31):
        assert train(tmp_path / "crashed", crash_at=crash_at) is None
    assert_same_bits(reference, train(tmp_path / "crashed"))


def test_resume_skips_batches_without_loading_them(tmp_path):
    loads = []

    class Counting(Jittered):
        def __getitem__(self, i):
            loads.append(i)
            return super().__getitem__(i)

    loader = DataLoader(Counting(), batch_size=4, shuffle=True)
    with savegame.Run(tmp_path, handle_signals=False) as run:
        for _ in run.epochs(1):
            for _batch in run.iterate(loader):
                if run.step == 10:
                    run.save()
                    break
    loads.clear()
    with savegame.Run(tmp_path, handle_signals=False) as run:
        for _ in run.epochs(1):
            seen = sum(1 for _ in run.iterate(loader))
    assert seen == 2
    assert len(loads) == 8  # only the two remaining batches of 4 were read


def test_a_stateful_dataloader_keeps_its_own_position_and_resumes_identical(tmp_path, monkeypatch):
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    monkeypatch.setitem(globals(), "make_loader", lambda kind, workers: stateful.StatefulDataLoader(
        Jittered(), batch_size=4, shuffle=True, num_workers=workers))
    reference = train(tmp_path / "ref")
    assert train(tmp_path / "crashed", crash_at=17) is None
    assert_same_bits(reference, train(tmp_path / "crashed"))


def test_a_stateful_dataloader_with_workers_warns_that_worker_randomness_is_not_restored(tmp_path, monkeypatch):
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    monkeypatch.setitem(globals(), "make_loader", lambda kind, workers: stateful.StatefulDataLoader(
        Jittered(), batch_size=4, shuffle=True, num_workers=2))
    assert train(tmp_path / "crashed", crash_at=17) is None
    with pytest.warns(UserWarning, match="not the random state inside its worker processes"):
        train(tmp_path / "crashed")
