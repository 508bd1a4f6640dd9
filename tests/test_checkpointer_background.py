"""The Checkpointer's background saves (issue 14, its first step): a snapshot in reused host
buffers, the persist and the retention on a thread, one save in flight, the owner told on its own
thread, and a failed save's error raised once, with earlier checkpoints intact."""

from __future__ import annotations

import errno
import threading

import pytest
import torch

from savegame.checkpoint.policy import KeepLast
from savegame.checkpoint.store import list_checkpoints, read_checkpoint, verify_checkpoint
from savegame.checkpointer import Checkpointer
from savegame.errors import SaveFailedError
from savegame.folder import RunFolder


def saver(path, **kwargs):
    folder = RunFolder(path)
    folder.checkpoint_root.mkdir(parents=True, exist_ok=True)
    return Checkpointer(folder, keep=kwargs.pop("keep", KeepLast(3)), background=True, **kwargs)


def state(value: float) -> dict:
    return {"w": torch.full((256,), value), "b": torch.arange(4.0) * value, "step": int(value)}


def test_a_background_save_keeps_the_values_of_its_snapshot_and_reads_back_as_a_sync_one(tmp_path):
    background = saver(tmp_path / "bg")
    live = state(1.0)
    handle = background.save(live, step=1, epoch=0, metrics={"loss": torch.tensor(0.5)})
    live["w"].add_(100)  # training goes on while the write runs
    info = handle.result()
    sync = Checkpointer(RunFolder(tmp_path / "sync"), keep=KeepLast(3))
    (tmp_path / "sync" / "checkpoints").mkdir(parents=True)
    expected = sync.save(state(1.0), step=1, epoch=0, metrics={"loss": 0.5}).result()
    ours, theirs = read_checkpoint(info.path)[0], read_checkpoint(expected.path)[0]
    assert torch.equal(ours["w"], torch.full((256,), 1.0)) and torch.equal(ours["w"], theirs["w"])
    assert ours["step"] == theirs["step"] == 1 and info.metrics == {"loss": 0.5}
    assert verify_checkpoint(info.path) == []
    background.close()


def test_the_host_buffers_are_allocated_once_and_reused(tmp_path):
    background = saver(tmp_path)
    pointers = []
    original = background._persist_and_retain

    def spy(snap, *args):
        pointers.append(snap.tensors["w"].data_ptr())
        return original(snap, *args)

    background._persist_and_retain = spy
    for step in (1, 2, 3):
        background.save(state(float(step)), step=step, epoch=0)
    background.close()
    assert len(set(pointers)) == 1  # one host copy of the state, written three times
    assert [c.step for c in background.checkpoints] == [1, 2, 3]
    assert torch.equal(read_checkpoint(background.checkpoints[0].path)[0]["w"], torch.full((256,), 1.0))


def test_one_save_in_flight_the_next_waits_and_the_owner_hears_on_its_own_thread(tmp_path):
    heard = []
    background = saver(tmp_path, keep=KeepLast(1),
                       on_committed=lambda info: heard.append((info.step, threading.current_thread().name)))
    release = threading.Event()
    original = background._persist_and_retain

    def slow(*args):
        release.wait(10)
        return original(*args)

    background._persist_and_retain = slow
    first = background.save(state(1.0), step=1, epoch=0)
    assert not first.done() and background.in_flight and background.collect() is None  # still writing
    release.set()
    second = background.save(state(2.0), step=2, epoch=0)  # back-pressure: the first is done now
    assert first.done() and first.result().step == 1
    assert second.result().step == 2
    me = threading.current_thread().name
    assert heard == [(1, me), (2, me)]
    # retention ran in the background, on the list as it was at the snapshot
    assert [c.step for c in background.checkpoints] == [2] and [c.step for c in list_checkpoints(tmp_path / "checkpoints")] == [2]
    background.close()


def test_a_full_disk_in_a_background_save_raises_once_at_the_next_call_and_keeps_the_earlier_ones(tiny_disk):
    background = saver(tiny_disk)
    background.save(state(1.0), step=1, epoch=0).result()
    background.save({"big": torch.zeros(1 << 19)}, step=2, epoch=0)  # 2 MiB: does not fit
    with pytest.raises(SaveFailedError) as raised:
        background.save(state(3.0), step=3, epoch=0)  # the next call hears of it, and saves nothing
    assert raised.value.errno == errno.ENOSPC and "Previous checkpoints are intact" in str(raised.value)
    assert not background.in_flight  # raised once: the next save goes ahead
    background.save(state(3.0), step=3, epoch=0).result()
    background.close()
    assert [c.step for c in background.checkpoints] == [1, 3]
    assert sorted(p.name for p in (tiny_disk / "checkpoints").iterdir()) == ["step-000001", "step-000003"]
    assert all(verify_checkpoint(c.path) == [] for c in background.checkpoints)


def test_the_handle_of_a_failed_background_save_raises_its_error_and_close_then_does_not(tiny_disk):
    background = saver(tiny_disk)
    handle = background.save({"big": torch.zeros(1 << 19)}, step=1, epoch=0)
    with pytest.raises(SaveFailedError):
        handle.result()
    background.close()  # the error was raised once already, through the handle
    assert list_checkpoints(tiny_disk / "checkpoints") == []
