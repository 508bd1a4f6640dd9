"""The labeled set's generator writes real TensorBoard runs that torch's own reader takes back."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cases import CASES, generate

BY_NAME = {case.name: case for case in CASES}


def scalars(run_dir):
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return events


def test_generates_a_classification_and_a_regression_run_that_read_back(tmp_path):
    names = ["still_improving_cls", "still_improving_reg"]
    labels = generate(tmp_path, names)
    assert labels == {name: "still_improving" for name in names}
    assert json.loads((tmp_path / "labels.json").read_text()) == labels
    for name in names:
        case = BY_NAME[name]
        events = scalars(tmp_path / name)
        tags = set(events.Tags()["scalars"])
        assert set(case.tags.values()) <= tags
        assert "doctor/grad_norm/total" in tags and "doctor/nonfinite_grads" in tags
        train = [e.step for e in events.Scalars(case.tags["train"])]
        val = [e.step for e in events.Scalars(case.tags["val"])]
        assert train == list(range(1, len(train) + 1))  # every step, in order
        assert len(val) == case.epochs and val == sorted(val) and val[-1] == train[-1]
        # a healthy setup stopped early: the loss went down
        assert events.Scalars(case.tags["val"])[-1].value < events.Scalars(case.tags["val"])[0].value


def test_unknown_case_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown case names"):
        generate(tmp_path, ["no_such_case"])


def test_the_set_covers_every_verdict_for_both_tasks():
    pairs = {(case.label, case.task) for case in CASES}
    labels = {case.label for case in CASES}
    assert len(CASES) >= 12 and len({case.name for case in CASES}) == len(CASES)
    assert all((label, task) in pairs for label in labels for task in ("classification", "regression"))
