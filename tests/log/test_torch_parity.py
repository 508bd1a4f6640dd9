"""Drop-in behaviour next to torch's ``SummaryWriter``: what ``file_writer`` is after ``close()``,
a call after ``close()`` (reopens, as torch's), a writer that logged nothing (its event file
exists, as torch's), ``add_video`` without moviepy (a warning, not an error), and a run folder
removed under a running writer (the log thread does not bring it back).

Where torch's own writer can run the same scenario, it does, and the two must agree."""

from __future__ import annotations

import shutil
import sys
import threading

import numpy as np
import pytest
import torch
from readback import ROOT, all_event_files, event_files, load_logdir
from tensorboard.backend.event_processing import event_file_loader
from torch.utils.tensorboard import SummaryWriter as TorchWriter

import savegame
from tb_read import read_scalars

BOTH = pytest.mark.parametrize("Writer", [TorchWriter, savegame.SummaryWriter], ids=["torch", "savegame"])


def _events(path):
    return list(event_file_loader.EventFileLoader(str(path)).Load())


def _hold_log_thread(writer):
    """Park the log thread on a job until the returned event is set, so what the test does
    next (remove the folder) happens before anything queued after this is written."""
    gate, parked = threading.Event(), threading.Event()

    def wait():
        parked.set()
        gate.wait(10)

    writer._job("hold", None, None, build=wait)
    writer._worker.wake()
    assert parked.wait(10), "the log thread never picked up the job"
    return gate


# -- 1. file_writer ----------------------------------------------------------------------------

@BOTH
def test_file_writer_is_none_after_close(Writer, tmp_path):
    writer = Writer(str(tmp_path))
    assert writer.file_writer is not None
    assert writer.file_writer.get_logdir() == str(tmp_path)
    writer.close()
    assert writer.file_writer is None


@BOTH
def test_get_file_writer_after_close_reopens(Writer, tmp_path):
    writer = Writer(str(tmp_path))
    writer.close()
    assert writer._get_file_writer().get_logdir() == str(tmp_path)
    assert writer.file_writer is not None
    writer.close()
    assert writer.file_writer is None
    assert len(event_files(tmp_path)) == 2


# -- 2. add_video without moviepy ------------------------------------------------------------

def test_add_video_without_moviepy_warns_once_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "moviepy", None)  # `import moviepy` now fails: not installed
    monkeypatch.setitem(sys.modules, "moviepy.editor", None)
    video = torch.rand(1, 4, 3, 8, 8)
    with savegame.SummaryWriter(tmp_path) as writer:
        with pytest.warns(UserWarning, match=r"pip install 'moviepy<2'") as caught:
            writer.add_video("v", video, 0)
            writer.add_video("v", video, 1)  # once per writer, not once per call
            writer.add_scalar("after", 1.0, 0)
        writer.flush()  # nothing went wrong on the log thread either
    assert len([w for w in caught if "moviepy" in str(w.message)]) == 1
    run = load_logdir(tmp_path)[ROOT]
    assert run["scalars"]["after"] == [(0, 1.0)]
    assert "v" not in run.get("images", {})  # nothing written for the skipped videos


def test_add_video_with_a_wrong_shape_still_raises_without_moviepy(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "moviepy", None)
    with savegame.SummaryWriter(tmp_path) as writer:
        with pytest.raises(ValueError, match="5-d"):
            writer.add_video("v", torch.rand(4, 3, 8, 8), 0)


# -- 3. a call after close() -------------------------------------------------------------------

@BOTH
def test_a_call_after_close_reopens_with_a_new_event_file(Writer, tmp_path):
    writer = Writer(str(tmp_path))
    writer.add_scalar("x", 1.0, 1)
    writer.close()
    first = event_files(tmp_path)
    writer.add_scalar("x", 2.0, 2)  # reopens, like torch's _get_file_writer
    writer.add_scalars("pair", {"a": 3.0}, 2)
    writer.close()
    files = event_files(tmp_path)
    assert len(first) == 1 and len(files) == 2 and first[0] in files
    assert sorted((p.step, p.value) for p in read_scalars(tmp_path)["x"]) == [(1, 1.0), (2, 2.0)]
    if Writer is savegame.SummaryWriter:  # torch's names can sort either way within one second
        assert files == [first[0], files[1]]
        assert [p.step for p in read_scalars(tmp_path)["x"]] == [1, 2]
    assert writer.file_writer is None
    writer.close()  # and a second close is still a no-op
    assert event_files(tmp_path) == files


def test_a_reopened_writer_keeps_its_hparams_and_embeddings(tmp_path):
    writer = savegame.SummaryWriter(tmp_path)
    writer.add_hparams({"lr": 0.1}, {"acc": 1.0})
    writer.add_embedding(np.eye(2), global_step=1)
    writer.close()
    writer.add_hparams({"lr": 0.2}, {"acc": 2.0})  # a second set: its own sub-run, as before close
    writer.add_embedding(np.eye(2), global_step=2)
    writer.close()
    with_hparams = [run for run, plugins in load_logdir(tmp_path).items() if "hparams" in plugins]
    assert len(with_hparams) == 2 and ROOT in with_hparams
    assert (tmp_path / "projector_config.pbtxt").read_text().count("embeddings {") == 2


