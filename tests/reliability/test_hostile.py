"""Hostile input, CI-sized (``bench/torture.py`` runs the long ones): checkpoint folders, run
folders, logdirs and sweep specs from someone else, with consistent hashes, so that only the
hostile part can stop them. No pickle runs, nothing outside the folder is read, no huge
allocation, deep or huge JSON gets savegame's own error, hostile names never write outside."""

import pytest

from hostile import SCENARIOS

MINIMUM = {"pickle": 60, "paths": 50, "huge": 70, "json": 60, "names": 60}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_hostile_input_is_refused_with_savegames_own_error_and_never_runs_code_or_reads_outside(tmp_path, name):
    tally = SCENARIOS[name](tmp_path, "ci", 16)
    tally.check()
    assert tally.tried >= MINIMUM[name]
