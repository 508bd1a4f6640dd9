"""Issue 16, damaged files: every class of byte position of a checkpoint flipped, cut or deleted,
and event files torn mid-record; each is found by verify, never loaded or resumed from, and the
run goes on from the newest intact checkpoint (``damage.py`` says what each case expects)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from damage import damaged_checkpoints, damaged_event_files  # noqa: E402


def test_damaged_checkpoints_are_found_by_verify_refused_by_load_and_skipped_by_resume(tmp_path):
    tally = damaged_checkpoints(tmp_path, "ci", seed=16)
    assert tally.tried >= 80
    tally.check()


def test_torn_and_flipped_event_files_are_read_up_to_the_damage_and_a_resume_keeps_every_step_once(tmp_path):
    tally = damaged_event_files(tmp_path, "ci", seed=16)
    assert tally.tried >= 30
    tally.check()
