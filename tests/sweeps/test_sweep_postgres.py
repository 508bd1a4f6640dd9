"""A sweep shared through PostgreSQL (Optuna's RDB storage), as several machines would share it:
3 worker processes on one study, one SIGKILLed mid-trial; every trial ends, none is lost or run
twice, and another worker resumes the killed one from its checkpoint.

The server is Debian's PostgreSQL, which ``.ci/run`` installs and starts on localhost; the test
reads its URL from ``SAVEGAME_TEST_POSTGRES`` (e.g. ``postgresql://savegame:savegame@127.0.0.1/savegame_test``)
and skips without it, unless ``SAVEGAME_REQUIRE_POSTGRES=1`` (CI), where a missing server fails."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("optuna")
sys.path.insert(0, str(Path(__file__).parent))
from test_sweep_kill import SPEC, kill_a_worker_mid_trial, start  # noqa: E402

URL = os.environ.get("SAVEGAME_TEST_POSTGRES")
if not URL:
    if os.environ.get("SAVEGAME_REQUIRE_POSTGRES") == "1":
        pytest.fail("SAVEGAME_TEST_POSTGRES is not set, and SAVEGAME_REQUIRE_POSTGRES=1 needs the PostgreSQL test",
                    pytrace=False)
    pytestmark = pytest.mark.skip(reason="set SAVEGAME_TEST_POSTGRES=postgresql://... to run the PostgreSQL sweep test")


def test_three_workers_on_postgresql_one_killed_lose_nothing_and_run_nothing_twice(tmp_path):
    name = f"pg-{tmp_path.name}-{os.getpid()}-{int(time.time())}"  # one study per run of the test
    (tmp_path / "toy.yaml").write_text(f"name: {name}\n" + SPEC % {"n": 6, "sleep": 0.03})
    sweep = start(tmp_path, "--workers", "3", "--storage", URL, "--dir", "sweeps/toy")
    victim_trial, victim = kill_a_worker_mid_trial(tmp_path, sweep)
    assert sweep.wait(timeout=300) == 0, sweep.stdout.read()
    assert "savegame:savegame@" not in (tmp_path / "sweeps" / "toy" / "sweep.json").read_text()  # no password kept

    import optuna

    study = optuna.load_study(study_name=name, storage=URL)  # an ordinary Optuna study in the database
    counted = [t for t in study.trials if not t.system_attrs.get("savegame:surplus")]
    assert sorted(t.number for t in counted) == list(range(6))  # none lost, none twice
    assert {t.state.name for t in counted} <= {"COMPLETE", "PRUNED"}
    info = json.loads((tmp_path / "sweeps" / "toy" / "trials" / victim_trial / "run.json").read_text())
    assert info["resumes"] and info["resumes"][0]["pid"] != victim and info["resumes"][0]["from_step"] >= 10
    killed = next(t for t in counted if f"trial-{t.number:04d}" == victim_trial)
    assert sorted(killed.intermediate_values) == [10, 20, 30, 40]  # the values before the kill are kept
