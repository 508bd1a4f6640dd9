"""Incremental checkpoints (issue 14): unchanged tensors are shared with the previous checkpoint by
hard links, every checkpoint stays complete on its own, and deleting one never takes data from
another, even when the deletion is killed halfway."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

import savegame
from savegame.checkpoint import sharing
from savegame.checkpoint.commit import persist_incremental, snapshot
from savegame.checkpoint.layout import list_checkpoints, read_manifest, remove_stale_temps
from savegame.checkpoint.sharing import plan_sharing, stored_checkpoint
from savegame.checkpoint.store import read_checkpoint, verify_checkpoint
from savegame.checkpoint.tensor_format import read_header
from manifests import rewrite_manifest
from savegame.errors import CheckpointCorruptError

MiB = 1 << 20


def frozen_model(seed=0):
    """A 4 MiB frozen backbone and a small trained head: what fine-tuning saves."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 8))
    net[0].requires_grad_(False)
    opt = torch.optim.AdamW(net[1].parameters(), lr=1e-2)
    return net, opt


def train_step(net, opt):
    loss = net(torch.randn(4, 1024)).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def save_steps(tmp_path, steps, *, keep=None, **run_kwargs):
    net, opt = frozen_model()
    with savegame.Run(tmp_path / "run", keep=keep or savegame.Keep(last=10), **run_kwargs) as run:
        run.track(model=net, optimizer=opt)
        for step in range(1, steps + 1):
            train_step(net, opt)
            run.step = step
            run.save()
    return net, opt, sorted(c.path for c in list_checkpoints(tmp_path / "run" / "checkpoints"))


def inode(path):
    return os.stat(path).st_ino


def shared_files(checkpoint):
    return {name: entry for name, entry in read_manifest(checkpoint)["files"].items() if "shared" in entry}


def test_a_frozen_backbone_is_written_once_and_hard_linked_by_later_checkpoints(tmp_path):
    net, _, paths = save_steps(tmp_path, 3)
    first, second, third = paths
    assert shared_files(first) == {}
    assert read_manifest(first)["version"] == 1  # nothing shared: readable by every savegame
    (name, entry), = shared_files(second).items()
    assert read_manifest(second)["version"] == 2
    assert entry["shared"]["from"] == "step-000001"
    assert {"model/0.bias", "model/0.weight"} <= set(entry["shared"]["tensors"])  # (and an unused RNG's state)
    assert not any(name.startswith(("model/1.", "optimizer/")) for name in entry["shared"]["tensors"])
    assert inode(second / name) == inode(first / "tensors.safetensors") == inode(third / name)
    # the new file holds only what changed: the head and its optimizer state, not the 4 MiB backbone
    assert (second / "tensors.safetensors").stat().st_size < 0.05 * (first / "tensors.safetensors").stat().st_size
    for path in paths:
        assert verify_checkpoint(path) == []
        state, _ = read_checkpoint(path)
        assert torch.equal(state["model"]["0.weight"], net[0].weight)
    assert torch.equal(read_checkpoint(third)[0]["model"]["1.weight"], net[1].weight)


def test_the_keep_policy_deletes_the_first_writer_and_later_checkpoints_still_load(tmp_path):
    net, opt, paths = save_steps(tmp_path, 5, keep=savegame.Keep(last=2))
    assert [p.name for p in paths] == ["step-000004", "step-000005"]
    assert all(shared_files(p) for p in paths)  # the data written at step 1 lives on in their links
    for path in paths:
        assert verify_checkpoint(path) == []
    fresh, fresh_opt = frozen_model(seed=1)
    savegame.load(paths[-1], into={"model": fresh, "optimizer": fresh_opt})
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), net.state_dict().values()))
    assert fresh_opt.state_dict()["state"][0]["exp_avg"].equal(opt.state_dict()["state"][0]["exp_avg"])


def test_export_of_a_sharing_checkpoint_is_one_standalone_file(tmp_path):
    net, _, paths = save_steps(tmp_path, 2)
    out = tmp_path / "weights.safetensors"
    savegame.export_weights(paths[-1], out)
    from safetensors.torch import load_file
    weights = load_file(out)
    assert torch.equal(weights["0.weight"], net[0].weight) and torch.equal(weights["1.weight"], net[1].weight)


def test_a_resumed_run_shares_with_the_checkpoint_it_resumed_from(tmp_path):
    save_steps(tmp_path, 1)
    net, opt = frozen_model(seed=3)  # other weights: the resume must overwrite them
    with savegame.Run(tmp_path / "run") as run:
        run.track(model=net, optimizer=opt)
        train_step(net, opt)
        run.step = 2
        info = run.save()
    (name, entry), = shared_files(info.path).items()
    assert inode(info.path / name) == inode(tmp_path / "run" / "checkpoints" / "step-000001" / "tensors.safetensors")


