"""``savegame demo --sweep`` (issue 13): the demo's sweep on the digits, with 2 workers, well
under 3 minutes on 2 cores; run again, it has nothing left to do."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("optuna")
pytest.importorskip("sklearn")


def test_the_demo_sweep_runs_its_trials_and_shows_the_best(tmp_path):
    done = subprocess.run([sys.executable, "-m", "savegame.cli", "demo", "--sweep", "--dir", "sw"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "8/8 trials ended" in done.stdout and "savegame sweep best sw" in done.stdout
    shown = json.loads(subprocess.run([sys.executable, "-m", "savegame.cli", "sweep", "show", "sw", "--json"],
                                      cwd=tmp_path, capture_output=True, text=True, check=True).stdout)
    assert sorted(t["number"] for t in shown["trials"]) == list(range(8))
    assert {t["state"] for t in shown["trials"]} <= {"COMPLETE", "PRUNED"}
    assert shown["best"]["value"] > 0.9  # validation accuracy of the best trial
    params = [tuple(sorted(t["params"].items())) for t in shown["trials"]]
    assert len(set(params)) == len(params)  # the two workers did not sample the same settings
