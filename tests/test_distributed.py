"""Under torchrun: savegame knows which process it is, its ranks agree through a gloo group of
its own, and a job that forgot init_process_group gets a clear error before the folder is touched.
The Run of a whole job (DDP, preemption, kills) is tested in test_torchrun.py."""

import textwrap

import pytest
import torch

import savegame
from savegame.distributed import World, world
from torchrun_jobs import on_two_ranks


def test_one_process_is_rank_zero_of_one():
    assert world() == World(rank=0, size=1, local_rank=0, initialized=False)


def test_the_environment_of_torchrun_is_read_before_the_process_group_exists(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert world() == World(rank=3, size=4, local_rank=1, initialized=False)
    monkeypatch.setenv("WORLD_SIZE", "not a number")  # someone else's variable: ignored
    assert world().size == 1


def test_a_run_in_a_torchrun_job_without_a_process_group_says_to_initialize_it_first(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(savegame.DistributedNotSupportedError,
                       match="rank 1 of a 2-process job.*before torch.distributed.init_process_group"):
        savegame.Run(tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_rank_alone_without_a_world_size_is_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")  # what a SummaryWriter test sets: the writer goes silent, a Run is fine
    with savegame.Run(tmp_path / "run", handle_signals=False) as run:
        run.track(model=torch.nn.Linear(1, 1))
        run.save()
    assert run.checkpoints


COORDINATED = textwrap.dedent("""
    import sys
    import time
    import torch.distributed as dist
    from savegame.distributed import Coordinator, world

    dist.init_process_group("gloo")
    rank = world().rank
    coordinator = Coordinator()
    decided = coordinator.from_rank0(f"saved by rank {rank}")
    preempted = coordinator.any(rank == 1)  # a SIGTERM that reached rank 1 only
    calm = coordinator.any(False)
    flags = coordinator.max([rank == 0, 0, 2 * rank])  # rank 0's save decision, rank 1's stop request
    gathered = coordinator.gather({"rank": rank, "rng": [rank] * 3})
    started = time.perf_counter()
    for _ in range(200):
        coordinator.any(False)
    each = (time.perf_counter() - started) / 200
    coordinator.barrier()
    with open(f"{sys.argv[1]}/rank-{rank}.txt", "w") as f:  # one file each: stdout interleaves
        f.write(f"rank {rank}: {decided!r} {preempted} {calm} {flags} {gathered!r} any() {1e6 * each:.0f} us")
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_the_coordinator_agrees_across_two_real_ranks(tmp_path):
    lines = on_two_ranks(tmp_path, COORDINATED, tmp_path)
    assert lines[0].startswith("rank 0: 'saved by rank 0' True False [1, 0, 2] [{'rank': 0, 'rng': [0, 0, 0]}, "
                               "{'rank': 1, 'rng': [1, 1, 1]}] any()")
    assert lines[1].startswith("rank 1: 'saved by rank 0' True False [1, 0, 2] None any()")


def test_the_coordinator_needs_a_process_group():
    from savegame.distributed import Coordinator

    with pytest.raises(savegame.DistributedNotSupportedError, match="init_process_group"):
        Coordinator()


def _sampled(run_dir, crash_at=None):
    """A rank's view of a 2-replica DistributedSampler (shuffled, set_epoch each epoch), batches
    seen until ``crash_at`` (a crash: the with-block fails) or the end."""
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    data = TensorDataset(torch.arange(40))
    sampler = DistributedSampler(data, num_replicas=2, rank=1, shuffle=True, seed=7)
    seen = []
    try:
        with savegame.Run(run_dir, handle_signals=False) as run:
            for epoch in run.epochs(3):
                sampler.set_epoch(epoch)
                for (x,) in run.iterate(DataLoader(data, batch_size=4, sampler=sampler)):
                    seen.append(x.tolist())
                    run.save()
                    if run.step == crash_at:
                        raise KeyboardInterrupt  # dies here, after the save of this step
    except KeyboardInterrupt:
        pass
    return seen


def test_a_distributed_samplers_positions_resume_exactly_set_epoch_included(tmp_path):
    reference = _sampled(tmp_path / "ref")
    first = _sampled(tmp_path / "run", crash_at=7)  # inside the second epoch
    rest = _sampled(tmp_path / "run")
    assert len(reference) == 15 and first + rest == reference
