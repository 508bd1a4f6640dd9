"""A Run in a real 2-rank torchrun job (gloo, CPU). DDP: rank 0 owns the folder, every rank's
random state and data position resume, the ranks save together, rank 0 killed mid-save loses
nothing, and a SIGTERM to one rank saves every rank's step (the kill storms of the whole job and of
one rank are in tests/reliability/test_job_kills.py). FSDP2: sharded
state goes through torch.distributed.checkpoint and restores on 2 ranks, 1 rank or no process group."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import savegame
from savegame.checkpoint.store import verify_checkpoint
from tb_read import read_scalars
from torchrun_jobs import on_two_ranks, rank_pid, run_ddp, start_ddp, torchrun, torchrun_env

pytestmark = pytest.mark.slow
EXTRA = ("--epochs", "4", "--sleep", "0.04")  # 48 steps of ~0.05 s: long enough to be caught anywhere


def outputs(out):
    return [load_file(f"{out}.rank{rank}.safetensors") for rank in (0, 1)]


def curves(run_dir):
    return {tag: [(p.step, p.value) for p in points] for tag, points in read_scalars(run_dir).items()}


def checkpoint_steps(run_dir):
    root = Path(run_dir) / "checkpoints"
    return sorted(int(p.name.split("-")[1]) for p in root.iterdir() if p.name.startswith("step-") and "." not in p.name)


def saving_now(run_dir):
    root = Path(run_dir) / "checkpoints"
    return root.is_dir() and any(".tmp-" in p.name for p in root.iterdir())


def newest_step(run_dir):
    return max(checkpoint_steps(run_dir), default=-1) if (Path(run_dir) / "checkpoints").is_dir() else -1


def assert_same_end(got, reference):
    for rank in (0, 1):
        assert got[rank].keys() == reference[rank].keys()
        for key in reference[rank]:
            assert torch.equal(got[rank][key], reference[rank][key]), (rank, key)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 2-rank run: its parameters, random streams and curves."""
    root = tmp_path_factory.mktemp("reference")
    run_ddp(root / "run", root / "out", *EXTRA)
    return outputs(root / "out"), curves(root / "run")


def test_rank_zero_alone_writes_the_folder_and_each_ranks_progress_is_saved(reference, tmp_path):
    run_ddp(tmp_path / "run", tmp_path / "out", "--epochs", "1")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "finished"
    steps = checkpoint_steps(tmp_path / "run")
    assert steps[-1] == 12  # 192 points, 2 ranks, batches of 8
    state = savegame.load(tmp_path / "run" / "checkpoints" / f"step-{steps[-1]:06d}")
    run_state = state["_savegame"]
    assert run_state["world_size"] == 2 and set(run_state["ranks"]) == {"1"}
    assert run_state["ranks"]["1"]["step"] == run_state["step"] == 12
    # two random streams: rank 1's is its own, not a copy of rank 0's
    assert not torch.equal(run_state["ranks"]["1"]["rng"]["torch"], run_state["rng"]["torch"])
    assert len(list((tmp_path / "run").glob("events.out.tfevents.*"))) == 1  # one writer: rank 0's


