"""The tables ``savegame`` prints fold long cells onto more lines instead of cutting them: at 80
columns in a terminal, without one (piped, CI), and in the doctor's table; ``--json`` stays whole."""

from __future__ import annotations

import functools
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import savegame
import torch
from rich.console import Console
from test_cli import cli
from torch.utils.tensorboard import SummaryWriter

from savegame import cli as cli_module
from savegame.doctor.command import diagnose_path, table

# rich markup would eat "[ema]"; rich's default overflow would cut the names to "loss/valid…"
LOSS = "loss/validation_cross_entropy_with_label_smoothing[ema]"
ACC = "accuracy/validation_top1_of_the_held_out_split"
RUN = "a-sweep-trial-with-a-rather-long-name-lr0.001-bs128-seed42"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def appears(out: str, text: str) -> bool:
    """Whether every character of ``text`` is in ``out``, in order: on one line, or folded down
    consecutive lines (a table cell too narrow for it), each line holding the next piece."""
    lines = out.splitlines()
    for start in range(len(lines)):
        rest = text
        for line in lines[start:]:
            piece = max((k for k in range(1, len(rest) + 1) if rest[:k] in line), default=0)
            if piece == 0:
                break
            rest = rest[piece:]
            if not rest:
                return True
    return False


@pytest.fixture(autouse=True)
def narrow(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tables") / "runs" / RUN
    net = torch.nn.Linear(2, 1)
    with savegame.Run(folder, keep=savegame.Keep(last=3, best=1, metric=LOSS), handle_signals=False,
                      config={"augmentation_pipeline_name": "random_resized_crop[224]+horizontal_flip"}) as run:
        run.track(model=net)
        for epoch in run.epochs(3):
            run.step += 1
            run.save(metrics={LOSS: 0.5 - epoch / 10, ACC: 0.5 + epoch / 10, "epoch/seconds": 12.3})
    return folder


def tty(monkeypatch) -> None:
    """main()'s console as in an 80-column terminal (colors, cursor codes)."""
    monkeypatch.setattr(cli_module, "Console", functools.partial(Console, force_terminal=True, width=80))


def test_appears_sees_folded_cells_and_not_cut_ones():
    assert appears(" ab  x\n cd  y\n e   z\n", "abcde")
    assert not appears(" ab  x\n c…  y\n", "abcde")


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "tty"])
def test_ls_at_80_columns_folds_the_run_path_and_the_best_metric(run_dir, capsys, monkeypatch, terminal):
    if terminal:
        tty(monkeypatch)
    [row] = json.loads(cli(capsys, "ls", "--json", str(run_dir.parent))[1])
    code, out, _ = cli(capsys, "ls", str(run_dir.parent))
    out = ANSI.sub("", out)
    assert code == 0 and "…" not in out and max(map(len, out.splitlines())) <= 80
    for text in (str(run_dir), "finished", "epoch/step", f"{row['epoch']}/{row['step']}", f"{LOSS}=0.3000",
                 "updated"):
        assert appears(out, text), text


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "tty"])
def test_show_at_80_columns_folds_long_metric_names_and_keeps_short_cells_whole(run_dir, capsys,
                                                                               monkeypatch, terminal):
    if terminal:
        tty(monkeypatch)
    code, out, _ = cli(capsys, "show", str(run_dir))
    out = ANSI.sub("", out)
    assert code == 0 and "…" not in out and max(map(len, out.splitlines())) <= 80
    for text in (LOSS, ACC, "epoch/seconds", "augmentation_pipeline_name",
                 '"random_resized_crop[224]+horizontal_flip"', "best:", f"{LOSS}=0.3000 @ step 3"):
        assert appears(out, text), text
    rows = [line for line in out.splitlines() if line.lstrip().startswith("step-")]
    assert len(rows) == 3 and all(re.search(r"step-00000\d\s+\d\s+\d\s+0\.\d000", r) for r in rows), rows


def test_show_on_a_very_narrow_console_folds_every_column_and_loses_nothing(run_dir, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "50")
    code, out, _ = cli(capsys, "show", str(run_dir))
    assert code == 0 and "…" not in out and max(map(len, out.splitlines())) <= 50
    for text in (LOSS, ACC, "step-000001", "step-000003", "0.3000", "0.7000", "newest"):
        assert appears(out, text), text


def test_verify_prints_each_checkpoint_path_whole_on_its_line(run_dir, capsys):
    code, out, _ = cli(capsys, "verify", str(run_dir))
    assert code == 0
    for step in (1, 2, 3):
        assert f"ok      {run_dir / 'checkpoints' / f'step-00000{step}'}\n" in out


def test_json_keeps_every_long_name_whole(run_dir, capsys):
    code, out, _ = cli(capsys, "show", "--json", str(run_dir))
    shown = json.loads(out)
    assert code == 0 and shown["best"]["metric"] == LOSS
    assert set(shown["checkpoints"][0]["metrics"]) == {LOSS, ACC, "epoch/seconds"}
    code, out, _ = cli(capsys, "ls", "--json", str(run_dir))
    assert json.loads(out)[0]["run"] == str(run_dir) and json.loads(out)[0]["best"]["metric"] == LOSS


@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("logs")
    with SummaryWriter(str(root / RUN)) as w:
        for step in range(1, 101):
            w.add_scalar("throughput/samples_per_second_on_all_devices_combined", 1.0, step)
    return root


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "tty"])
def test_doctor_table_at_80_columns_folds_long_run_names_and_tags(logdir, capsys, monkeypatch, terminal):
    if terminal:
        tty(monkeypatch)
    code, out, _ = cli(capsys, "doctor", str(logdir), "--val-tag", LOSS)
    out = ANSI.sub("", out)
    assert code == 1 and "…" not in out and max(map(len, out.splitlines())) <= 80
    for text in (RUN, "cannot judge", f"'{LOSS}'", "throughput/samples_per_second_on_all_devices_combined"):
        assert appears(out, text), text
    code, out, _ = cli(capsys, "doctor", str(logdir), "--val-tag", LOSS, "--json")
    assert f"'{LOSS}'" in json.loads(out)[0]["cannot_judge"]


def test_doctor_table_keeps_a_bracketed_title_and_verdict_at_40_columns(logdir):
    _, diagnoses = diagnose_path(logdir, val_tag=LOSS)
    console = Console(width=40, record=True, file=io.StringIO())
    console.print(table(diagnoses, title=f"savegame doctor {logdir}[1]"))
    out = console.export_text()
    assert "…" not in out and appears(out, f"{logdir}[1]") and appears(out, "cannot judge")


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) for a real terminal")
def test_show_in_a_real_80_column_terminal(run_dir, tmp_path):
    command = f"{sys.executable} -m savegame.cli show {run_dir}"
    done = subprocess.run(["script", "-q", "-e", "-c", command, os.devnull], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "80", "TERM": "xterm"}, timeout=120)
    out = ANSI.sub("", done.stdout).replace("\r", "")
    assert done.returncode == 0 and "…" not in out and max(map(len, out.splitlines())) <= 80
    assert appears(out, LOSS) and appears(out, ACC) and appears(out, str(run_dir))
