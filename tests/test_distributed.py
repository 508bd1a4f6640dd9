"""Under torchrun (issue 15, first step): savegame knows which process it is, and a Run refuses a
multi-process job with a clear error before it touches the folder, instead of ranks fighting for
its lock (one host) or each writing checkpoints of its own (many hosts)."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import savegame
from savegame.distributed import World, world

SCRIPT = textwrap.dedent("""
    import sys
    import torch.distributed as dist
    import savegame
    from savegame.distributed import world

    before = world()
    dist.init_process_group("gloo")
    after = world()
    lines = [f"rank {after.rank}: before {before.rank}/{before.size} {before.initialized}, "
             f"after {after.rank}/{after.size} {after.initialized}"]
    try:
        savegame.Run(sys.argv[1])
    except savegame.DistributedNotSupportedError as error:
        lines.append(f"rank {after.rank}: refused: {error}")
    with open(f"{sys.argv[2]}/rank-{after.rank}.txt", "w") as f:  # one file each: stdout interleaves
        f.write("\\n".join(lines))
    dist.destroy_process_group()
""")


def test_one_process_is_rank_zero_of_one():
    assert world() == World(rank=0, size=1, local_rank=0, initialized=False)


def test_the_environment_of_torchrun_is_read_before_the_process_group_exists(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert world() == World(rank=3, size=4, local_rank=1, initialized=False)
    monkeypatch.setenv("WORLD_SIZE", "not a number")  # someone else's variable: ignored
    assert world().size == 1


def test_a_run_in_a_multi_process_job_is_refused_before_the_folder_is_touched(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(savegame.DistributedNotSupportedError, match="rank 1 of a 2-process job.*torchrun"):
        savegame.Run(tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_rank_alone_without_a_world_size_is_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")  # what a SummaryWriter test sets: the writer goes silent, a Run is fine
    with savegame.Run(tmp_path / "run", handle_signals=False) as run:
        run.track(model=torch.nn.Linear(1, 1))
        run.save()
    assert run.checkpoints


def on_two_ranks(tmp_path, source, *args):
    """Run ``source`` as a script on 2 real torchrun ranks (gloo); each rank writes what it found to
    ``<tmp_path>/rank-<r>.txt`` (one file each: their stdout interleaves); returns those texts."""
    script = tmp_path / "script.py"
    script.write_text(source)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), *map(str, args)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return [(tmp_path / f"rank-{rank}.txt").read_text() for rank in (0, 1)]


@pytest.mark.slow
def test_under_torchrun_every_rank_is_refused_with_the_same_message(tmp_path):
    said = on_two_ranks(tmp_path, SCRIPT, tmp_path / "run", tmp_path)
    for rank in (0, 1):
        assert f"rank {rank}: before {rank}/2 False, after {rank}/2 True" in said[rank]
        assert f"rank {rank}: refused: savegame.Run was created in rank {rank} of a 2-process job" in said[rank]
    assert not (tmp_path / "run").exists()


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
    gathered = coordinator.gather({"rank": rank, "rng": [rank] * 3})
    started = time.perf_counter()
    for _ in range(200):
        coordinator.any(False)
    each = (time.perf_counter() - started) / 200
    coordinator.barrier()
    with open(f"{sys.argv[1]}/rank-{rank}.txt", "w") as f:  # one file each: stdout interleaves
        f.write(f"rank {rank}: {decided!r} {preempted} {calm} {gathered!r} any() {1e6 * each:.0f} us")
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_the_coordinator_agrees_across_two_real_ranks(tmp_path):
    lines = on_two_ranks(tmp_path, COORDINATED, tmp_path)
    assert lines[0].startswith("rank 0: 'saved by rank 0' True False [{'rank': 0, 'rng': [0, 0, 0]}, "
                               "{'rank': 1, 'rng': [1, 1, 1]}] any()")
    assert lines[1].startswith("rank 1: 'saved by rank 0' True False None any()")


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
