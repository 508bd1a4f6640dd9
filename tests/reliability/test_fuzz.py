"""Fuzzing, CI-sized: the manifest decoder, the checkpoint loader on mutated real checkpoint bytes,
the event-file reader and the sweep spec parser raise nothing but savegame's own errors (the
event reader: nothing at all), and no case hangs. atheris runs too when it is installed."""

import pytest

from fuzz import EXAMPLES, FUZZERS, atheris_available


@pytest.mark.parametrize("name", ["manifest", "checkpoint", "events", "spec"])
def test_fuzzed_input_gets_only_savegames_own_errors_and_never_hangs(tmp_path, name):
    tally = FUZZERS[name](tmp_path, "ci", 16)
    tally.check()
    assert tally.tried >= EXAMPLES["ci"]


@pytest.mark.skipif(not atheris_available(), reason="atheris is not installed (pip install atheris)")
def test_atheris_finds_no_crash_in_the_event_scanner_or_the_spec_loader(tmp_path):
    tally = FUZZERS["atheris"](tmp_path, "ci", 16)
    tally.check()
    assert tally.tried >= 2000
