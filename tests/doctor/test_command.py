"""`savegame doctor --plot` and `savegame report` from the command line."""

import json
import re

import numpy as np
from torch.utils.tensorboard import SummaryWriter as TorchWriter

from savegame.cli import main


def logdir(root, name, *, nan_at=None):
    with TorchWriter(str(root / name)) as w:
        for step in range(1, 301):
            train = 2 * np.exp(-step / 50) + 0.05
            w.add_scalar("loss/train", float("nan") if nan_at and step >= nan_at else train, step)
            if step % 10 == 0:
                w.add_scalar("loss/val", train + 0.1 + max(step - 120, 0) * 0.004, step)
        w.add_hparams({"lr": 0.1 if nan_at else 0.01}, {"hp/dummy": 0.0})


def test_doctor_plot_writes_one_png_and_json_stays_clean(tmp_path, capsys):
    logdir(tmp_path / "runs", "a")
    logdir(tmp_path / "runs", "b", nan_at=200)
    out = tmp_path / "curves.png"
    assert main(["doctor", str(tmp_path / "runs"), "--json", "--plot", str(out)]) == 0
    diagnoses = json.loads(capsys.readouterr().out)  # --json output stays parseable with --plot
    assert [d["verdict"] for d in diagnoses] == ["overfitting", "diverged"]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_report_writes_one_html_with_every_run_of_every_root(tmp_path, capsys):
    logdir(tmp_path / "exp1", "a")
    logdir(tmp_path / "exp2", "b", nan_at=200)
    out = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "exp1"), str(tmp_path / "exp2"), "-o", str(out)]) == 0
    text = out.read_text()
    assert "exp1/a" in text and "exp2/b" in text and "overfitting" in text and "diverged" in text
    assert "data:image/png;base64," in text and "http://" not in text and "https://" not in text
    assert f"report: {out}" in capsys.readouterr().out


def test_report_of_a_missing_folder_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "-o", str(tmp_path / "r.html")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_report_into_a_folder_is_a_clear_error_and_leaves_nothing_behind(tmp_path, capsys):
    logdir(tmp_path / "exp", "a")
    (tmp_path / "out").mkdir()
    assert main(["report", str(tmp_path / "exp"), "-o", str(tmp_path / "out")]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert list((tmp_path / "out").iterdir()) == [] and not list(tmp_path.glob("*.tmp"))


def test_doctor_on_a_run_folder_names_the_run_after_the_folder(tmp_path, capsys, monkeypatch):
    logdir(tmp_path / "runs", "demo")
    assert main(["doctor", str(tmp_path / "runs" / "demo"), "--json"]) == 0
    assert [d["run"] for d in json.loads(capsys.readouterr().out)] == ["demo"]
    monkeypatch.chdir(tmp_path / "runs" / "demo")
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["doctor", "."]) == 0
    out = capsys.readouterr().out
    assert "\ndemo " in out and "\n. " not in out and "\ndemo — overfitting" in out
    (tmp_path / "empty").mkdir()
    assert main(["doctor", str(tmp_path / "empty"), "--json"]) == 1
    assert [d["run"] for d in json.loads(capsys.readouterr().out)] == ["empty"]


def test_report_names_stay_unambiguous_across_roots_that_are_runs(tmp_path, capsys):
    logdir(tmp_path / "exp1", "a")
    logdir(tmp_path / "exp2", "demo")
    logdir(tmp_path / "other", "demo")
    out = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "exp1"), str(tmp_path / "exp2" / "demo"),
                 str(tmp_path / "other" / "demo"), "-o", str(out)]) == 0
    names = re.findall(r'<section id="run-\d+"><h2>([^<]*)</h2>', out.read_text())
    assert names == ["exp1/a", "exp2/demo", "other/demo"]
    assert main(["report", str(tmp_path / "exp2" / "demo"), "-o", str(out)]) == 0
    assert re.findall(r'<section id="run-\d+"><h2>([^<]*)</h2>', out.read_text()) == ["demo"]


REFUSE = """
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "matplotlib":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Refuse())
from savegame.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_report_and_plot_without_matplotlib_say_what_to_install(tmp_path):
    import subprocess
    import sys

    logdir(tmp_path / "exp", "a")
    for command, output in ((["report", str(tmp_path / "exp"), "-o"], tmp_path / "r.html"),
                            (["doctor", str(tmp_path / "exp"), "--plot"], tmp_path / "p.png")):
        done = subprocess.run([sys.executable, "-c", REFUSE, *command, str(output)], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "Traceback" not in done.stderr and "pip install matplotlib" in done.stderr, done.stderr
        assert done.stderr.startswith(f"savegame {command[0]}: error:") and not output.exists()