def test_a_sigterm_to_one_rank_saves_the_same_step_on_every_rank_and_exits_zero(reference, tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "out"
    job = start_ddp(run_dir, out, *EXTRA)
    rank1 = rank_pid(out, 1)
    while newest_step(run_dir) < 8 and job.poll() is None:
        time.sleep(0.005)
    os.kill(rank1, signal.SIGTERM)  # one rank only, as a node's own SIGTERM would
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 0, stderr
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "preempted" and "another rank" in info["message"]
    step = checkpoint_steps(run_dir)[-1]
    state = savegame.load(run_dir / "checkpoints" / f"step-{step:06d}")["_savegame"]
    assert state["step"] == state["ranks"]["1"]["step"] == step and step < 48
    run_ddp(run_dir, out, *EXTRA)
    assert_same_end(outputs(out), reference[0])
    assert curves(run_dir) == reference[1]


def test_rank_zero_killed_mid_save_leaves_no_checkpoint_the_resume_would_use(reference, tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "out"
    job = start_ddp(run_dir, out, *EXTRA, "--width", "2048")  # a save long enough to land in
    rank0 = rank_pid(out, 0)
    while newest_step(run_dir) < 6 and job.poll() is None:
        time.sleep(0.005)
    while not saving_now(run_dir) and job.poll() is None:
        time.sleep(0.0005)
    before = checkpoint_steps(run_dir)
    os.kill(rank0, signal.SIGKILL)  # torchrun's agent then stops rank 1 and fails the job
    job.communicate(timeout=120)
    assert job.returncode != 0
    assert checkpoint_steps(run_dir) == before  # the save in flight never committed
    run_ddp(run_dir, out, *EXTRA, "--width", "2048")
    ends = outputs(out)
    assert ends[0]["step"].item() == 48
    uninterrupted = tmp_path / "uninterrupted"
    uninterrupted.mkdir()
    run_ddp(uninterrupted / "run", uninterrupted / "out", *EXTRA, "--width", "2048")
    assert_same_end(ends, outputs(uninterrupted / "out"))


# -- sharded state (FSDP2 fully_shard on CPU/gloo) through torch.distributed.checkpoint -------------
FSDP_SCRIPT = Path(__file__).parent / "fixtures" / "fsdp_script.py"


def run_fsdp(run_dir, out, *extra, nproc=2):
    done = subprocess.run(torchrun(FSDP_SCRIPT, run_dir, out, *extra, nproc=nproc), capture_output=True, text=True,
                          timeout=180, env=torchrun_env())
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def fsdp_saved(tmp_path_factory):
    """A 2-rank FSDP2 run of 4 steps (AdamW, a schedule), saved at its end; what each rank held."""
    root = tmp_path_factory.mktemp("fsdp")
    run_fsdp(root / "run", root / "saved", "--steps", "4")
    return root, [load_file(f"{root}/saved.rank{rank}.safetensors") for rank in (0, 1)]


def assert_equal_states(got, expected):
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_an_fsdp_save_writes_each_ranks_shards_once_as_safetensors_and_verifies(fsdp_saved):
    root, _ = fsdp_saved
    checkpoint = root / "run" / "checkpoints" / "step-000004"
    shards = sorted(p.name for p in (checkpoint / "sharded").iterdir())
    assert len(shards) == 2 and all(name.endswith(".safetensors") for name in shards)  # one file per rank
    assert verify_checkpoint(checkpoint) == []
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    assert manifest["sharded"]["world_size"] == 2 and sorted(manifest["sharded"]["objects"]) == ["model", "optimizer"]
    assert "lr_schedule" in json.dumps(manifest["state"])  # plain state: rank 0 wrote it, as one process does


@pytest.mark.parametrize("how", ["2 ranks", "1 rank", "no process group"])
def test_an_fsdp_checkpoint_of_2_ranks_restores_equal_values_on_2_on_1_and_without_a_process_group(
        fsdp_saved, tmp_path, how):
    root, saved = fsdp_saved
    run_dir = tmp_path / "run"
    shutil.copytree(root / "run", run_dir)
    if how == "no process group":  # plain python, a plain model and optimizer: DCP reads the shards whole
        done = subprocess.run([sys.executable, str(FSDP_SCRIPT), str(run_dir), str(tmp_path / "got"), "--plain"],
                              capture_output=True, text=True, timeout=120, env=torchrun_env())
        assert done.returncode == 0, done.stderr
        assert "torch.distributed is disabled" not in done.stderr
        ranks = [0]
    else:
        nproc = 2 if how == "2 ranks" else 1
        run_fsdp(run_dir, tmp_path / "got", nproc=nproc)
        ranks = list(range(nproc))
    for rank in ranks:
        got = load_file(f"{tmp_path}/got.rank{rank}.safetensors")
        assert got["step"].item() == 4
        assert_equal_states(got, saved[0])  # model, every optimizer state tensor, the scheduled lr


def test_reading_a_sharded_checkpoint_outside_a_run_says_how_to_load_it(fsdp_saved, tmp_path):
    root, _ = fsdp_saved
    checkpoint = root / "run" / "checkpoints" / "step-000004"
    with pytest.raises(savegame.ShardedStateError, match=r"model, optimizer were saved sharded .* from 2 ranks"
                       r".*run\.track.*one process with the plain model.*HuggingFaceStorageReader"):
        savegame.load(checkpoint)
    with pytest.raises(savegame.ShardedStateError):
        savegame.export_weights(checkpoint, tmp_path / "weights.safetensors")
    assert not (tmp_path / "weights.safetensors").exists()


def test_a_damaged_shard_file_is_found_by_verify(fsdp_saved, tmp_path):
    root, _ = fsdp_saved
    checkpoint = tmp_path / "step-000004"
    shutil.copytree(root / "run" / "checkpoints" / "step-000004", checkpoint)
    shard = sorted((checkpoint / "sharded").iterdir())[1]
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    problems = verify_checkpoint(checkpoint)
    assert len(problems) == 1 and shard.name in problems[0] and "does not match the manifest" in problems[0]


POLICIES = """
import sys
import torch.distributed as dist
import savegame
from savegame.distributed import Coordinator

dist.init_process_group("gloo")
rank = dist.get_rank()
agreed_at = []
real_max = Coordinator.max
def counting(self, values):
    agreed_at.append(run.step)
    return real_max(self, values)
Coordinator.max = counting
policy = {"counters": savegame.EverySteps(5), "metrics": savegame.OnImprovement("loss/val")}[sys.argv[2]]
with savegame.Run(sys.argv[1], save=policy, keep=savegame.KeepAll(), handle_signals=False) as run:
    for step in range(1, 17):
        run.step = step
        # only rank 0 computes the validation loss: its policy decides for every rank
        run.save(metrics={"loss/val": {1: 3.0, 5: 2.0, 9: 2.5, 13: 1.0}[step]} if rank == 0 and step % 4 == 1 else None)
with open(f"{sys.argv[1]}/../rank-{rank}.txt", "w") as f:
    f.write(f"{[c.step for c in run.checkpoints]} {agreed_at}")
"""


@pytest.mark.parametrize("policy", ["counters", "metrics"])
def test_a_counter_policy_decides_on_each_rank_and_another_on_rank_zero_for_all(tmp_path, policy):
    """EverySteps needs no collective at a run.save() that does not save (the ranks meet to save and
    every 8 steps to compare preemption flags); OnImprovement with metrics on rank 0 alone meets at
    every call, and rank 0's answer is every rank's."""
    results = on_two_ranks(tmp_path, POLICIES, tmp_path / "run", policy)
    assert results[0] == results[1]  # the same checkpoints, the same collectives
    expected = {  # (checkpoints, the steps of each agreement; the last one is finish()'s)
        "counters": "[5, 10, 15] [5, 8, 10, 15, 16, 16]",
        "metrics": f"[1, 5, 13] {list(range(1, 17)) + [16]}",  # 3.0, then 2.0 and 1.0 improve; 2.5 does not
    }
    assert results[0] == expected[policy]
