"""``savegame board`` and the real TensorBoard it starts, on logs written by torch's SummaryWriter.

Every server here is real (``python -m tensorboard.main``), on a free 127.0.0.1 port, and is
stopped in a ``finally`` or a fixture's teardown. The logs are torch's own, so these tests pin
what TensorBoard answers for a known-good writer; ``test_server.py`` holds savegame's writer to
the same answers.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from savegame.cli import main
from savegame.log.board import KEEP_ALL, PLUGINS, start_board, tensorboard_command
from tbserver import LOADERS, children, free_port, gone, request_json, tensorboard

pytest.importorskip("tensorboard")

STEPS = 1500  # more than the 1000 points TensorBoard keeps of a scalar series by default
HPARAMS = {"lr": 0.1, "opt": "sgd", "bs": 32}
RUNS = ("a", "b")


def loss(run: str, step: int) -> float:
    """Exactly representable in float32, so TensorBoard gives back the very same number."""
    return (step % 97) / 8.0 + (10.0 if run == "b" else 0.0)


def write_torch_logs(root: Path) -> Path:
    """Two runs of scalars and one ``add_hparams`` each, all by torch's SummaryWriter."""
    from torch.utils.tensorboard import SummaryWriter

    for run in RUNS:
        with SummaryWriter(str(root / run)) as writer:
            for step in range(STEPS):
                writer.add_scalar("loss/train", loss(run, step), step)
            writer.add_scalar("acc/val", 0.5 if run == "a" else 0.75, STEPS - 1)
            # torch writes the session into a sub-run "<run>/hp" with its own copy of the metric
            writer.add_hparams(HPARAMS, {"hp/acc": 0.5 if run == "a" else 0.75}, run_name="hp")
    return root


@pytest.fixture(scope="module")
def torch_logs(tmp_path_factory) -> Path:
    return write_torch_logs(tmp_path_factory.mktemp("torch_logs"))


# --------------------------------------------------------------------------------------------
# The command line, as a real process
# --------------------------------------------------------------------------------------------

def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def _wait_line(lines: queue.Queue, pattern: str, timeout: float, seen: list[str]) -> re.Match:
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"no line matching {pattern!r} within {timeout:.0f} s; got {seen}")
        if line is None:
            pytest.fail(f"the output ended before a line matching {pattern!r}; got {seen}")
        seen.append(line)
        if found := re.search(pattern, line):
            return found


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_board_serves_until_signal(torch_logs, signum):
    port = free_port()
    proc = subprocess.Popen(
        # faulthandler: if it ever hangs, SIGABRT below dumps every thread's stack into the failure
        [sys.executable, "-X", "faulthandler", "-m", "savegame.cli", "board", str(torch_logs), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, out), daemon=True).start()
    seen: list[str] = []
    tb_pid = None
    try:
        found = _wait_line(out, r"(http://\S+/) \(pid (\d+)\)", 60, seen)
        url, tb_pid = found.group(1), int(found.group(2))
        assert url == f"http://127.0.0.1:{port}/"
        assert tb_pid in children(proc.pid), "the pid printed is the CLI's tensorboard child"
        assert isinstance(request_json(url + "data/runs"), list)  # it answers right away
        deadline = time.monotonic() + 30
        while sorted(request_json(url + "data/runs")) != ["a", "a/hp", "b", "b/hp"]:
            assert time.monotonic() < deadline, request_json(url + "data/runs")
            time.sleep(0.2)
        helpers = children(tb_pid)  # the Rust data server, where the fast loader runs

        proc.send_signal(signum)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            proc.wait(10)
            pytest.fail(f"the CLI did not exit within 30 s of {signum.name}; its stacks and stderr:\n"
                        f"{proc.stderr.read()}\nits stdout: {seen}")
        assert code == 0, proc.stderr.read()
        _wait_line(out, r"TensorBoard stopped", 5, seen)
        assert gone(tb_pid), "the CLI stopped and reaped its tensorboard child"
        deadline = time.monotonic() + 10
        while not all(gone(pid) for pid in helpers):
            assert time.monotonic() < deadline, f"data server {helpers} still runs"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if tb_pid is not None and not gone(tb_pid):
            os.kill(tb_pid, signal.SIGKILL)


