"""Kill storms on jobs of many processes, CI-sized (``bench/torture.py`` runs longer ones): a
sweep with 2 workers (the whole sweep or one worker killed) and a 2-rank torchrun DDP job (the
whole job or one rank killed, some kills during a save)."""

import pytest

from job_kills import SCALES, sweep_storm, torchrun_storm

pytestmark = pytest.mark.slow


def test_a_sweep_killed_again_and_again_ends_with_every_trial_once_and_the_same_values(tmp_path):
    pytest.importorskip("optuna")
    tally = sweep_storm(tmp_path, "ci", seed=16)
    tally.check()
    assert tally.tried >= SCALES["ci"]["sweep"]


def test_a_torchrun_job_killed_again_and_again_ends_bit_identical(tmp_path):
    tally = torchrun_storm(tmp_path, "ci", seed=16)
    tally.check()
    assert tally.tried >= SCALES["ci"]["torchrun"]
