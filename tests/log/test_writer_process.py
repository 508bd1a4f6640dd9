"""The writer in real processes: SIGTERM, normal exit, SIGKILL, torch.distributed ranks."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

import savegame
from tb_read import read_scalars

LOG_1000 = """
import sys, time
from savegame import SummaryWriter
writer = SummaryWriter(sys.argv[1], flush_secs=120)
for step in range(1000):
    writer.add_scalar("loss", step / 1000, step)
print("logged", flush=True)
{after}
"""


def start(script, log_dir, env=None):
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), str(log_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def steps(log_dir, tag="loss"):
    return [p.step for p in read_scalars(log_dir).get(tag, [])]


def test_sigterm_flushes_everything_logged_then_terminates_as_before(tmp_path):
    process = start(LOG_1000.format(after="time.sleep(60)"), tmp_path)
    assert process.stdout.readline().strip() == "logged"
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == -signal.SIGTERM  # still dies of SIGTERM, as without the writer
    assert steps(tmp_path) == list(range(1000))


def test_a_script_that_never_closes_its_writer_still_writes_everything_at_exit(tmp_path):
    process = start(LOG_1000.format(after=""), tmp_path)
    assert process.wait(60) == 0, process.stderr.read()
    assert steps(tmp_path) == list(range(1000))


def test_sigkill_loses_at_most_the_last_fraction_of_a_second(tmp_path):
    process = start(LOG_1000.format(after="time.sleep(60)"), tmp_path)
    assert process.stdout.readline().strip() == "logged"
    time.sleep(1.0)  # more than the log thread's wake-up interval, far less than flush_secs=120
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert steps(tmp_path) == list(range(1000))


def test_a_worker_rank_writes_nothing_and_its_calls_return(tmp_path):
    process = start(LOG_1000.format(after="writer.add_image('x', __import__('torch').zeros(3, 4, 4), 1)"),
                    tmp_path, env={"RANK": "1"})
    assert process.wait(60) == 0, process.stderr.read()
    assert not any("tfevents" in p.name for p in tmp_path.rglob("*"))


def _ddp_worker(rank, world, log_dir, port):
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.environ.pop("RANK", None)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        with savegame.SummaryWriter(log_dir) as writer:
            writer.add_scalar("rank", float(rank), 1)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_under_torch_distributed_only_rank_zero_writes(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path), port), nprocs=2, join=True)
    assert [(p.step, p.value) for p in read_scalars(tmp_path)["rank"]] == [(1, 0.0)]
    assert len([p for p in tmp_path.iterdir() if "tfevents" in p.name]) == 1


def test_a_summary_that_fails_on_the_log_thread_is_reported_and_the_rest_is_written(tmp_path):
    writer = savegame.SummaryWriter(tmp_path)
    writer.add_scalar("before", 1.0, 1)
    writer.add_histogram("h", np.ones(10), 1, bins="no-such-rule")  # numpy refuses it, on the thread
    with pytest.warns(RuntimeWarning, match="no-such-rule"):  # at once, on stderr
        with pytest.raises(savegame.LogWriteError, match=r"add_histogram\('h'\)"):
            writer.flush()
    writer.add_scalar("after", 2.0, 2)
    writer.close()
    curves = read_scalars(tmp_path)
    assert [p.value for p in curves["before"]] == [1.0] and [p.value for p in curves["after"]] == [2.0]


def test_a_tensor_logged_then_changed_in_place_is_logged_as_it_was(tmp_path):
    weights = torch.zeros(1000)
    with savegame.SummaryWriter(tmp_path) as writer:
        writer.add_histogram("w", weights, 1)
        weights += 100  # the optimizer step right after logging
    from tensorboard.backend.event_processing import event_accumulator as ea
    acc = ea.EventAccumulator(str(tmp_path), size_guidance={ea.HISTOGRAMS: 0})
    acc.Reload()
    histogram = acc.Histograms("w")[0].histogram_value
    assert (histogram.min, histogram.max, histogram.num) == (0.0, 0.0, 1000)
