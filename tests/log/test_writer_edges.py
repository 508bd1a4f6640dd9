"""Edge cases found in review: failures isolated to their item, explicit wall times, repeated
hparams, forked children, plain-number histograms."""

import os

import numpy as np
import pytest

import savegame
from tb_read import read_scalars
from readback import load_logdir


def test_a_sub_run_the_os_refuses_is_reported_and_the_other_values_are_written(tmp_path):
    writer = savegame.SummaryWriter(tmp_path)
    writer.add_scalars("m", {"x" * 300: 1.0}, 1)  # a folder name longer than the OS allows
    for step in range(10):
        writer.add_scalar("loss", float(step), step)
    with pytest.warns(RuntimeWarning, match="they are lost"):  # at once, on stderr
        with pytest.raises(savegame.LogWriteError, match="m_xxxx.*they are lost"):
            writer.flush()
    writer.close()
    assert [p.step for p in read_scalars(tmp_path)["loss"]] == list(range(10))


def test_a_wall_time_that_is_not_a_number_is_refused_at_the_call(tmp_path):
    with savegame.SummaryWriter(tmp_path) as writer:
        with pytest.raises(TypeError, match="walltime must be seconds since the epoch"):
            writer.add_scalar("loss", 1.0, 1, walltime="yesterday")
        writer.add_scalar("loss", 2.0, 2)
    assert [p.value for p in read_scalars(tmp_path)["loss"]] == [2.0]


def test_explicit_wall_times_at_one_step_are_kept_apart(tmp_path):
    with savegame.SummaryWriter(tmp_path) as writer:
        for wall in (10.0, 20.0, 30.0):
            writer.add_scalar("x", wall, 5, walltime=wall)
        writer.add_scalar("a", 1.0, 6, walltime=40.0)
        writer.add_scalar("b", 2.0, 6, walltime=40.0)  # same step, same time: one record
    curves = read_scalars(tmp_path)
    assert [p.wall_time for p in curves["x"]] == [10.0, 20.0, 30.0]
    assert curves["a"][0].wall_time == curves["b"][0].wall_time == 40.0


def test_a_write_error_on_the_log_thread_is_reported_not_swallowed(tmp_path):
    writer = savegame.SummaryWriter(tmp_path)
    writer.add_scalar("loss", 1.0, 1)
    writer.flush()
    with pytest.warns(RuntimeWarning, match="closed file"):
        writer._worker._files[""]._file.close()  # what a vanished disk looks like to the thread
        writer.add_scalar("loss", 2.0, 2)
        with pytest.raises(savegame.LogWriteError, match="failed"):
            writer.flush()
        assert writer._worker.alive
        with pytest.raises(savegame.LogWriteError, match="failed"):
            writer.close()  # the file is still unwritable; reported again, and the thread ends
    assert not writer._worker.alive


def test_a_second_add_hparams_becomes_its_own_sub_run_as_in_torch(tmp_path):
    with savegame.SummaryWriter(tmp_path) as writer:
        for i in range(3):
            writer.add_hparams({"lr": 0.1 * i, "bsize": i}, {"hp/acc": 10.0 * i})
    runs = load_logdir(tmp_path)
    with_hparams = sorted(run for run, plugins in runs.items() if "hparams" in plugins)
    assert len(with_hparams) == 3 and "." in with_hparams  # the first call: this run itself


def test_a_histogram_of_a_plain_number_works_as_in_torch(tmp_path):
    with savegame.SummaryWriter(tmp_path) as writer:
        writer.add_histogram("h", 5.0, 1)
        with pytest.raises(ValueError, match="got no values"):
            writer.add_histogram("empty", np.array([]), 1)
    assert "h" in load_logdir(tmp_path)["."]["histograms"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_neither_writes_nor_hangs(tmp_path):
    writer = savegame.SummaryWriter(tmp_path)
    writer.add_scalar("parent", 1.0, 1)
    writer.flush()
    pid = os.fork()
    if pid == 0:  # the child: its copy of the writer is silent, flush and exit return at once
        try:
            writer.add_scalar("child", 2.0, 2)
            writer.flush()
            writer.close()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    writer.add_scalar("parent", 3.0, 3)
    writer.close()
    curves = read_scalars(tmp_path)
    assert [p.step for p in curves["parent"]] == [1, 3] and "child" not in curves


def test_code_reaching_for_torchs_file_writer_still_works(tmp_path):
    from tensorboard.compat.proto.summary_pb2 import Summary

    with savegame.SummaryWriter(tmp_path) as writer:
        writer.file_writer.add_summary(Summary(value=[Summary.Value(tag="own", simple_value=3.0)]), 7)
        assert writer._get_file_writer().get_logdir() == str(tmp_path)
    assert [(p.step, p.value) for p in read_scalars(tmp_path)["own"]] == [(7, 3.0)]


def test_add_onnx_graph_without_onnx_says_what_to_install(tmp_path):
    pytest.importorskip("tensorboard")
    try:
        import onnx  # noqa: F401
        pytest.skip("onnx is installed")
    except ImportError:
        pass
    with savegame.SummaryWriter(tmp_path) as writer:
        with pytest.raises(ImportError, match="pip install onnx"):
            writer.add_onnx_graph("model.onnx")