def test_a_change_the_version_counter_misses_is_still_found_by_the_hash(tmp_path):
    """Writes through .data or a numpy view do not bump t._version; the comparison must not trust it."""
    net, opt = frozen_model()
    with savegame.Run(tmp_path / "run") as run:
        run.track(model=net, optimizer=opt)
        run.step = 1
        run.save()
        net[0].weight.data[0, 0] += 1.0  # .data: the version counter of net[0].weight does not move
        net[0].bias.detach().numpy()[3] = 7.0  # neither does a numpy view's write
        run.step = 2
        second = run.save()
    state, _ = read_checkpoint(second.path)
    assert torch.equal(state["model"]["0.weight"], net[0].weight) and state["model"]["0.bias"][3] == 7.0
    assert shared_files(second.path) == {}  # both backbone tensors changed: nothing shared


def test_same_bytes_in_another_shape_or_dtype_are_written_again(tmp_path):
    root, frozen = tmp_path, torch.arange(1 << 18, dtype=torch.float32)
    _, first = persist_incremental(snapshot({"w": frozen}), root / "a", step=1, epoch=0)
    plan = plan_sharing({"w": frozen.view(512, 512)}, first)
    assert plan.links == {} and list(plan.write) == ["w"]
    plan = plan_sharing({"w": frozen.view(torch.int32)}, first)
    assert plan.links == {}


def test_small_or_mostly_stale_files_are_not_linked(tmp_path):
    small, big = torch.ones(1000), torch.ones(MiB)
    _, first = persist_incremental(snapshot({"small": small, "big": big}), tmp_path / "a", step=1, epoch=0)
    # only the small tensor is unchanged: linking would keep 4 MiB of stale data alive for 4 KB
    assert plan_sharing({"small": small, "big": big + 1}, first).links == {}
    # the big one unchanged: linked, the small one rides along
    plan = plan_sharing({"small": small + 1, "big": big}, first)
    assert [link.tensors for link in plan.links.values()] == [("big",)] and list(plan.write) == ["small"]


def test_tensors_changed_in_place_are_not_hashed_at_all(tmp_path):
    net, opt = frozen_model()
    snap = snapshot({"model": net.state_dict()}, fingerprints=True)
    _, first = persist_incremental(snap, tmp_path / "a", step=1, epoch=0)
    with torch.no_grad():
        net[0].weight.add_(1.0)  # a tracked in-place change: the fingerprint moves
    again = snapshot({"model": net.state_dict()}, fingerprints=True)
    plan = plan_sharing(again.tensors, first, fingerprints=again.fingerprints, previous_fingerprints=snap.fingerprints)
    assert plan.hashed_bytes == 0 and plan.links == {}
    same = snapshot({"model": net.state_dict()}, fingerprints=True)
    plan = plan_sharing(same.tensors, first, fingerprints=same.fingerprints, previous_fingerprints=again.fingerprints)
    # untouched since `again`, so compared by hash; but `first` holds the old weight: no match
    assert plan.hashed_bytes > 0 and plan.links == {}
    _, second = persist_incremental(again, tmp_path / "b", step=2, epoch=0, previous=first,
                                    previous_fingerprints=snap.fingerprints)
    plan = plan_sharing(same.tensors, second, fingerprints=same.fingerprints,
                        previous_fingerprints=again.fingerprints)
    assert plan.hashed_bytes >= 4 * MiB and plan.links  # untouched since: confirmed by hashing, then linked


def test_incremental_false_never_shares(tmp_path):
    _, _, paths = save_steps(tmp_path, 3, incremental=False)
    assert all(shared_files(p) == {} for p in paths)
    assert len({inode(p / "tensors.safetensors") for p in paths}) == 3


def test_a_file_system_without_hard_links_gets_full_saves(tmp_path, monkeypatch):
    def no_links(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    net, _, paths = save_steps(tmp_path, 2)
    assert shared_files(paths[-1]) == {} and verify_checkpoint(paths[-1]) == []
    assert torch.equal(read_checkpoint(paths[-1])[0]["model"]["0.weight"], net[0].weight)


def test_async_and_incremental_saves_together(tmp_path):
    net, _, paths = save_steps(tmp_path, 3, async_save=True)
    assert shared_files(paths[1]) and shared_files(paths[2])
    assert all(verify_checkpoint(p) == [] for p in paths)
    assert torch.equal(read_checkpoint(paths[-1])[0]["model"]["1.weight"], net[1].weight)


def test_a_damaged_shared_file_is_reported_by_every_checkpoint_that_shares_it(tmp_path):
    _, _, paths = save_steps(tmp_path, 3)
    shared = paths[0] / "tensors.safetensors"
    entries, data_start = read_header(shared)
    at = data_start + entries["model/0.weight"]["data_offsets"][0] + 100
    with open(shared, "r+b") as f:  # one byte of the backbone, in place: all its links see it
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))
    for path in paths:
        problems = verify_checkpoint(path)
        assert len(problems) == 1 and "does not match the manifest" in problems[0], problems
        with pytest.raises(CheckpointCorruptError):
            read_checkpoint(path)


