"""Acceptance: the live doctor stops a deliberately diverging demo run and keeps its best
checkpoint; a normal demo ends with the diagnosis and the HTML report's path."""

import json
import math
import re

import pytest

pytest.importorskip("sklearn", reason="the demo needs scikit-learn: pip install 'savegame[demo]'")

from savegame import demo  # noqa: E402
from savegame.checkpoint.store import list_checkpoints  # noqa: E402
from savegame.doctor import DoctorWarning  # noqa: E402


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")


def test_the_doctor_stops_a_diverging_demo_and_keeps_its_best_checkpoint(tmp_path, capsys):
    folder = tmp_path / "runs" / "broken"
    with pytest.warns(DoctorWarning) as caught:
        assert demo.main(["--epochs", "8", "--break-at", "3", "--dir", str(folder)]) == 0
    assert any("diverged" in str(w.message) for w in caught)
    out = capsys.readouterr().out
    assert "stopped early: the doctor stopped the run" in out and "diverged" in out
    info = json.loads((folder / "run.json").read_text())
    assert info["status"] == "stopped" and "diverged" in info["message"]
    steps_per_epoch = 45
    checkpoints = {c.step: c for c in list_checkpoints(folder / "checkpoints")}
    stop_step = max(checkpoints)
    assert stop_step < 8 * steps_per_epoch  # it did not train all 8 epochs
    best = info["best"]
    assert best["step"] <= 2 * steps_per_epoch and best["step"] in checkpoints  # from before the break
    assert math.isfinite(best["value"]) and best["value"] < 0.5
    assert checkpoints[best["step"]].metrics["acc/val"] > 0.8
    doctor = json.loads((folder / "doctor.json").read_text())
    assert doctor["latest"]["verdict"] == "diverged"
    assert (folder / "report.html").is_file() and f"report: {folder / 'report.html'}" in out
    assert re.search(r"demo|broken", out) and "the doctor's diagnosis" in out


def test_break_at_the_first_epoch_is_refused_with_the_reason(tmp_path, capsys):
    assert demo.main(["--break-at", "1", "--dir", str(tmp_path / "d")]) == 2
    assert "--break-at must be an epoch number from 2" in capsys.readouterr().err
