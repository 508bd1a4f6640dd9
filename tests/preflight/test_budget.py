"""The time budget of the checks that train, and the shortcuts of the input-independent baseline.

A check cut short by ``time_budget`` says so ("cut short by the time budget after N steps / X s")
and never fails for lack of time; a planted bug that the steps it ran already prove still fails.
The baseline's shortcuts (stop once the real run beats the best input-independent prediction;
train the zeroed run on 2 samples) change no verdict.
"""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import savegame
from savegame.preflight.budget import Budget
from savegame.preflight.checks_train import (_baseline_run, _compact_zeroed_loss, _constant_when_zeroed,
                                             _input_independent_floor, _loss_of, _zeroed,
                                             check_determinism, check_input_independent_baseline,
                                             check_overfit_one_batch)
from savegame.preflight.setup import Setup

CLASSES, FEATURES = 4, 20


def clusters(n=64, seed=0, shuffle_labels=False):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(CLASSES, FEATURES, generator=g) * 3
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = centers[y] + torch.randn(n, FEATURES, generator=g)
    if shuffle_labels:
        y = y[torch.randperm(n, generator=g)]
    return [(x[:32], y[:32]), (x[32:], y[32:])]


def mlp(out=CLASSES):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, out))


def build(model, loss_fn=None, data=None, **kw):
    kw.setdefault("optimizer", lambda params: torch.optim.Adam(params, lr=1e-2))
    return Setup.build(model, loss_fn or nn.CrossEntropyLoss(), data or clusters(), **kw)


class Slow(nn.Module):
    """An MLP that takes ``delay`` seconds per forward: a model too big for the budget."""

    def __init__(self, delay=0.02, out=CLASSES):
        super().__init__()
        self.body, self.delay = mlp(out), delay

    def forward(self, x):
        time.sleep(self.delay)
        return self.body(x)


# -- cut short: said, and never a false failure -------------------------------------------------

def test_a_slow_model_is_cut_short_by_the_time_budget_and_says_so():
    setup = build(Slow(), steps=10_000, time_budget=0.5)  # unbounded: 10,000 steps of 20 ms, twice
    for check in (check_overfit_one_batch, check_input_independent_baseline, check_determinism):
        result = check(setup)
        assert result.seconds < 10, (check.__name__, result)  # bounded (generously: the budget is 0.5 s)
    baseline = check_input_independent_baseline(build(Slow(), data=clusters(shuffle_labels=True), steps=10_000,
                                                      time_budget=0.5))
    assert baseline.numbers["cut_short"] and "cut short by the time budget after" in baseline.message
    assert baseline.status == "warn" and "time_budget=" in baseline.fix  # too few steps to fail it


def test_no_time_at_all_gives_no_false_failure_and_no_silent_pass():
    healthy = build(mlp(), time_budget=0)
    for check in (check_overfit_one_batch, check_input_independent_baseline, check_determinism):
        result = check(healthy)
        assert result.status != "fail", (check.__name__, result)
        assert result.numbers["cut_short"] and "cut short by the time budget after" in result.message
    assert check_overfit_one_batch(healthy).status == "warn"  # 0 steps: not overfit *yet*
    assert check_determinism(healthy).status == "skip"  # 1 step: nothing to compare
    # 1 step is enough for the real inputs to beat every input-independent model here: a pass
    assert check_input_independent_baseline(healthy).status == "pass"
    # labels shuffled separately from the inputs: a failure with the time to see it, a warning without
    assert check_input_independent_baseline(build(mlp(), data=clusters(shuffle_labels=True))).status == "fail"
    cut = check_input_independent_baseline(build(mlp(), data=clusters(shuffle_labels=True), time_budget=0))
    assert cut.status == "warn" and "too few steps to tell" in cut.message


def test_a_bug_the_steps_already_prove_still_fails_when_cut_short():
    softmax = nn.Sequential(mlp(), nn.Softmax(dim=1))  # the loss has a floor far above the target
    result = check_overfit_one_batch(build(softmax, time_budget=0))
    assert result.status == "fail" and "return logits" in result.fix
    assert "cut short by the time budget after 0 steps" in result.message


def test_preflight_takes_the_time_budget_and_reports_it():
    report = savegame.preflight(Slow(delay=0.01), nn.CrossEntropyLoss(), clusters(), steps=10_000, time_budget=0.3)
    assert "0.3 s per training check" in report["setup"].message
    assert any(c.numbers.get("cut_short") for c in report.checks)
    assert all(c.status != "fail" for c in report.checks), str(report)
    unlimited = savegame.preflight(mlp(), nn.CrossEntropyLoss(), clusters(), time_budget=None)
    assert unlimited.passed and not any(c.numbers.get("cut_short") for c in unlimited.checks)
    bad = savegame.preflight(mlp(), nn.CrossEntropyLoss(), clusters(), time_budget=-1)
    assert bad["setup"].status == "fail" and "time_budget" in bad["setup"].message


def test_budget_parts_and_words():
    budget = Budget(10.0)
    assert 4.9 < budget.part(0.5).seconds <= 5.0 and Budget(None).part(0.5).seconds is None
    assert Budget(0).said(1, seconds=2.04) == "cut short by the time budget after 1 step / 2.0 s"


# -- the baseline's shortcuts -------------------------------------------------------------------

