"""The ``savegame`` command line, run against real run folders written by ``savegame.Run``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import savegame
from savegame.cli import main

# val losses per epoch: epoch 1 is the best, so Keep(last=2, best=1) keeps epochs 1, 3 and 4
LOSSES = [0.5, 0.2, 0.3, 0.4, 0.45]


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # one table row per line (at 80 columns long paths fold)


def make_run(folder: Path, losses=LOSSES, *, preempt_after: int | None = None) -> dict[int, dict]:
    """Train a tiny model one step per epoch; returns the model weights by step."""
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    data = torch.utils.data.DataLoader(torch.randn(4, 3), batch_size=4)
    weights: dict[int, dict] = {}
    run = savegame.Run(folder, config={"lr": 0.1, "layers": [3, 2]},
                       keep=savegame.Keep(last=2, best=1, metric="loss/val"), handle_signals=False)
    with run:
        run.track(model=net, optimizer=opt)
        for epoch in run.epochs(len(losses)):
            for x in run.iterate(data):
                opt.zero_grad()
                net(x).pow(2).mean().backward()
                opt.step()
            run.save(metrics={"loss/val": losses[epoch], "acc/val": 1 - losses[epoch]})
            weights[run.step] = {k: v.clone() for k, v in net.state_dict().items()}
            if preempt_after is not None and epoch + 1 == preempt_after:
                run.finish("preempted", "stopped for the test")
                break
    return weights


@pytest.fixture
def run_dir(tmp_path) -> Path:
    folder = tmp_path / "runs" / "tiny"
    make_run(folder)
    return folder


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([*argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_ls_table_shows_status_progress_best_and_checkpoint_count(run_dir, capsys):
    code, out, _ = cli(capsys, "ls", str(run_dir.parent))
    assert code == 0
    row = next(line for line in out.splitlines() if str(run_dir) in line)
    assert "finished" in row and "4/5" in row and "loss/val=0.2" in row and " 3 " in row


def test_ls_json_lists_every_run_found_up_to_two_levels_below(tmp_path, capsys):
    make_run(tmp_path / "runs" / "a")
    make_run(tmp_path / "runs" / "sweep" / "trial-0", losses=[0.9, 0.8], preempt_after=1)
    code, out, _ = cli(capsys, "ls", "--json", str(tmp_path / "runs"))
    rows = {Path(r["run"]).name: r for r in json.loads(out)}
    assert code == 0 and set(rows) == {"a", "trial-0"}
    assert rows["a"]["status"] == "finished" and rows["a"]["checkpoints"] == 3
    assert rows["a"]["best"] == {"metric": "loss/val", "mode": "min", "value": 0.2, "step": 2,
                                 "checkpoint": "step-000002"}  # as run.json's best records it
    assert rows["trial-0"]["status"] == "preempted" and rows["trial-0"]["step"] == 1
    assert rows["a"]["size"] > 0 and rows["a"]["updated"] > 0


def test_ls_says_crashed_for_a_running_run_whose_process_is_gone(run_dir, capsys):
    info = json.loads((run_dir / "run.json").read_text())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    info.update(status="running", pid=dead.pid)
    (run_dir / "run.json").write_text(json.dumps(info))
    code, out, _ = cli(capsys, "ls", "--json", str(run_dir))
    assert json.loads(out)[0]["status"] == "crashed"


def test_ls_lists_a_run_whose_run_json_is_damaged_beside_the_others_and_says_why(tmp_path, capsys):
    make_run(tmp_path / "runs" / "a")
    make_run(tmp_path / "runs" / "b")
    (tmp_path / "runs" / "b" / "run.json").write_text('{"format": "savegame.run", "na')
    code, out, _ = cli(capsys, "ls", "--json", str(tmp_path / "runs"))
    rows = {Path(r["run"]).name: r for r in json.loads(out)}
    assert code == 0 and rows["a"]["status"] == "finished" and "problem" not in rows["a"]
    assert rows["b"]["status"] == "unreadable" and rows["b"]["checkpoints"] == 3
    assert "b/run.json is not valid JSON" in rows["b"]["problem"] and "resumes from them" in rows["b"]["problem"]
    code, out, _ = cli(capsys, "ls", str(tmp_path / "runs"))
    assert code == 0 and "unreadable" in out and "is not valid JSON" in out


def test_show_json_has_config_checkpoints_marks_and_resumes(run_dir, capsys):
    code, out, _ = cli(capsys, "show", "--json", str(run_dir))
    shown = json.loads(out)
    assert code == 0 and shown["config"] == {"lr": 0.1, "layers": [3, 2]}
    assert [c["step"] for c in shown["checkpoints"]] == [2, 4, 5]
    assert [c["name"] for c in shown["checkpoints"] if c["best"]] == ["step-000002"]
    assert [c["name"] for c in shown["checkpoints"] if c["newest"]] == ["step-000005"]
    assert shown["checkpoints"][0]["metrics"] == {"loss/val": 0.2, "acc/val": 0.8}
    assert shown["resumes"] == [] and shown["status"] == "finished"


def test_show_table_lists_checkpoints_and_resume_history(run_dir, capsys):
    make_run(run_dir, losses=LOSSES + [0.1])  # resumes after epoch 5 for one more epoch
    code, out, _ = cli(capsys, "show", str(run_dir))
    assert code == 0
    assert "step-000006" in out and "best" in out and "newest" in out and "step-000005" in out
    assert "resumed" in out and "never resumed" not in out


def test_verify_exits_0_when_every_hash_matches(run_dir, capsys):
    code, out, _ = cli(capsys, "verify", str(run_dir))
    assert code == 0 and "3 of 3 checkpoints intact" in out


def test_verify_exits_1_and_names_the_damaged_file_after_a_byte_flip(run_dir, capsys):
    tensors = run_dir / "checkpoints" / "step-000004" / "tensors.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF
    tensors.write_bytes(bytes(data))
    code, out, _ = cli(capsys, "verify", str(run_dir))
    assert code == 1 and "DAMAGED" in out and "tensors.safetensors" in out
    code, out, _ = cli(capsys, "verify", "--json", str(run_dir))
    report = json.loads(out)
    assert code == 1 and not report["ok"]
    assert [c["name"] for c in report["checkpoints"] if c["problems"]] == ["step-000004"]


def test_verify_takes_a_single_checkpoint_folder(run_dir, capsys):
    code, out, _ = cli(capsys, "verify", str(run_dir / "checkpoints" / "step-000002"))
    assert code == 0 and "1 of 1" in out


def test_verify_notes_unfinished_and_quarantined_folders(run_dir, capsys):
    (run_dir / "checkpoints" / "step-000009.tmp-123").mkdir()
    (run_dir / "checkpoints" / "step-000001.corrupt").mkdir()
    code, out, _ = cli(capsys, "verify", "--json", str(run_dir))
    notes = " ".join(json.loads(out)["notes"])
    assert code == 0 and "step-000009.tmp-123" in notes and "step-000001.corrupt" in notes


def test_export_best_writes_the_best_checkpoints_model_weights(run_dir, tmp_path, capsys):
    weights = make_run(tmp_path / "again")
    out_file = tmp_path / "best.safetensors"
    code, out, _ = cli(capsys, "export", str(tmp_path / "again"), "--best", "-o", str(out_file))
    assert code == 0 and "step-000002" in out
    exported = load_file(out_file)
    assert exported.keys() == weights[2].keys()
    for key, value in weights[2].items():
        torch.testing.assert_close(exported[key], value, rtol=0, atol=0)
    assert not torch.equal(exported["weight"], weights[5]["weight"])


@pytest.mark.parametrize(("which", "step"), [(["--latest"], 5), (["--step", "4"], 4)])
def test_export_latest_and_step_pick_that_checkpoint(tmp_path, capsys, which, step):
    weights = make_run(tmp_path / "run")
    out_file = tmp_path / "w.safetensors"
    code, _, _ = cli(capsys, "export", str(tmp_path / "run"), *which, "-o", str(out_file))
    assert code == 0
    torch.testing.assert_close(load_file(out_file)["weight"], weights[step]["weight"])


@pytest.mark.parametrize(("argv", "says"), [
    (["show", "{tmp}/missing"], "does not exist"),
    (["ls", "{tmp}/missing"], "does not exist"),
    (["verify", "{tmp}/plain"], "not a savegame run folder"),
    (["show", "{run}/checkpoints/step-000002"], "checkpoint folder"),
    (["export", "{run}", "--step", "3", "-o", "{tmp}/x.safetensors"], "no checkpoint at step 3"),
    (["export", "{empty}", "--latest", "-o", "{tmp}/x.safetensors"], "no committed checkpoints"),
])
def test_bad_input_exits_2_with_one_line_naming_the_path(run_dir, tmp_path, capsys, argv, says):
    (tmp_path / "plain").mkdir()
    empty = tmp_path / "empty"
    savegame.Run(empty, handle_signals=False).finish()
    names = {"tmp": tmp_path, "run": run_dir, "empty": empty}
    code, out, err = cli(capsys, *(a.format(**names) for a in argv))
    assert code == 2 and says in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and str(tmp_path) in err


def test_export_best_falls_back_to_the_save_policys_metric_when_run_json_has_no_best(tmp_path, capsys):
    net = torch.nn.Linear(1, 1)
    weights = {}
    with savegame.Run(tmp_path / "r", save=savegame.OnImprovement("acc", mode="max"),
                      keep=savegame.Keep(last=5), handle_signals=False) as run:
        run.track(model=net)
        for step, acc in enumerate([0.5, 0.9, 0.7]):
            with torch.no_grad():
                net.weight.fill_(step)
            run.step = step
            run.save(metrics={"acc": acc}, force=True)
            weights[step] = net.weight.clone()
    assert json.loads((tmp_path / "r" / "run.json").read_text())["best"] is None
    code, _, _ = cli(capsys, "export", str(tmp_path / "r"), "--best", "-o", str(tmp_path / "w.st"))
    assert code == 0 and torch.equal(load_file(tmp_path / "w.st")["weight"], weights[1])


def test_export_best_without_any_metric_says_to_use_latest_or_step(tmp_path, capsys):
    with savegame.Run(tmp_path / "r", handle_signals=False) as run:
        net = torch.nn.Linear(1, 1)
        run.track(model=net)
        run.save()
    code, _, err = cli(capsys, "export", str(tmp_path / "r"), "--best", "-o", str(tmp_path / "x"))
    assert code == 2 and "--latest" in err


def test_cli_runs_as_a_real_process(run_dir):
    env = {**os.environ, "COLUMNS": "250"}
    done = subprocess.run([sys.executable, "-m", "savegame.cli", "ls", str(run_dir.parent)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and str(run_dir) in done.stdout and "finished" in done.stdout
    done = subprocess.run([sys.executable, "-m", "savegame.cli", "show", str(run_dir / "nope")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "nope" in done.stderr


def test_every_command_has_help(capsys):
    for command in ("demo", "ls", "show", "verify", "export"):
        with pytest.raises(SystemExit) as exit:
            main([command, "--help"])
        assert exit.value.code == 0 and "usage: savegame " + command in capsys.readouterr().out