def test_cli_board_missing_folder_is_one_line_exit_2(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["board", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("savegame board: error: ")
    assert str(missing) in err and "does not exist" in err

    afile = tmp_path / "events.txt"
    afile.write_text("x")
    assert main(["board", str(tmp_path), str(afile)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(afile) in err and "not a folder" in err


def test_cli_board_port_in_use_shows_tensorboards_error(torch_logs, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["board", str(torch_logs), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # TensorBoard's output first, then savegame's one line
    assert last.startswith("savegame board: error: TensorBoard exited before it served")
    assert f"could not bind to port {port}" in last


def test_cli_board_bad_port(tmp_path, capsys):
    assert main(["board", str(tmp_path), "--port", "70000"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_command_keeps_every_sample_of_every_plugin():
    cmd = tensorboard_command(["--logdir", "r"])
    flag = cmd[cmd.index("--samples_per_plugin") + 1]
    hints = dict(pair.split("=") for pair in flag.split(","))
    assert set(hints) == set(PLUGINS) >= {"scalars", "images", "audio", "histograms", "text",
                                          "pr_curves", "mesh", "hparams", "distributions"}
    # not 0: the plugins read with the same number as their downsample, and 0 returns nothing
    assert all(int(n) == KEEP_ALL > 10**6 for n in hints.values())


# --------------------------------------------------------------------------------------------
# torch's logs through both loaders
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=list(LOADERS.values()), ids=list(LOADERS))
def torch_board(request, torch_logs):
    with tensorboard(torch_logs, load_fast=request.param) as server:
        yield server


def test_torch_runs_and_plugins(torch_board):
    runs = torch_board.wait_for(
        lambda: (r := torch_board.runs()) and len(r) == 4 and r, "4 runs")
    assert sorted(runs) == ["a", "a/hp", "b", "b/hp"]
    listing = torch_board.plugins_listing()
    assert listing["scalars"]["enabled"] and listing["hparams"]["enabled"]


def test_torch_scalars_exact_through_each_loader(torch_board):
    for run in RUNS:
        points = torch_board.wait_scalars(run, "loss/train", STEPS)
        steps = [step for _, step, _ in points]
        assert steps == list(range(STEPS)), "every step, once, in order: nothing sampled away"
        assert [value for _, _, value in points] == [loss(run, s) for s in range(STEPS)]
    tags = torch_board.scalar_tags()
    assert set(tags["a"]) == {"loss/train", "acc/val"}
    assert set(tags["a/hp"]) == {"hp/acc"}


def test_torch_hparams_session_groups(torch_board):
    groups = torch_board.wait_session_groups(2)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"a/hp", "b/hp"}  # torch's session is a sub-run, not the curves' run
    for run, acc in (("a", 0.5), ("b", 0.75)):
        group = by_name[f"{run}/hp"]
        assert group["hparams"] == {"lr": 0.1, "opt": "sgd", "bs": 32.0}
        assert [s["name"] for s in group["sessions"]] == [f"{run}/hp"]
        assert group["sessions"][0]["status"] == "STATUS_SUCCESS"
        metrics = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        assert metrics == {"hp/acc": acc}
    experiment = torch_board.experiment()
    assert {h["name"] for h in experiment["hparamInfos"]} == {"lr", "opt", "bs"}
    assert [m["name"] for m in experiment["metricInfos"]] == [{"tag": "hp/acc", "group": ""}]


@pytest.mark.parametrize("load_fast", list(LOADERS.values()), ids=list(LOADERS))
def test_several_folders_are_named_runs(torch_logs, load_fast):
    """Several folders: runs are named after the folders, with either loader."""
    with start_board([torch_logs / "a", torch_logs / "b"], load_fast=load_fast,
                     reload_interval=1) as board:
        links = board.links
        assert links is not None and sorted(p.name for p in links.iterdir()) == ["a", "b"]
        runs = _wait_runs(board.url, 4)
        assert sorted(runs) == ["a", "a/hp", "b", "b/hp"]
        points = request_json(board.url + "data/plugin/scalars/scalars?run=b&tag=loss%2Ftrain")
        assert [v for _, _, v in points] == [loss("b", s) for s in range(STEPS)]
    assert gone(board.pid) and not links.exists(), "stop() removes the links, not the logs"
    assert (torch_logs / "a").is_dir() and any((torch_logs / "a").iterdir())


def test_one_run_folder_is_named_after_it(torch_logs):
    """A folder that is itself a run is served as run "a", not TensorBoard's "."."""
    with start_board(torch_logs / "a", reload_interval=1) as board:
        assert sorted(_wait_runs(board.url, 2)) == ["a", "a/hp"]
    assert gone(board.pid)


def test_folder_of_runs_is_served_as_is(torch_logs):
    """A folder of runs goes to --logdir unchanged: no links, runs named as below it."""
    with start_board(torch_logs, load_fast="false", reload_interval=1) as board:
        assert board.links is None and "--logdir" in board.command
        assert str(torch_logs) in board.command
        assert sorted(_wait_runs(board.url, 4)) == ["a", "a/hp", "b", "b/hp"]


def _wait_runs(url: str, count: int, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(runs := request_json(url + "data/runs")) < count:
        assert time.monotonic() < deadline, runs
        time.sleep(0.2)
    return runs