def _best_constant(loss_fn, shape, y):
    """The lowest loss of a constant prediction, found numerically (L-BFGS on the constant)."""
    c = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([c], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        optimizer.zero_grad()
        loss = loss_fn(c.expand(y.shape[0], *shape), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return closure().item()


@pytest.mark.parametrize("kind", ["cross-entropy", "label smoothing", "nll", "mse", "bce"])
def test_the_input_independent_floor_is_the_best_constant_prediction(kind):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, FEATURES, generator=g)
    if kind in ("cross-entropy", "label smoothing", "nll"):
        y = torch.tensor([0] * 20 + [1] * 12 + [2] * 6 + [3] * 2)
        loss_fn = {"cross-entropy": nn.CrossEntropyLoss(), "label smoothing": nn.CrossEntropyLoss(label_smoothing=0.2),
                   "nll": F.nll_loss}[kind]
        model = nn.Sequential(mlp(), nn.LogSoftmax(dim=1)) if kind == "nll" else mlp()
        best = _best_constant((lambda o, t: F.nll_loss(o.log_softmax(1), t)) if kind == "nll" else loss_fn,
                              (CLASSES,), y)
    elif kind == "mse":
        y, loss_fn, model = torch.randn(40, 3, generator=g).double() * 2 + 1, nn.MSELoss(), mlp(out=3)
        best = _best_constant(loss_fn, (3,), y)
    else:
        y, loss_fn, model = (torch.rand(40, 2, generator=g) > 0.3).double(), nn.BCEWithLogitsLoss(), mlp(out=2)
        best = _best_constant(loss_fn, (2,), y)
    setup = Setup.build(model, loss_fn, [(x, y)])
    compact, out = _constant_when_zeroed(setup, [(x, y)], (x, y))
    assert compact
    assert _input_independent_floor(setup, (x, y), out) == pytest.approx(best, abs=1e-3)


def test_no_floor_where_it_is_not_known():
    x, y = clusters()[0]
    setup = build(mlp(), nn.CrossEntropyLoss(weight=torch.ones(CLASSES)))
    assert _input_independent_floor(setup, (x, y), torch.zeros(2, CLASSES)) is None
    raw_nll = build(mlp(), nn.NLLLoss())  # outputs that are not log-probabilities: NLL has no floor
    assert _input_independent_floor(raw_nll, (x, y), torch.randn(2, CLASSES)) is None
    extra = [(x, y, torch.arange(32))]  # a third field the zeroed model still sees: no shortcut
    assert _constant_when_zeroed(build(mlp(), data=extra), extra, extra[0]) == (False, None)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_the_compact_zeroed_run_matches_the_full_one(batchnorm):
    torch.manual_seed(0)
    norm2d, norm1d = (nn.BatchNorm2d(4), nn.BatchNorm1d(8)) if batchnorm else (nn.Identity(), nn.Identity())
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), norm2d, nn.ReLU(), nn.Flatten(),
                        nn.Linear(64, 8), norm1d, nn.ReLU(), nn.Linear(8, CLASSES))
    g = torch.Generator().manual_seed(0)
    data = [(torch.rand(16, 1, 4, 4, generator=g), torch.randint(0, CLASSES, (16,), generator=g)) for _ in range(2)]
    setup = build(cnn, data=data)
    train, held = setup.batches[:1], setup.batches[1]
    assert _constant_when_zeroed(setup, train, held)[0]
    compact = _baseline_run(setup, train, held, 20, 2, Budget(None), _compact_zeroed_loss(setup))
    full = _baseline_run(setup, [_zeroed(setup, b) for b in train], _zeroed(setup, held), 20, 2, Budget(None),
                         _loss_of(setup))
    assert sorted(compact["evals"]) == sorted(full["evals"]) == list(range(2, 21, 2))
    # BatchNorm on zeroed inputs has zero variance: which ReLUs after it pass is decided by rounding,
    # differently in both runs (equal in exact arithmetic); without it they agree to rounding
    tolerance = 0.03 if batchnorm else 1e-5
    for step, value in full["evals"].items():
        assert compact["evals"][step] == pytest.approx(value, rel=tolerance)


def test_the_baseline_stops_once_the_real_inputs_beat_every_input_independent_model():
    result = check_input_independent_baseline(build(mlp(), steps=50))
    assert result.status == "pass", result
    floor = result.numbers["input_independent_floor"]
    assert result.numbers["real_held_out_loss"] <= 0.9 * floor and result.numbers["steps"] < 50
    assert "the lowest any input-independent model" in result.message


def test_the_cli_takes_a_time_budget(tmp_path, monkeypatch, capsys):
    import argparse
    import json
    import textwrap

    from savegame.preflight import command

    (tmp_path / "budgeted.py").write_text(textwrap.dedent("""
        import torch
        def setup():
            torch.manual_seed(0)
            x = torch.randn(64, 8); y = (x[:, 0] > 0).long()
            return torch.nn.Linear(8, 2), torch.nn.CrossEntropyLoss(), [(x[:32], y[:32]), (x[32:], y[32:])]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert command.run(parser.parse_args(["budgeted:setup", "--time-budget", "0", "--json"]), None) == 0
    report = json.loads(capsys.readouterr().out)
    assert "0 s per training check" in report["checks"][0]["message"]
    assert any(c["numbers"].get("cut_short") for c in report["checks"])
    assert parser.parse_args(["budgeted:setup", "--time-budget", "none"]).time_budget is None
    assert not hasattr(parser.parse_args(["budgeted:setup"]), "time_budget")  # preflight's default
