"""The commit protocol: only complete checkpoints count, damage is caught and named, failed saves
leave earlier checkpoints intact."""

import errno
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from savegame.checkpoint.safetensors_io import hash_file
from savegame.checkpoint.store import (
    CheckpointInfo, checkpoint_dirname, delete_checkpoint, is_committed, list_checkpoints, persist,
    quarantine, read_checkpoint, read_manifest, remove_stale_temps, snapshot, verify_checkpoint,
    write_checkpoint,
)
from manifests import rewrite_manifest
from savegame.errors import CheckpointCorruptError, CheckpointNotFoundError, FormatVersionError, SaveFailedError


def state():
    model = torch.nn.Linear(4, 3)
    return {"model": model.state_dict(), "epoch_losses": [0.5, float("nan")], "best": float("inf")}


def save(root, step, **kwargs):
    return write_checkpoint(root / checkpoint_dirname(step), state(), step=step, epoch=step // 10, **kwargs)


def flip_byte(file, index):
    data = bytearray(file.read_bytes())
    data[index] ^= 0x40
    file.write_bytes(bytes(data))


def test_checkpoint_folder_holds_three_files_and_a_complete_manifest(tmp_path):
    info = save(tmp_path, 480, metrics={"loss/val": torch.tensor(0.25), "acc": np.float32(0.5)}, info={"k": (1, 2)})
    assert info.path.name == "step-000480" and sorted(os.listdir(info.path)) == ["COMMIT", "manifest.json",
                                                                                 "tensors.safetensors"]
    assert info.size == sum(f.stat().st_size for f in info.path.iterdir())
    assert info.metrics == {"loss/val": 0.25, "acc": 0.5} and all(type(v) is float for v in info.metrics.values())
    manifest = read_manifest(info.path)
    assert manifest["format"] == "savegame.checkpoint" and manifest["version"] == 1
    assert (manifest["step"], manifest["epoch"]) == (480, 48)
    assert manifest["torch_version"] == torch.__version__ and manifest["savegame_version"]
    assert manifest["files"]["tensors.safetensors"]["hash"].startswith("xxh3_128:")
    assert manifest["info"] == {"k": {"$tuple": [1, 2]}}
    assert not list(tmp_path.glob("*.tmp-*"))


def test_state_round_trips_through_a_checkpoint(tmp_path):
    original = state()
    info = write_checkpoint(tmp_path / "c", original, step=1, epoch=0)
    loaded, manifest = read_checkpoint(info.path)
    assert loaded["best"] == float("inf") and np.isnan(loaded["epoch_losses"][1])
    for key, value in original["model"].items():
        assert torch.equal(loaded["model"][key], value)
    assert manifest["step"] == 1


def test_dirnames_sort_by_step():
    assert checkpoint_dirname(0) == "step-000000" and checkpoint_dirname(1234567) == "step-1234567"


def test_snapshot_is_isolated_from_later_changes_and_persists_later(tmp_path):
    weights = torch.zeros(3)
    snap = snapshot({"w": weights})
    weights.add_(1)
    info = persist(snap, tmp_path / "c", step=2, epoch=0)
    assert read_checkpoint(info.path)[0]["w"].sum() == 0


def test_list_counts_only_committed_checkpoints_sorted_by_step(tmp_path):
    for step in (30, 10, 20):
        save(tmp_path, step)
    (tmp_path / "step-000040.tmp-1-abc").mkdir()
    uncommitted = save(tmp_path, 50).path
    os.unlink(uncommitted / "COMMIT")
    quarantine(save(tmp_path, 60).path)
    (tmp_path / "notes.txt").write_text("hi")
    listed = list_checkpoints(tmp_path)
    assert [c.step for c in listed] == [10, 20, 30]
    assert isinstance(listed[0], CheckpointInfo) and listed[0].epoch == 1 and listed[0].size > 0


def test_a_committed_checkpoint_is_not_overwritten_unless_asked(tmp_path):
    first = save(tmp_path, 5)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save(tmp_path, 5)
    write_checkpoint(first.path, {"new": 1}, step=5, epoch=0, overwrite=True)
    assert read_checkpoint(first.path)[0] == {"new": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000005"]


def test_leftover_of_an_interrupted_save_is_replaced(tmp_path):
    leftover = save(tmp_path, 7).path
    os.unlink(leftover / "COMMIT")  # crashed after the rename, before COMMIT
    save(tmp_path, 7)
    assert verify_checkpoint(leftover) == []
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "data.csv").write_text("x")
    with pytest.raises(FileExistsError, match="not a savegame checkpoint"):
        write_checkpoint(tmp_path / "mine", {}, step=0, epoch=0)


def test_bad_metrics_step_and_info_are_refused_before_writing(tmp_path):
    with pytest.raises(TypeError, match="Metric 'loss' must be a number"):
        save(tmp_path, 1, metrics={"loss": "low"})
    with pytest.raises(TypeError, match="Metric 'vec'"):
        save(tmp_path, 1, metrics={"vec": torch.ones(3)})
    with pytest.raises(ValueError, match="step=-1"):
        write_checkpoint(tmp_path / "c", {}, step=-1, epoch=0)
    with pytest.raises(TypeError, match="info must hold plain values"):
        save(tmp_path, 1, info={"t": torch.ones(1)})
    assert list(tmp_path.iterdir()) == []


def test_a_flipped_bit_in_the_tensors_fails_reading_and_verification(tmp_path):
    path = save(tmp_path, 1).path
    flip_byte(path / "tensors.safetensors", -3)
    # the piece hashes name the damaged tensor
    with pytest.raises(CheckpointCorruptError, match="tensors.safetensors does not match its manifest: tensor 'model/"):
        read_checkpoint(path)
    problems = verify_checkpoint(path)
    assert len(problems) == 1 and "tensors.safetensors" in problems[0] and "expected size" in problems[0]
    read_checkpoint(path, verify=False)  # explicitly unverified reads still work


def test_a_flipped_bit_in_the_manifest_is_caught_by_commit(tmp_path):
    path = save(tmp_path, 1).path
    text = (path / "manifest.json").read_text()
    changed = re.sub(r'"step":\s*1\b', '"step":3', text, count=1)
    assert changed != text
    (path / "manifest.json").write_text(changed)
    with pytest.raises(CheckpointCorruptError, match="manifest.json does not match COMMIT"):
        read_checkpoint(path)
    assert "manifest.json does not match COMMIT" in verify_checkpoint(path)[0]
    with pytest.warns(UserWarning, match="Skipping checkpoint"):
        assert list_checkpoints(tmp_path) == []


def test_truncated_and_missing_tensor_files_are_named(tmp_path):
    path = save(tmp_path, 1).path
    data = (path / "tensors.safetensors").read_bytes()
    (path / "tensors.safetensors").write_bytes(data[:-10])
    with pytest.raises(CheckpointCorruptError, match="tensors.safetensors has .* bytes but the manifest recorded"):
        read_checkpoint(path)
    os.unlink(path / "tensors.safetensors")
    with pytest.raises(CheckpointCorruptError, match="tensors.safetensors is missing"):
        read_checkpoint(path)
    assert "tensors.safetensors is missing" in verify_checkpoint(path)[0]


def test_missing_commit_means_an_interrupted_save(tmp_path):
    path = save(tmp_path, 1).path
    os.unlink(path / "COMMIT")
    assert not is_committed(path)
    with pytest.raises(CheckpointCorruptError, match=r"not committed \(a save was interrupted\)"):
        read_checkpoint(path)
    assert "not committed" in verify_checkpoint(path)[0]


def test_a_newer_format_version_asks_for_an_upgrade(tmp_path):
    path = save(tmp_path, 1).path
    rewrite_manifest(path, lambda m: m.update(version=3, savegame_version="9.0"))
    with pytest.raises(FormatVersionError, match="savegame 9.0 in checkpoint format version 3.*pip install -U"):
        read_checkpoint(path)
    rewrite_manifest(path, lambda m: m.update(format="other.tool"))
    with pytest.raises(FormatVersionError, match="not a savegame checkpoint"):
        read_manifest(path)


def test_missing_paths_and_plain_folders_are_not_checkpoints(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        read_checkpoint(tmp_path / "nope")
    with pytest.raises(FormatVersionError, match="no manifest.json"):
        read_checkpoint(tmp_path)
    torch.save({"w": torch.ones(1)}, tmp_path / "model.pt")
    with pytest.raises(FormatVersionError, match="import_weights"):
        read_checkpoint(tmp_path / "model.pt")



def test_a_fake_checkpoint_around_a_pickle_is_refused_and_never_executed(tmp_path, pickle_bomb):
    Boom, marker = pickle_bomb
    path = save(tmp_path, 1).path
    torch.save({"model/weight": Boom()}, path / "tensors.safetensors")
    info = hash_file(path / "tensors.safetensors")
    rewrite_manifest(path, lambda m: m["files"].update({"tensors.safetensors": {"size": info.size, "hash": info.hash}}))
    with pytest.raises(FormatVersionError, match="looks like a torch.save file"):
        read_checkpoint(path)
    assert verify_checkpoint(path) and not marker.exists()


def test_quarantine_renames_without_clobbering(tmp_path):
    assert quarantine(save(tmp_path, 1).path).name == "step-000001.corrupt"
    moved = quarantine(save(tmp_path, 1).path)
    assert moved.name == "step-000001.corrupt-2" and verify_checkpoint(moved) == []


def test_delete_removes_everything(tmp_path):
    path = save(tmp_path, 1).path
    delete_checkpoint(path)
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_a_delete_killed_midway_leaves_no_half_checkpoint_and_the_next_start_cleans_it(tmp_path, monkeypatch):
    kept, doomed = save(tmp_path, 1), save(tmp_path, 2)
    real_unlink = os.unlink
    calls = []

    def killed_after_one_file(path, *args, **kwargs):  # the process dies after removing one file
        calls.append(path)
        if len(calls) > 1:
            raise KeyboardInterrupt("killed")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", killed_after_one_file)
    with pytest.raises(KeyboardInterrupt):
        delete_checkpoint(doomed.path)
    monkeypatch.setattr(os, "unlink", real_unlink)
    leftover = [p.name for p in tmp_path.iterdir() if p.name != kept.path.name]
    assert len(leftover) == 1 and leftover[0].startswith("step-000002.del-")  # never under its own name
    assert [c.step for c in list_checkpoints(tmp_path)] == [1]
    assert [p.name for p in remove_stale_temps(tmp_path, include_live=True)] == leftover
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.path.name] and verify_checkpoint(kept.path) == []


def test_stale_temps_of_dead_processes_are_removed(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)
    (tmp_path / f"step-000001.tmp-{dead}-ab12").mkdir()
    (tmp_path / f"step-000002.tmp-{os.getpid()}-cd34").mkdir()
    assert [p.name for p in remove_stale_temps(tmp_path)] == [f"step-000001.tmp-{dead}-ab12"]
    assert [p.name for p in remove_stale_temps(tmp_path, include_live=True)] == [f"step-000002.tmp-{os.getpid()}-cd34"]


def test_an_old_checkpoint_moved_aside_by_a_crashed_overwrite_is_put_back(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = save(tmp_path, 3).path
    os.rename(path, tmp_path / f"step-000003.old-{int(done.stdout)}-ef56")
    remove_stale_temps(tmp_path)
    assert verify_checkpoint(path) == [] and [c.step for c in list_checkpoints(tmp_path)] == [3]


def test_a_file_in_the_way_fails_the_save_cleanly(tmp_path):
    previous = save(tmp_path, 1)
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(SaveFailedError) as e:
        write_checkpoint(tmp_path / "blocker" / "step-000002", state(), step=2, epoch=0)
    assert "Previous checkpoints are intact" in str(e.value) and "blocker" in str(e.value)
    assert verify_checkpoint(previous.path) == []


def test_a_full_disk_fails_the_save_and_keeps_the_previous_checkpoint(tiny_disk):
    previous = save(tiny_disk, 1)
    with pytest.raises(SaveFailedError) as e:
        write_checkpoint(tiny_disk / "step-000002", {"big": torch.zeros(1 << 19)}, step=2, epoch=0)
    assert e.value.errno == errno.ENOSPC
    assert "the disk is full" in str(e.value) and "Previous checkpoints are intact" in str(e.value)
    assert "step-000002" in str(e.value)
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["step-000001"]  # temp folder removed
    assert verify_checkpoint(previous.path) == []


def test_a_read_only_disk_fails_the_save_and_keeps_the_previous_checkpoint(tiny_disk):
    previous = save(tiny_disk, 1)
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    with pytest.raises(SaveFailedError) as e:
        save(tiny_disk, 2)
    assert e.value.errno == errno.EROFS and "read-only" in str(e.value)
    assert "Previous checkpoints are intact" in str(e.value)
    assert [c.step for c in list_checkpoints(tiny_disk)] == [1] and verify_checkpoint(previous.path) == []


def test_a_full_disk_during_an_overwrite_keeps_the_old_checkpoint(tiny_disk):
    previous = save(tiny_disk, 1)
    with pytest.raises(SaveFailedError):
        write_checkpoint(previous.path, {"big": torch.zeros(1 << 19)}, step=1, epoch=0, overwrite=True)
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["step-000001"]
    assert verify_checkpoint(previous.path) == []
