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
    print(f"rank {after.rank}: before {before.rank}/{before.size} {before.initialized}, "
          f"after {after.rank}/{after.size} {after.initialized}", flush=True)
    try:
        savegame.Run(sys.argv[1])
    except savegame.DistributedNotSupportedError as error:
        print(f"rank {after.rank}: refused: {error}", flush=True)
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


@pytest.mark.slow
def test_under_torchrun_every_rank_is_refused_with_the_same_message(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path / "run")], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    for rank in (0, 1):
        assert f"rank {rank}: before {rank}/2 False, after {rank}/2 True" in done.stdout
        assert f"rank {rank}: refused: savegame.Run was created in rank {rank} of a 2-process job" in done.stdout
    assert not (tmp_path / "run").exists()
