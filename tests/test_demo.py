"""``savegame demo``: trains, saves, reports, and resumes after Ctrl-C; its loop uses only the
public API."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("sklearn", reason="the demo needs scikit-learn: pip install 'savegame[demo]'")

import savegame  # noqa: E402
from savegame import demo  # noqa: E402
from savegame.checkpoint.store import list_checkpoints  # noqa: E402
from savegame.examples import digits  # noqa: E402


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")


def status(folder: Path) -> str:
    return json.loads((folder / "run.json").read_text())["status"]


def test_demo_trains_to_over_90_percent_and_leaves_a_finished_run(tmp_path, capsys):
    folder = tmp_path / "runs" / "digits"
    assert demo.main(["--epochs", "2", "--dir", str(folder)]) == 0
    out = capsys.readouterr().out
    accuracy = float(re.search(r"validation accuracy ([\d.]+)%", out).group(1))
    assert accuracy > 90
    assert "preflight: passed" in out and "overfit one batch" in out  # the report, shown first
    assert "the doctor's diagnosis" in out and (folder / "report.html").is_file()  # and the doctor, last
    assert (folder / "preflight.json").is_file()
    assert status(folder) == "finished" and [c.epoch for c in list_checkpoints(folder / "checkpoints")] == [0, 1]
    for hint in (f"savegame show {folder}", f"savegame verify {folder}", "--best -o digits.safetensors",
                 f"savegame board {folder.parent}"):
        assert hint in out
    assert_demo_logged_everything(folder)


def assert_demo_logged_everything(folder: Path) -> None:
    """What the issue asks the demo to log, read back with tensorboard's own loader."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea

    legacy = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0})
    legacy.Reload()
    tags = legacy.Tags()
    assert {"loss/train", "acc/train", "loss/val", "acc/val", "lr", "loss/train/epoch_mean"} <= set(tags["scalars"])
    assert [e.step for e in legacy.Scalars("loss/val")] == [45, 90]
    assert {"data/train_batch", "preflight/first_batch"} <= set(tags["images"]) and tags["graph"]
    assert any(t.startswith("weights/") for t in tags["histograms"])
    plugins = pea.EventAccumulator(str(folder))
    plugins.Reload()
    by_plugin = {plugins.SummaryMetadata(t).plugin_data.plugin_name for t in plugins.Tags()["tensors"]}
    assert {"pr_curves", "hparams"} <= by_plugin
    assert "val_features" in (folder / "projector_config.pbtxt").read_text()


def test_rerunning_a_finished_demo_shows_the_summary_and_fresh_starts_over(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(digits.CONFIG, "width", 8)  # speed: the model's size does not matter here
    folder = tmp_path / "digits"
    demo.main(["--epochs", "1", "--dir", str(folder)])
    capsys.readouterr()
    assert demo.main(["--epochs", "1", "--dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "already finished" in out and "--fresh" in out and "step-000045" in out
    assert demo.main(["--epochs", "1", "--dir", str(folder), "--fresh"]) == 0
    out = capsys.readouterr().out
    assert "already finished" not in out and "resumed" not in out and status(folder) == "finished"


def test_fresh_refuses_to_delete_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert demo.main(["--dir", str(tmp_path), "--fresh"]) == 2
    assert "not one" in capsys.readouterr().err and (tmp_path / "precious.txt").exists()


def test_demo_without_scikit_learn_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    assert demo.main(["--epochs", "1", "--dir", str(tmp_path / "d")]) == 2
    assert "pip install 'savegame[demo]'" in capsys.readouterr().err


def test_ctrl_c_saves_and_exits_0_then_the_same_command_resumes_and_finishes(tmp_path):
    folder = tmp_path / "digits"
    command = [sys.executable, "-m", "savegame.demo", "--epochs", "3", "--dir", str(folder)]
    env = {**os.environ, "COLUMNS": "200"}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not list_checkpoints(folder / "checkpoints"):
            assert first.poll() is None, first.stdout.read()
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.2)
        first.send_signal(signal.SIGINT)
        out, _ = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 0, out
    assert status(folder) == "preempted" and "run the same command again" in out
    stopped_at = list_checkpoints(folder / "checkpoints")[-1].step

    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"savegame: resumed {folder} from step {stopped_at} (" in second.stderr  # the library's one line
    assert "epoch   1/3" not in second.stdout  # the first epoch is not trained again
    assert status(folder) == "finished"
    info = json.loads((folder / "run.json").read_text())
    assert [r["from_step"] for r in info["resumes"]] == [stopped_at]


# A module finder that refuses some packages, as if they were not installed: the check must hold
# for a real import in a fresh interpreter (not only for sys.modules tricks in this one).
REFUSE = """
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Refuse())
from savegame.cli import main
sys.exit(main({argv!r}))
"""


@pytest.mark.parametrize("missing, named", [("sklearn", "scikit-learn"), ("matplotlib", "matplotlib"),
                                            ("PIL", "Pillow")])
def test_a_missing_package_stops_the_demo_before_training_and_names_the_extra(tmp_path, missing, named):
    folder = tmp_path / "runs" / "demo"
    code = REFUSE.format(blocked={missing}, argv=["demo", "--epochs", "1", "--dir", str(folder)])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "pip install 'savegame[demo]'" in done.stderr
    assert named in done.stderr and done.stderr.startswith("savegame demo: error:")
    assert not folder.exists() and "epoch" not in done.stdout  # nothing trained, nothing written


def test_a_missing_package_does_not_cost_a_fresh_run_its_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(digits.CONFIG, "width", 8)
    folder = tmp_path / "digits"
    assert demo.main(["--epochs", "1", "--dir", str(folder)]) == 0
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes the import fail
    assert demo.main(["--epochs", "1", "--dir", str(folder), "--fresh"]) == 2
    assert "pip install 'savegame[demo]'" in capsys.readouterr().err
    assert (folder / "run.json").is_file()  # --fresh deleted nothing: it could not have trained anyway


def test_the_demo_loop_uses_only_the_public_api():
    """What a user's script can write: ``import savegame`` and the names of ``savegame.__all__``."""
    tree = ast.parse(Path(digits.__file__).read_text())
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and not node.module.startswith("savegame"), ast.unparse(node)
        elif isinstance(node, ast.Import):
            assert all(a.name == "savegame" or not a.name.startswith("savegame") for a in node.names), \
                ast.unparse(node)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "savegame":
            used.add(node.attr)
    assert used and used <= set(savegame.__all__), used - set(savegame.__all__)
