"""Verdict rules on hand-made curves, and every bad input the issue lists: a sensible verdict or a
clear "cannot judge", never a traceback."""

import json
import math

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter as TorchWriter

from savegame.cli import main
from savegame.doctor import RunData, Series, diagnose, load_runs

STEPS = np.arange(1, 401)


def run_of(**curves):
    return RunData("r", None, {tag.replace("__", "/"): Series(np.asarray(s, np.int64), np.asarray(v, float))
                               for tag, (s, v) in curves.items()})


def decay(scale=2.0, tau=60.0, floor=0.05):
    return scale * np.exp(-STEPS / tau) + floor


def test_a_converged_run_is_healthy_and_names_its_lowest_step():
    d = diagnose(run_of(loss__train=(STEPS, decay()), loss__val=(STEPS[::10], decay(floor=0.08)[::10])))
    assert d.verdict == "healthy" and d.confidence > 0.5
    assert d.marks.low_step is not None and d.suggestions


def test_nan_after_finite_values_is_diverged_with_the_step():
    values = decay()
    values[300:] = np.nan
    d = diagnose(run_of(loss__train=(STEPS, values)))
    assert d.verdict == "diverged" and d.marks.diverged_step == 301
    assert "301" in d.evidence[0] and any(f.kind == "nan" for f in d.findings)


def test_a_loss_that_explodes_without_nan_is_diverged():
    values = decay()
    values[250:] = 0.05 * np.exp(np.arange(150) / 10)
    d = diagnose(run_of(loss__train=(STEPS, values)))
    assert d.verdict == "diverged" and 250 < d.marks.diverged_step < 400


def test_validation_u_shape_is_overfitting_with_the_lowest_step_in_the_suggestion():
    val = decay(floor=0.3) + np.maximum(STEPS - 150, 0) * 0.003
    d = diagnose(run_of(loss__train=(STEPS, decay(floor=0.0)), loss__val=(STEPS[::10], val[::10])))
    assert d.verdict == "overfitting"
    assert 120 <= d.marks.low_step <= 180
    assert f"{d.marks.low_step:,}" in d.suggestions[0]


def test_a_flat_loss_is_a_plateau():
    flat = 2.3 + 0.01 * np.sin(STEPS)
    assert diagnose(run_of(train_loss=(STEPS, flat))).verdict == "plateau"


def test_a_straight_slow_decline_is_lr_too_low():
    assert diagnose(run_of(train_loss=(STEPS, 2.3 - STEPS * 0.001))).verdict == "lr_too_low"


def test_a_curve_still_bending_down_is_still_improving():
    d = diagnose(run_of(train_loss=(STEPS, decay(tau=200.0, floor=0.0))))
    assert d.verdict == "still_improving"


def test_only_a_training_loss_that_converged_cannot_be_called_healthy_and_says_why():
    d = diagnose(run_of(loss=(STEPS, decay())))
    assert not d.judged and d.tags == {"train_loss": "loss"}
    assert "without a validation loss healthy cannot be told from overfitting" in d.cannot_judge
    assert d.decided_by["progress"] > 0.9  # the numbers it did read


def test_only_a_training_loss_still_judges_what_needs_no_validation():
    d = diagnose(run_of(loss=(STEPS, np.full(len(STEPS), 0.7) + 0.001 * np.sin(STEPS))))
    assert d.verdict == "plateau" and any(f.kind == "no_validation" for f in d.findings)


def test_only_a_validation_loss_is_judged_on_it():
    d = diagnose(run_of(val_loss=(STEPS[::10], decay()[::10])))
    assert d.judged and "train_loss" not in d.tags


@pytest.mark.parametrize("points", [1, 2, 4])
def test_too_few_points_cannot_be_judged(points):
    d = diagnose(run_of(loss__train=(STEPS[:points], decay()[:points])))
    assert d.verdict is None and f"only {points} finite point" in d.cannot_judge


def test_tags_it_cannot_map_say_which_tags_exist_and_how_to_name_them():
    d = diagnose(run_of(foo=(STEPS, decay()), bar__baz=(STEPS, decay())))
    assert d.verdict is None
    assert "bar/baz" in d.cannot_judge and "--train-tag" in d.cannot_judge
    named = diagnose(run_of(foo=(STEPS, decay()), bar__baz=(STEPS, decay())), train_tag="foo")
    assert named.tags["train_loss"] == "foo" and "without a validation loss" in named.cannot_judge
    assert "no scalar tag 'nope'" in diagnose(run_of(foo=(STEPS, decay())), val_tag="nope").cannot_judge


