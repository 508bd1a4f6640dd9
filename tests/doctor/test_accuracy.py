"""The doctor's accuracy on the labeled set of real trainings (tests/doctor/cases.py): the
issue asks for at least 90% correct verdicts and no alarm on any healthy run."""

import json

import pytest

from cases import CASES, generate
from savegame.doctor import diagnose, load_runs


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    root = tmp_path_factory.mktemp("cases")
    labels = generate(root)  # 18 real trainings, about 30 s
    return root, labels


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    root = tmp_path_factory.mktemp("heldout")
    labels = generate(root, heldout=True)  # 12 trainings from other recipes, about 25 s
    return root, labels


def verdicts(root, *, signals=True):
    out = {}
    for run in load_runs(root):
        if not signals:
            run.scalars = {t: s for t, s in run.scalars.items() if not t.startswith("doctor/")}
        out[run.name] = diagnose(run)
    return out


@pytest.mark.parametrize("which", ["labeled", "heldout"])
@pytest.mark.parametrize("signals", [True, False], ids=["with signals", "curves only"])
def test_at_least_90_percent_correct_and_no_alarm_on_a_healthy_run(request, which, signals):
    root, labels = request.getfixturevalue(which)
    judged = verdicts(root, signals=signals)
    assert set(judged) == set(labels) and len(labels) >= 12
    correct = [name for name, d in judged.items() if d.verdict == labels[name]]
    wrong = {name: (labels[name], judged[name].verdict) for name in labels if name not in correct}
    assert len(correct) / len(labels) >= 0.9, wrong
    for name, label in labels.items():
        if label == "healthy":
            assert judged[name].verdict == "healthy", (name, judged[name].line())


def test_the_set_covers_every_verdict_for_both_tasks_and_dropout_runs_sit_below_training(labeled):
    root, labels = labeled
    from savegame.doctor import VERDICTS
    assert {(c.label, c.task) for c in CASES} == {(v, t) for v in VERDICTS for t in ("classification", "regression")}
    judged = verdicts(root)
    for name in ("healthy_dropout_cls", "healthy_dropout_reg"):
        assert any(f.kind == "val_below_train" for f in judged[name].findings), judged[name].findings
    assert json.loads((root / "labels.json").read_text()) == labels


def test_the_evidence_names_steps_and_values(labeled):
    root, _ = labeled
    judged = verdicts(root)
    overfit = judged["overfit_cls"]
    assert f"step {overfit.marks.low_step:,}" in overfit.evidence[0]
    assert f"step {overfit.marks.low_step:,}" in overfit.suggestions[0]
    assert judged["diverged_reg"].marks.diverged_step is not None
    assert all(d.suggestions for d in judged.values())
