"""Concurrency (issue 16, part 5), at CI scale: two processes on one run folder, two sweeps on
one study, and readers (``savegame ls``, ``doctor``, verify/load, TensorBoard) while a run
writes. The scenarios are in :mod:`concurrency`; ``bench/torture.py`` runs them at "torture"."""

from __future__ import annotations

import pytest

import concurrency


def test_two_processes_on_one_run_folder_one_trains_the_other_is_told_who_holds_it(tmp_path):
    tally = concurrency.two_processes_one_folder(tmp_path, "ci", seed=0)
    tally.check()
    assert tally.tried >= 5 + 100  # 4 races and a stale lock, and the lock-only races refused


def test_two_sweeps_on_one_study_run_each_trial_once_and_lose_none(tmp_path):
    pytest.importorskip("optuna")
    tally = concurrency.two_sweeps_one_study(tmp_path, "ci", seed=0)
    tally.check()
    assert tally.tried >= 6


def test_readers_never_see_a_half_checkpoint_and_never_block_the_writer(tmp_path):
    pytest.importorskip("tensorboard")
    tally = concurrency.readers_while_writing(tmp_path, "ci", seed=0)
    tally.check()
    assert tally.tried >= 50  # listings, CLI calls and TensorBoard queries while the run wrote