def test_all_nan_cannot_be_judged_as_a_trend_but_is_diverged():
    d = diagnose(run_of(loss=(STEPS, np.full(len(STEPS), np.nan))))
    assert d.verdict == "diverged"  # NaN from the first step: nothing to train on


def test_a_run_without_scalars_cannot_be_judged():
    assert diagnose(RunData("r", None, {})).cannot_judge == "the run has no scalar data"


def write(folder, tag, steps, values):
    with TorchWriter(str(folder)) as w:
        for step, value in zip(steps, values):
            w.add_scalar(tag, value, step)


def test_cli_on_every_bad_input_prints_a_line_and_never_a_traceback(tmp_path, capsys):
    write(tmp_path / "single", "loss/train", [1], [1.0])
    write(tmp_path / "nan_inf", "loss/train", range(1, 50), [1.0, math.inf] * 24 + [math.nan])
    write(tmp_path / "unmapped", "foo", range(10), range(10))
    write(tmp_path / "out_of_order", "loss/train", [5, 3, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
          [1.0] * 13)
    write(tmp_path / "only_train", "train_loss", range(1, 100), decay()[:99])
    (tmp_path / "empty_run").mkdir()
    assert main(["doctor", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    by_run = {d["run"]: d for d in out}
    assert set(by_run) == {"single", "nan_inf", "unmapped", "out_of_order", "only_train"}
    assert by_run["single"]["verdict"] is None and "only 1" in by_run["single"]["cannot_judge"]
    assert by_run["nan_inf"]["verdict"] == "diverged"
    assert by_run["unmapped"]["verdict"] is None and "foo" in by_run["unmapped"]["cannot_judge"]
    assert by_run["out_of_order"]["verdict"] is not None  # steps 5, 3, 9, 1..10: read as the rerun meant
    assert any(f["kind"] == "restarted" for f in by_run["out_of_order"]["findings"])
    assert by_run["only_train"]["verdict"] is not None
    for d in out:
        assert {"run", "verdict", "confidence", "evidence", "suggestions"} <= set(d)

    assert main(["doctor", str(tmp_path / "empty_run"), "--json"]) == 1
    [empty] = json.loads(capsys.readouterr().out)
    assert empty["verdict"] is None and empty["cannot_judge"].startswith("no TensorBoard event files")
    assert main(["doctor", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    assert main(["doctor", str(tmp_path / "only_train"), "--val-tag", "nope"]) == 1
    assert "no scalar tag 'nope'" in capsys.readouterr().out


def test_the_doctor_reads_a_hundred_thousand_points_per_series(tmp_path):
    from savegame.log.records import scalar_record, scalar_value_entry
    steps = np.arange(1, 100_001)
    train = 2 * np.exp(-steps / 20000) + 0.05
    with open(tmp_path / "events.out.tfevents.1.host", "wb") as f:  # savegame's encoder: fast to write
        f.write(b"".join(scalar_record(1.0, int(s), [scalar_value_entry("loss/train", float(t)),
                                                      scalar_value_entry("loss/val", float(t) + 0.1)])
                         for s, t in zip(steps, train)))
    [run] = load_runs(tmp_path)
    assert len(run.scalars["loss/train"]) == 100_000
    d = diagnose(run)
    assert d.verdict in ("healthy", "still_improving")


def test_a_nan_the_curve_recovers_from_is_a_finding_not_a_divergence():
    values = decay()
    values[120] = np.nan  # one bad batch
    values[0] = np.inf    # an AMP overflow at the first step
    d = diagnose(run_of(loss__train=(STEPS, values)))
    assert d.verdict != "diverged"
    [nan] = [f for f in d.findings if f.kind == "nan"]
    assert "2 NaN/inf" in nan.message and "recovered" in nan.message


def test_a_validation_nan_at_the_end_is_diverged_and_quotes_the_validation_curve():
    val = decay()[::10].copy()
    val[-3:] = np.nan
    d = diagnose(run_of(loss__train=(STEPS, decay()), loss__val=(STEPS[::10], val)))
    assert d.verdict == "diverged" and d.evidence[0].startswith("the loss ends NaN/inf")  # the definition
    [line] = [e for e in d.evidence if e.startswith("validation loss became NaN/inf")]  # which curve, where
    assert f"{np.nanmin(val):.4g}"[:4] in line


@pytest.mark.parametrize("values", [np.zeros(len(STEPS)),                             # constant zero
                                    np.concatenate([np.zeros(3), -decay()[3:]]),     # starts at 0, negative
                                    -decay()])                                       # a negative loss
def test_odd_losses_get_a_verdict_without_a_traceback(values):
    d = diagnose(run_of(loss__train=(STEPS, values), loss__val=(STEPS[::10], values[::10])))
    assert d.judged or d.cannot_judge
    assert not (d.cannot_judge or "").startswith("the doctor failed")


def test_a_constant_loss_says_so():
    d = diagnose(run_of(loss__train=(STEPS, np.full(len(STEPS), 0.5))))
    assert d.verdict == "plateau" and any("exactly 0.5 at every step" in e for e in d.evidence)


def test_a_healthy_run_names_its_lowest_validation_point_in_its_suggestion():
    d = diagnose(run_of(loss=(STEPS, decay()), loss__val=(STEPS[::10], decay()[::10] * 1.1)))
    assert d.verdict == "healthy" and d.suggestions[0].startswith("lowest validation loss (smoothed) at step")


def test_a_garbage_event_file_is_named(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "events.out.tfevents.1.x").write_bytes(b"not an event file at all" * 10)
    assert main(["doctor", str(tmp_path), "--json"]) == 1
    [d] = json.loads(capsys.readouterr().out)
    assert d["cannot_judge"] == "the run has no scalar data"
    assert any(f["kind"] == "unreadable" and "events.out.tfevents.1.x" in f["message"] for f in d["findings"])


def test_a_lightning_style_run_finds_its_losses_and_hparams(tmp_path):
    """Lightning's TensorBoardLogger writes through torch's writer: `*_step`/`*_epoch` tags, an
    `epoch` scalar, `hp_metric`, and the hparams session in the run itself."""
    from torch.utils.tensorboard.summary import hparams
    folder = tmp_path / "lightning_logs" / "version_0"
    with TorchWriter(str(folder)) as w:
        for session in hparams({"lr": 0.01, "batch_size": 32}, {"hp_metric": 0.0}):
            w.file_writer.add_summary(session)
        for step in range(1, 401):
            w.add_scalar("train_loss_step", float(decay()[step - 1]), step)
            if step % 20 == 0:
                w.add_scalar("train_loss_epoch", float(decay()[step - 1]), step)
                w.add_scalar("val_loss", float(decay(floor=0.08)[step - 1]), step)
                w.add_scalar("val_acc", 0.9, step)
                w.add_scalar("epoch", step // 20, step)
        w.add_scalar("hp_metric", 0.9, 400)
    [run] = load_runs(tmp_path)
    assert run.name == "lightning_logs/version_0" and run.hparams == {"lr": 0.01, "batch_size": 32}
    d = diagnose(run)
    assert d.tags == {"train_loss": "train_loss_step", "val_loss": "val_loss", "val_acc": "val_acc"}
    assert d.verdict == "healthy"


def test_a_converged_classifier_whose_tiny_losses_jitter_is_healthy_not_lr_too_high():
    """The demo's ending: training loss near 0 jumping 50% of its level between batches, and a
    validation loss of 0.003-0.02 jumping 25% between epochs; against a start of 2.5 that is
    nothing. (It was called lr_too_high once: jumps were measured against the level only.)"""
    rng = np.random.default_rng(0)
    steps = np.arange(1, 2251)
    train = 2.5 * np.exp(-steps / 60) + 0.001 * rng.lognormal(0, 1.0, len(steps))
    epochs = steps[44::45]
    val = (0.2 * np.exp(-np.arange(len(epochs)) / 4) + 0.004) * rng.uniform(0.7, 1.3, len(epochs))
    d = diagnose(run_of(loss__train=(steps, train), loss__val=(epochs, val)))
    assert d.verdict == "healthy", d.line()
    assert not any(f.kind == "noisy" for f in d.findings)