def test_a_reopened_writer_is_closed_at_exit_too(tmp_path):
    from savegame.log import lifecycle

    writer = savegame.SummaryWriter(tmp_path)
    writer.close()
    assert writer not in lifecycle._live
    writer.add_scalar("x", 1.0, 1)
    assert writer in lifecycle._live
    writer.close()
    assert writer not in lifecycle._live and not writer._worker.alive


def test_a_runs_writer_stays_closed_after_the_run_finished(tmp_path):
    with savegame.Run(tmp_path, handle_signals=False) as run:
        run.log("loss", 1.0)
        writer = run.writer
    files = all_event_files(tmp_path)
    with pytest.raises(savegame.WriterClosedError, match="finished.*does not reopen"):
        writer.add_scalar("late", 1.0, 1)
    with pytest.raises(savegame.WriterClosedError, match="finished"):
        writer._get_file_writer()
    assert writer.file_writer is None
    assert all_event_files(tmp_path) == files


def test_the_writer_of_a_finished_run_that_never_logged_is_refused_the_same_way(tmp_path):
    with savegame.Run(tmp_path, handle_signals=False) as run:
        pass
    with pytest.raises(savegame.WriterClosedError, match="finished"):
        run.writer.add_scalar("late", 1.0, 1)
    assert all_event_files(tmp_path) == []


# -- 4. a writer that logged nothing ---------------------------------------------------------

@BOTH
def test_a_writer_that_logged_nothing_has_made_its_folder_and_event_file(Writer, tmp_path):
    folder = tmp_path / "run"
    writer = Writer(str(folder))
    try:
        [path] = event_files(folder)  # at once, before any flush or close
        assert [e.file_version for e in _events(path)] == ["brain.Event:2"]
    finally:
        writer.close()
    [path] = event_files(folder)
    assert [e.file_version for e in _events(path)] == ["brain.Event:2"]


def test_a_run_that_logged_nothing_resumes_with_clean_files(tmp_path):
    with savegame.Run(tmp_path, handle_signals=False) as run:
        run.writer  # made, nothing logged
        run.save()
    with savegame.Run(tmp_path, handle_signals=False) as run:
        run.log("loss", 1.0, step=1)
    assert [p.step for p in read_scalars(tmp_path)["loss"]] == [1]


# -- 5. a run folder removed under a running writer --------------------------------------------

def test_a_removed_run_folder_is_not_recreated_by_add_embedding(tmp_path):
    folder = tmp_path / "run"
    writer = savegame.SummaryWriter(folder)
    writer.add_scalar("x", 1.0, 1)
    gate = _hold_log_thread(writer)
    writer.add_embedding(torch.eye(3), metadata=["a", "b", "c"], label_img=torch.zeros(3, 3, 4, 4),
                         global_step=1)
    shutil.rmtree(folder)
    with pytest.warns(RuntimeWarning, match="no longer exists"):
        gate.set()
        with pytest.raises(savegame.LogWriteError, match="add_embedding.*no longer exists"):
            writer.flush()
        assert writer._worker.alive  # the log thread goes on
    writer.add_embedding(torch.eye(3), global_step=2)  # reported once: no error at every later call
    writer.add_scalars("pair", {"a": 1.0}, 2)
    writer.add_text("t", "more", 2)
    writer.close()
    assert not folder.exists()


def test_a_removed_run_folder_is_not_recreated_by_a_new_sub_run(tmp_path):
    folder = tmp_path / "run"
    writer = savegame.SummaryWriter(folder)
    gate = _hold_log_thread(writer)
    writer.add_scalars("pair", {"a": 1.0}, 1)  # its sub-run's file is made on the log thread
    writer.add_hparams({"lr": 0.1}, {"acc": 1.0}, run_name="trial")
    shutil.rmtree(folder)
    with pytest.warns(RuntimeWarning, match="no longer exists"):
        gate.set()
        with pytest.raises(savegame.LogWriteError, match="no longer exists"):
            writer.close()
    assert not folder.exists()


def test_a_removed_run_folder_is_reported_once_even_when_only_scalars_follow(tmp_path):
    folder = tmp_path / "run"
    writer = savegame.SummaryWriter(folder)
    writer.add_scalar("x", 1.0, 1)
    writer.flush()
    shutil.rmtree(folder)
    writer.add_scalar("x", 2.0, 2)  # into the open (now deleted) file: lost, and said so
    with pytest.warns(RuntimeWarning, match="no longer exists"):
        with pytest.raises(savegame.LogWriteError, match="no longer exists.*lost"):
            writer.flush()
    writer.add_scalar("x", 3.0, 3)
    writer.flush()  # once: the training loop is not stopped at every flush
    writer.close()
    assert not folder.exists()
