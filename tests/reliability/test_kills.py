"""Kill storms on one training run, CI-sized (``bench/torture.py`` runs the long ones): SIGKILLs
uniform in time and aimed at each class of file operation of a save (the background write of an
async save and the deletions of incremental retention included), a rerun after each."""

import pytest

from kills import MODES, kill_storms


@pytest.fixture(scope="module")
def storms(tmp_path_factory):
    return kill_storms(tmp_path_factory.mktemp("storms", numbered=True), "ci", seed=16)


@pytest.mark.parametrize("aim", ["uniform", "aimed"])
def test_a_kill_storm_loses_no_checkpoint_resumes_nothing_corrupt_and_ends_bit_identical(storms, aim):
    tally = next(t for t in storms if aim in t.family)
    tally.check()
    assert tally.tried >= {"uniform": 12, "aimed": 24}[aim]
    assert f"over {len(MODES)} save modes" in tally.notes[0]
