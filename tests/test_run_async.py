"""Run(async_save=True) (issue 14): run.save() returns after the snapshot, the write goes on in
the background, and every promise of a synchronous save still holds: the values of the moment,
the same checkpoints and run.json, a wait at the end, errors raised once at the next call with
nothing earlier lost, and the save policy put back when a save fails."""

from __future__ import annotations

import errno
import json
import subprocess
import sys

import pytest
import torch

import savegame
from savegame.checkpoint.store import read_checkpoint, verify_checkpoint
from savegame.errors import SaveFailedError


def train(run_dir, *, async_save, epochs=3, steps=4):
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    with savegame.Run(run_dir, keep=savegame.Keep(last=2), async_save=async_save) as run:
        run.track(model=model, optimizer=optimizer)
        for _ in run.epochs(epochs):
            for _ in run.iterate(range(steps)):
                loss = model(torch.randn(4, 8)).pow(2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                run.log("loss/train", loss)
            run.save(metrics={"loss/val": float(loss.detach())})
    return model


def test_an_async_run_ends_with_the_checkpoints_and_run_json_of_a_sync_one(tmp_path):
    sync_model = train(tmp_path / "sync", async_save=False)
    async_model = train(tmp_path / "async", async_save=True)
    assert torch.equal(sync_model.weight, async_model.weight)
    infos = {kind: json.loads((tmp_path / kind / "run.json").read_text()) for kind in ("sync", "async")}
    assert infos["async"]["saved_steps"] == infos["sync"]["saved_steps"] == [4, 8, 12]
    assert infos["async"]["status"] == "finished"
    names = {kind: sorted(p.name for p in (tmp_path / kind / "checkpoints").iterdir()) for kind in infos}
    assert names["async"] == names["sync"] == ["step-000008", "step-000012"]  # retention ran in the background
    for name in names["sync"]:
        ours, theirs = (read_checkpoint(tmp_path / kind / "checkpoints" / name)[0] for kind in ("async", "sync"))
        assert torch.equal(ours["model"]["weight"], theirs["model"]["weight"])
        assert verify_checkpoint(tmp_path / "async" / "checkpoints" / name) == []


def test_the_checkpoint_holds_the_values_of_the_save_not_of_later_steps(tmp_path):
    model = torch.nn.Linear(4, 4)
    with savegame.Run(tmp_path / "r", async_save=True) as run:
        run.track(model=model)
        saved = model.weight.detach().clone()
        assert run.save() is None  # it commits later
        with torch.no_grad():
            model.weight.add_(1.0)  # training goes on while the write runs
        info = run.wait()
        assert info.step == 0 and [c.step for c in run.checkpoints] == [0]
        assert run.wait() is None  # nothing in flight any more
    assert torch.equal(read_checkpoint(info.path)[0]["model"]["weight"], saved)


def test_a_background_save_on_a_full_disk_raises_once_at_the_next_call_and_the_policy_is_put_back(tiny_disk):
    model = torch.nn.Linear(4, 4)
    run = savegame.Run(tiny_disk / "r", save=savegame.OnImprovement("loss/val"), async_save=True)
    run.track(model=model)
    run.step = 1
    run.save(metrics={"loss/val": 1.0})
    first = run.wait()
    run.step = 2
    run.extras["ballast"] = torch.zeros(1 << 19)  # 2 MiB: the next save cannot fit on the 1 MiB disk
    run.save(metrics={"loss/val": 0.5})  # decided (an improvement), written in the background
    with pytest.raises(SaveFailedError) as raised:
        run.wait()
    assert raised.value.errno == errno.ENOSPC and "Previous checkpoints are intact" in str(raised.value)
    assert run.wait() is None  # raised once
    assert run.save_policy.best == 1.0  # the failed save did not count as the new best
    del run.extras["ballast"]
    run.step = 3
    assert run.save(metrics={"loss/val": 0.7}) is None  # an improvement on 1.0, as it would be without the failure
    assert run.wait().metrics == {"loss/val": 0.7}
    run.finish()
    assert [c.step for c in run.checkpoints] == [1, 3]
    kept = sorted(p.name for p in (tiny_disk / "r" / "checkpoints").iterdir())
    assert kept == [first.path.name, "step-000003"]  # the torn save's temp folder is gone
    assert all(verify_checkpoint(tiny_disk / "r" / "checkpoints" / name) == [] for name in kept)
    assert json.loads((tiny_disk / "r" / "run.json").read_text())["saved_steps"] == [1, 3]


def test_the_error_of_a_failed_background_save_surfaces_at_the_next_log(tiny_disk):
    run = savegame.Run(tiny_disk / "r", async_save=True)
    run.extras["ballast"] = torch.zeros(1 << 19)
    run.track(model=torch.nn.Linear(2, 2))
    run.save()
    run._saver._in_flight[0].exception(timeout=30)  # the background write has failed by now
    with pytest.raises(SaveFailedError):
        run.log("loss/train", 1.0)
    run.log("loss/train", 1.0)  # once only
    del run.extras["ballast"]
    run.finish()
    assert json.loads((tiny_disk / "r" / "run.json").read_text())["status"] == "finished"


def test_finish_raises_the_last_saves_error_and_marks_the_run_failed(tiny_disk):
    run = savegame.Run(tiny_disk / "r", async_save=True)
    run.extras["ballast"] = torch.zeros(1 << 19)
    run.track(model=torch.nn.Linear(2, 2))
    run.save()
    with pytest.raises(SaveFailedError):
        run.finish()
    info = json.loads((tiny_disk / "r" / "run.json").read_text())
    assert info["status"] == "failed" and "its last save failed" in info["message"]
    savegame.Run(tiny_disk / "r2").finish()  # the lock of r was released: the folder works again
    assert not run._lock.held


def test_a_script_that_never_calls_finish_still_commits_and_records_its_last_save(tmp_path):
    code = ("import torch, savegame\n"
            f"run = savegame.Run({str(tmp_path / 'r')!r}, async_save=True)\n"
            "run.track(model=torch.nn.Linear(256, 256))\n"
            "for _ in run.iterate(range(3)):\n"
            "    pass\n"
            "run.save()\n")  # and exit at once, the write in flight
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    checkpoint = tmp_path / "r" / "checkpoints" / "step-000003"
    assert verify_checkpoint(checkpoint) == []
    assert json.loads((tmp_path / "r" / "run.json").read_text())["saved_steps"] == [3]


def test_the_event_files_are_fsynced_on_the_writing_thread_before_the_commit(tmp_path, monkeypatch):
    """A checkpoint records each event file's size; an async save makes those bytes durable on its
    own thread, before its commit, not on the training thread."""
    import threading

    import savegame.run as run_module

    calls = []
    real = run_module.fsync_files

    def recording(paths):
        paths = list(paths)
        calls.append((threading.current_thread().name, [p.name for p in paths],
                      any("." not in p.parent.name for p in (tmp_path / "checkpoints").glob("step-*/COMMIT"))))
        real(paths)

    monkeypatch.setattr(run_module, "fsync_files", recording)
    with savegame.Run(tmp_path, async_save=True, handle_signals=False) as run:
        run.track(model=torch.nn.Linear(2, 1))
        run.log("loss", 1.0, step=0)
        run.save()
        run.wait()
    (thread, names, committed_before), = calls
    assert thread.startswith("savegame-save") and not committed_before
    assert names and all(".tfevents." in name for name in names)
    checkpoint = read_checkpoint(tmp_path / "checkpoints" / "step-000000")[0]
    sizes = checkpoint["_savegame"]["log"]["files"]
    assert all((tmp_path / name).stat().st_size >= size for name, size in sizes.items()) and sizes


def test_a_sync_save_fsyncs_the_event_files_itself(tmp_path, monkeypatch):
    import savegame.run as run_module

    calls = []
    monkeypatch.setattr(run_module, "fsync_files", lambda paths: calls.append(list(paths)))
    with savegame.Run(tmp_path, handle_signals=False) as run:
        run.track(model=torch.nn.Linear(2, 1))
        run.log("loss", 1.0, step=0)
        run.save()
    assert calls == []  # the log writer fsynced them before the state was taken


def test_a_save_still_being_written_counts_for_the_save_policy(tmp_path, monkeypatch):
    """EverySteps(3) with the step-3 save still in flight at steps 4 and 5 saves neither of them
    (it once did: the policy heard of a save only at its commit)."""
    import threading

    import savegame.run as run_module

    release, real = threading.Event(), run_module.fsync_files

    def held(paths):  # the background write of the first save waits here, before its commit
        release.wait(timeout=10)  # a bounded wait: without the fix the step-4 save waits for it
        real(paths)

    monkeypatch.setattr(run_module, "fsync_files", held)
    with savegame.Run(tmp_path, save=savegame.EverySteps(3), keep=savegame.KeepAll(), async_save=True,
                      handle_signals=False) as run:
        run.track(model=torch.nn.Linear(2, 1))
        run.log("loss", 1.0, step=0)  # an event file, so the save fsyncs it on its thread
        for step in range(1, 7):
            run.step = step
            run.save()
            if step == 5:
                assert run.checkpoints == []  # step 3 is still being written
                release.set()
    assert [c.step for c in run.checkpoints] == [3, 6]
    assert json.loads((tmp_path / "run.json").read_text())["saved_steps"] == [3, 6]