def test_a_missing_shared_file_names_it_and_where_it_came_from(tmp_path):
    _, _, paths = save_steps(tmp_path, 2)
    (name, _), = shared_files(paths[1]).items()
    (paths[1] / name).unlink()  # e.g. a copy that did not keep it
    with pytest.raises(CheckpointCorruptError, match=f"{name} is missing.*first written by step-000001.*cp -a"):
        read_checkpoint(paths[1])
    with pytest.raises(CheckpointCorruptError, match="is missing"):
        savegame.load(paths[1], into={"model": frozen_model()[0]})
    assert any("is missing" in p for p in verify_checkpoint(paths[1]))


def test_a_manifest_that_names_a_tensor_in_two_files_is_corrupt(tmp_path):
    _, _, paths = save_steps(tmp_path, 2)
    def claim_twice(manifest):
        (entry,) = [e for e in manifest["files"].values() if "shared" in e]
        entry["shared"]["tensors"].append("model/1.weight")  # the own file holds it too

    rewrite_manifest(paths[1], claim_twice)
    with pytest.raises(CheckpointCorruptError, match="does not hold it|in both"):
        read_checkpoint(paths[1])


def test_stored_checkpoint_matches_what_the_writer_remembered(tmp_path):
    _, _, paths = save_steps(tmp_path, 2)
    net, opt = frozen_model()
    snap = snapshot({"model": net.state_dict()})
    _, remembered = persist_incremental(snap, tmp_path / "x", step=1, epoch=0, previous=stored_checkpoint(paths[1]))
    assert stored_checkpoint(tmp_path / "x").tensors == remembered.tensors


KILL_DURING_DELETE = textwrap.dedent("""
    import os, shutil, signal, sys
    from savegame.checkpoint.layout import delete_checkpoint
    real_unlink = os.unlink
    calls = []
    def unlink(path, *args, **kwargs):  # SIGKILL ourselves after the first file is gone
        calls.append(path)
        if len(calls) > 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_unlink(path, *args, **kwargs)
    os.unlink = unlink
    delete_checkpoint(sys.argv[1])
""")


def test_a_sigkill_during_the_deletion_of_the_first_writer_leaves_every_kept_checkpoint_whole(tmp_path):
    _, _, paths = save_steps(tmp_path, 3)
    done = subprocess.run([sys.executable, "-c", KILL_DURING_DELETE, str(paths[0])], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    root = paths[0].parent
    assert [c.step for c in list_checkpoints(root)] == [2, 3]  # the half-deleted one is not listed
    for path in paths[1:]:
        assert verify_checkpoint(path) == [], path
    assert [p.name.split(".")[0] for p in remove_stale_temps(root, include_live=True)] == ["step-000001"]
    for path in paths[1:]:
        assert verify_checkpoint(path) == [], path


def test_the_cost_of_deciding_is_recorded_in_the_plan(tmp_path):
    frozen = torch.ones(2 * MiB)
    _, first = persist_incremental(snapshot({"w": frozen}), tmp_path / "a", step=1, epoch=0)
    plan = sharing.plan_sharing({"w": frozen}, first)
    assert plan.hashed_bytes == frozen.numel() * 4 and list(plan.links)
    manifest = json.loads((first.path / "manifest.json").read_text())
    assert manifest["files"]["tensors.safetensors"]["tensor_hashes"]["tensors"]["w"] == list(first.tensors["w"].pieces)


def test_a_record_that_does_not_match_its_file_makes_the_next_save_a_full_one(tmp_path):
    _, _, paths = save_steps(tmp_path, 1)

    def drop_a_tensor(manifest):
        del manifest["files"]["tensors.safetensors"]["tensor_hashes"]["tensors"]["model/0.weight"]

    rewrite_manifest(paths[0], drop_a_tensor)
    assert stored_checkpoint(paths[0]) is None  # nothing to share with, and no error
    # (a Run would set it aside as damaged at its resume; a Checkpointer that has it as its newest
    # checkpoint saves in full)
    from savegame.checkpointer import Checkpointer
    from savegame.folder import RunFolder

    net, opt = frozen_model()
    saver = Checkpointer(RunFolder(tmp_path / "run"), keep=savegame.Keep(last=5))
    info = saver.save({"model": net.state_dict(), "optimizer": opt.state_dict()}, step=2, epoch=0).result()
    assert shared_files(info.path) == {} and verify_checkpoint(info.path) == []


def test_a_manifest_whose_version_is_not_a_number_is_corrupt(tmp_path):
    _, _, paths = save_steps(tmp_path, 1)
    rewrite_manifest(paths[0], lambda m: m.update(version="2"))
    with pytest.raises(CheckpointCorruptError, match="not a valid savegame manifest \\(version '2'"):
        read_manifest(paths[0])
