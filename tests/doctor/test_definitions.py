"""The verdict definitions (``doctor/definitions.py``) over the named quantities (``quantities.py``).

Two kinds of tests: each definition on quantities just on both sides of its threshold (exact,
so a changed threshold or a changed comparison fails here), and real-looking curves for the
misses that motivated the definitions (issue 12): an explosion that settles at 50x its start,
a training loss of 1e-8 beside a validation loss a hundred million times higher, a network
stuck at the chance level after an early jump.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from savegame.doctor.curves import RunData, Series
from savegame.doctor.definitions import DEFAULT, decide
from savegame.doctor.quantities import Quantities, quantities
from savegame.doctor.rules import measure

T = DEFAULT
EPS = 1e-3


def healthy_quantities(**changes) -> Quantities:
    """A converged run with a validation curve close to training: healthy, unless changed."""
    base = Quantities(
        start=2.3, peak=2.4, peak_step=3, best_before_peak=1.0, train_best=0.1, train_final=0.1, val_best=0.2,
        val_best_step=900, val_final=0.2, val_rise=0.0, train_fall_after=0.05, gap=0.1, gap_ratio=2.0, gap_share=0.1 / 2.3,
        progress=1 - 0.1 / 2.3, val_progress=0.9, tail_drop=0.001, tail_share=0.001, tail_gain=0.01, noise=0.02, val_bounce=1.05, val_jump=0.05, swing=0.005,
        nonfinite=0, ends_nonfinite=False, first_nonfinite_step=None, classes=None, chance_loss=None,
        chance_source=None, final_over_chance=None, acc_final=None, acc_chance=None, train_points=1000,
        val_points=20)
    return dataclasses.replace(base, **changes)


def test_the_baseline_is_healthy_and_says_with_which_numbers():
    decision = decide(healthy_quantities())
    assert decision.verdict == "healthy"
    assert decision.numbers["progress"] == pytest.approx(0.9565, abs=1e-4)


# -- each definition, on both sides of its threshold -------------------------------------------
def test_diverged_when_the_loss_ends_nan():
    assert decide(healthy_quantities(ends_nonfinite=True, nonfinite=3, first_nonfinite_step=500)).verdict == "diverged"
    assert decide(healthy_quantities(nonfinite=3, first_nonfinite_step=500)).verdict == "healthy"  # recovered


@pytest.mark.parametrize("over_start, verdict", [(T.exploded + EPS, "diverged"), (T.exploded - EPS, "plateau")])
def test_diverged_at_exploded_times_the_start(over_start, verdict):
    final = 2.3 * over_start  # the best is 0.1: far more than exploded_over_best x it
    q = healthy_quantities(train_final=final, progress=1 - over_start, peak=final, val_progress=0.0)
    assert decide(q).verdict == verdict


@pytest.mark.parametrize("learned, verdict", [(T.learned - EPS, "diverged"), (T.learned + EPS, "lr_too_high")])
def test_a_jump_back_to_the_guess_is_divergence_only_after_learning(learned, verdict):
    q = healthy_quantities(peak=2.3 * T.jump * 2, peak_step=400, best_before_peak=learned, train_final=2.3,
                           val_final=2.3, progress=0.0, train_best=2.3 * learned)
    assert decide(q).verdict == verdict


@pytest.mark.parametrize("jump, verdict", [(T.jump + EPS, "lr_too_high"), (T.jump - EPS, "plateau")])
def test_lr_too_high_at_jump_times_the_start_then_a_guess(jump, verdict):
    q = healthy_quantities(peak=2.3 * jump, best_before_peak=1.0, train_final=2.3, train_best=2.3, val_best=2.3,
                           val_final=2.3, progress=0.0, val_progress=0.0)
    assert decide(q).verdict == verdict


@pytest.mark.parametrize("val_progress, progress, verdict", [
    (T.stuck / 2 - EPS, T.slow - EPS, "plateau"),
    (T.stuck / 2 + EPS, T.slow - EPS, "lr_too_low"),       # a validation loss that moves, however slowly
    (T.stuck / 2 - EPS, T.slow + EPS, "underfitting"),     # the training loss learned something
])
def test_plateau_when_the_validation_loss_never_moved(val_progress, progress, verdict):
    final = 2.3 * (1 - progress)
    q = healthy_quantities(progress=progress, val_progress=val_progress, train_final=final, val_final=final * 1.05,
                           tail_share=T.late + EPS if verdict == "lr_too_low" else 0.0)
    assert decide(q).verdict == verdict


NO_VALIDATION = dict(val_final=None, val_best=None, val_best_step=None, val_rise=None, val_progress=None, gap=None,
                     gap_ratio=None, gap_share=None, val_bounce=None, val_jump=None, val_points=0)


@pytest.mark.parametrize("progress, verdict", [(T.stuck - EPS, "plateau"), (T.stuck + EPS, None)])
def test_without_validation_plateau_below_stuck_progress(progress, verdict):
    q = healthy_quantities(progress=progress, train_final=2.3 * (1 - progress), tail_drop=T.flat_tail + EPS,
                           **NO_VALIDATION)
    assert decide(q).verdict == verdict


@pytest.mark.parametrize("tail, verdict", [(T.flat_tail - EPS, "plateau"), (T.flat_tail + EPS, None)])
def test_without_validation_plateau_when_slow_and_flat_at_the_end(tail, verdict):
    progress = (T.stuck + T.slow) / 2
    q = healthy_quantities(progress=progress, tail_drop=tail, train_final=2.3 * (1 - progress), **NO_VALIDATION)
    assert decide(q).verdict == verdict


@pytest.mark.parametrize("noise, verdict", [(T.noisy + EPS, "lr_too_high"), (T.noisy - EPS, "healthy")])
def test_lr_too_high_when_the_loss_swings(noise, verdict):
    assert decide(healthy_quantities(noise=noise, swing=T.swing + EPS)).verdict == verdict


@pytest.mark.parametrize("val_jump, verdict", [(T.val_jump + EPS / 10, "lr_too_high"),
                                               (T.val_jump - EPS / 10, "healthy")])
def test_a_swinging_training_loss_counts_only_where_the_validation_loss_shows_it(val_jump, verdict):
    # batches that swing beside a smooth validation loss are batch noise (a loss near 0, small batches)
    q = healthy_quantities(noise=T.noisy * 2, swing=T.swing * 2, val_bounce=1.0, val_jump=val_jump)
    assert decide(q).verdict == verdict


@pytest.mark.parametrize("bounce, verdict", [(T.bounce + EPS, "lr_too_high"), (T.bounce - EPS, "healthy")])
def test_lr_too_high_when_the_validation_loss_bounces(bounce, verdict):
    assert decide(healthy_quantities(val_bounce=bounce)).verdict == verdict


@pytest.mark.parametrize("jump, verdict", [(T.val_jump + EPS / 10, "lr_too_high"), (T.val_jump - EPS / 10, "healthy")])
def test_a_bounce_counts_only_with_jumps_large_against_the_start(jump, verdict):
    assert decide(healthy_quantities(val_bounce=T.bounce * 2, val_jump=jump)).verdict == verdict


def test_a_bouncing_validation_loss_is_measured_on_its_path():
    steps = np.arange(1, 401)
    train = 2.3 * np.exp(-steps / 60) + 0.3
    smooth_val = 2.3 * np.exp(-steps[9::10] / 60) + 0.35
    bouncing = smooth_val * (1 + 0.3 * np.tile([1, -1], 20))
    assert quantities(measure(run_of(train, smooth_val))).val_bounce == pytest.approx(1.0)
    assert quantities(measure(run_of(train, bouncing))).val_bounce > 2
    assert decide(quantities(measure(run_of(train, bouncing)))).verdict == "lr_too_high"


RISEN = dict(val_final=0.2 + 2.3 * T.rise_share * 2)  # from its best 0.2, by twice rise_share of the start


@pytest.mark.parametrize("rise, verdict", [(T.rise + EPS, "overfitting"), (T.rise - EPS, "healthy")])
def test_overfitting_when_validation_gives_back_its_gain(rise, verdict):
    assert decide(healthy_quantities(val_rise=rise, **RISEN)).verdict == verdict


@pytest.mark.parametrize("share, verdict", [(T.rise_share + EPS, "overfitting"), (T.rise_share - EPS, "healthy")])
def test_a_validation_rise_counts_only_when_large_against_the_start(share, verdict):
    # giving back half of a tiny gain (a validation loss that hardly moved) is no memorization
    assert decide(healthy_quantities(val_rise=T.rise * 2, val_final=0.2 + 2.3 * share)).verdict == verdict


@pytest.mark.parametrize("fall, verdict", [(T.still_fitting + EPS, "overfitting"), (T.still_fitting - EPS, "healthy")])
def test_a_validation_rise_is_overfitting_only_while_training_keeps_falling(fall, verdict):
    assert decide(healthy_quantities(val_rise=T.rise * 2, train_fall_after=fall, **RISEN)).verdict == verdict


@pytest.mark.parametrize("share, ratio, verdict", [
    (T.gap_share + EPS, T.gap_ratio + EPS, "overfitting"),
    (T.gap_share - EPS, T.gap_ratio * 5, "healthy"),    # a big ratio of two small losses
    (T.gap_share * 2, T.gap_ratio - EPS, "healthy"),    # a big gap between two big losses
])
def test_overfitting_when_the_gap_is_large_against_the_start_and_the_training_loss(share, ratio, verdict):
    assert decide(healthy_quantities(gap_share=share, gap_ratio=ratio)).verdict == verdict


@pytest.mark.parametrize("share, ratio, verdict", [
    (T.gap_share / 3 + EPS, T.memorized + EPS, "overfitting"),
    (T.gap_share / 3 - EPS, T.memorized * 10, "healthy"),   # two losses near 0: no gap worth the name
    (T.gap_share / 3 + EPS, T.memorized - EPS, "healthy"),
])
def test_overfitting_when_the_training_data_were_memorized(share, ratio, verdict):
    assert decide(healthy_quantities(gap_share=share, gap_ratio=ratio)).verdict == verdict


def test_a_memorizing_model_is_overfitting_even_when_its_validation_loss_bounces():
    q = healthy_quantities(gap_share=T.gap_share * 2, gap_ratio=T.gap_ratio * 2, val_bounce=T.bounce * 5)
    assert decide(q).verdict == "overfitting"
    assert decide(dataclasses.replace(q, gap_share=0.0, gap_ratio=1.0)).verdict == "lr_too_high"


@pytest.mark.parametrize("half, verdict", [(T.converged - EPS, "lr_too_low"), (T.converged + EPS, "underfitting")])
def test_lr_too_low_on_a_straight_decline_even_when_its_end_flattens(half, verdict):
    # a cosine schedule flattens the end of a decline that never got anywhere
    progress = T.low_progress - EPS
    final = 2.3 * (1 - progress)
    q = healthy_quantities(tail_share=0.0, half_share=half, progress=progress, train_final=final,
                           val_final=final * 1.05)
    assert decide(q).verdict == verdict


@pytest.mark.parametrize("late, progress, verdict", [
    (T.late + EPS, T.low_progress - EPS, "lr_too_low"),
    (T.late + EPS, T.low_progress + EPS, "still_improving"),
    (T.late - EPS, T.low_progress - EPS, "underfitting"),
])
def test_lr_too_low_and_still_improving_by_the_share_of_the_last_fifth(late, progress, verdict):
    final = 2.3 * (1 - progress)
    q = healthy_quantities(tail_share=late, progress=progress, train_final=final, val_final=final * 1.05,
                           tail_drop=T.flat_tail + EPS)
    assert decide(q).verdict == verdict


@pytest.mark.parametrize("gain, verdict", [(T.gaining + EPS, "still_improving"), (T.gaining - EPS, "healthy")])
def test_still_improving_when_the_last_fifth_still_cuts_the_level(gain, verdict):
    assert decide(healthy_quantities(tail_drop=T.moving + EPS, tail_gain=gain)).verdict == verdict


@pytest.mark.parametrize("level, verdict", [(T.high + EPS, "underfitting"), (T.high - EPS, "healthy")])
def test_underfitting_when_the_training_loss_stays_near_the_guess(level, verdict):
    final = 2.3 * level
    q = healthy_quantities(train_final=final, val_final=final * (1 + T.close / 2), progress=1 - level)
    assert decide(q).verdict == verdict


@pytest.mark.parametrize("skill, verdict", [(T.skilled - EPS, "underfitting"), (T.skilled + EPS, "healthy")])
def test_underfitting_only_while_the_accuracy_is_not_far_past_chance(skill, verdict):
    final = 2.3 * 0.7  # 70% of the guess: label noise or a model too small, the curves cannot tell
    chance = 0.25
    q = healthy_quantities(train_final=final, val_final=final * 1.05, progress=0.3, classes=4, acc_chance=chance,
                           acc_final=chance + skill * (1 - chance))
    decision = decide(q)
    assert decision.verdict == verdict
    assert decision.numbers["accuracy_skill"] == pytest.approx(skill, abs=1e-4)
    if verdict == "healthy":  # and it says what it could not rule out
        assert "bigger model or less regularization" in decision.why


def test_with_the_class_count_unknown_the_accuracy_is_judged_from_two_classes():
    final = 2.3 * 0.7
    q = healthy_quantities(train_final=final, val_final=final * 1.05, progress=0.3, acc_final=0.7)
    assert decide(q).verdict == "underfitting"  # 0.7 is 40% of the way from 1/2 to 1
    assert decide(dataclasses.replace(q, acc_final=0.8)).verdict == "healthy"  # 60%
    assert decide(dataclasses.replace(q, acc_final=0.8, classes=10, acc_chance=0.1)).verdict == "healthy"


def test_underfitting_is_measured_against_the_chance_level_when_known():
    final = 1.0  # 43% of the start 2.3; against a chance level ln 2 it is above the guess
    q = healthy_quantities(train_final=final, val_final=final * 1.1, progress=1 - final / 2.3)
    assert decide(q).verdict == "underfitting"
    assert decide(dataclasses.replace(q, classes=100, chance_loss=math.log(100))).verdict == "underfitting"
    low = dataclasses.replace(q, train_final=0.3, val_final=0.33, progress=1 - 0.3 / 2.3)
    assert decide(low).verdict == "healthy"


def test_without_validation_it_cannot_tell_healthy_from_overfitting():
    decision = decide(healthy_quantities(val_final=None, val_best=None, val_rise=None, gap=None, gap_ratio=None,
                                         gap_share=None, val_points=0))
    assert decision.verdict is None and "without a validation loss" in decision.why


# -- the misses that motivated the definitions, as curves ---------------------------------------
def run_of(train: np.ndarray, val: np.ndarray | None = None, *, every: int = 10, **info) -> RunData:
    steps = np.arange(1, len(train) + 1)
    scalars = {"loss/train": Series(steps, train.astype(float))}
    if val is not None:
        scalars["loss/val"] = Series(steps[every - 1::every], val.astype(float))
    return RunData("r", None, scalars, hparams=info)


def test_an_explosion_that_settles_at_50x_the_start_is_diverged():
    rng = np.random.default_rng(0)
    train = np.concatenate([np.linspace(2.3, 1.2, 50), np.geomspace(1.2, 2.3e9, 20), np.geomspace(2.3e9, 115, 30),
                            115 + rng.normal(0, 2, 300)])
    decision = decide(quantities(measure(run_of(train, train[9::10] * 1.01, num_classes=10))))
    assert decision.verdict == "diverged", decision.why
    assert decision.numbers["final/start"] > 40


def test_a_memorizing_model_with_a_huge_gap_is_overfitting():
    steps = np.arange(1, 401)
    train = 2.3 * np.exp(-steps / 15) + 1e-8
    val = np.full(40, 2.0) * np.linspace(1.0, 0.95, 40)  # stays near where it started
    decision = decide(quantities(measure(run_of(train, val))))
    assert decision.verdict == "overfitting", decision.why


def test_stuck_at_chance_after_an_early_jump_is_a_bad_learning_rate_not_a_plateau():
    rng = np.random.default_rng(1)
    chance = math.log(10)
    train = np.concatenate([np.linspace(2.4, 40, 8), np.geomspace(40, chance, 12), chance + rng.normal(0, 0.01, 380)])
    decision = decide(quantities(measure(run_of(train, np.full(40, chance), num_classes=10))))
    assert decision.verdict == "lr_too_high", decision.why
    assert decision.numbers["final/guess"] == pytest.approx(1.0, abs=0.05)


def test_the_chance_level_is_found_from_the_config_or_two_agreeing_readings():
    steps = np.arange(1, 201)
    train = math.log(10) * np.exp(-steps / 50) + 0.1
    run = run_of(train)
    assert quantities(measure(run)).classes is None  # a loss alone: no C
    run.scalars["acc/train"] = Series(steps, np.linspace(0.1, 0.9, 200))
    q = quantities(measure(run))
    assert q.classes == 10 and q.chance_source.startswith("inferred")
    run.scalars["acc/train"] = Series(steps, np.linspace(0.5, 0.9, 200))  # 1/2 is not 1/10: they disagree
    assert quantities(measure(run)).classes is None
    assert quantities(measure(run), classes=7).chance_source == "classes=7 given"


def test_the_number_of_classes_can_be_given_to_the_command_and_the_live_doctor(tmp_path, capsys):
    from torch.utils.tensorboard import SummaryWriter

    from savegame.cli import main
    from savegame.doctor import Doctor

    with SummaryWriter(str(tmp_path / "run")) as w:
        for step in range(1, 201):
            w.add_scalar("loss/train", math.log(10) * math.exp(-step / 50) + 0.1, step)
            if step % 10 == 0:
                w.add_scalar("loss/val", math.log(10) * math.exp(-step / 50) + 0.15, step)
    assert main(["doctor", str(tmp_path), "--json", "--classes", "10"]) == 0
    [d] = json.loads(capsys.readouterr().out)
    assert d["quantities"]["classes"] == 10 and d["quantities"]["chance_source"] == "classes=10 given"
    assert d["decided_by"]  # the numbers behind the verdict, in the JSON
    with pytest.raises(SystemExit):
        main(["doctor", str(tmp_path), "--classes", "1"])
    assert "integer of 2 or more" in capsys.readouterr().err
    with pytest.raises(ValueError, match="Doctor\\(classes=...\\)"):
        Doctor(classes=1)


def test_half_share_tells_a_straight_decline_from_one_that_converged_early():
    steps = np.arange(1, 401)
    straight = 2.3 - 0.001 * steps
    early = 2.3 * np.exp(-steps / 30) + 0.2
    assert quantities(measure(run_of(straight, straight[9::10] + 0.01))).half_share == pytest.approx(0.5, abs=0.03)
    assert quantities(measure(run_of(early, early[9::10] + 0.01))).half_share > 0.95


@pytest.mark.parametrize("given_back, verdict", [(T.rise - EPS, "overfitting"), (T.rise + EPS, "lr_too_high")])
def test_a_gap_is_overfitting_only_while_the_training_loss_keeps_its_gain(given_back, verdict):
    # a training loss thrown back up beside a far higher, bouncing validation loss: steps too big
    final = 0.1 + given_back * (2.3 - 0.1)
    q = healthy_quantities(train_final=final, gap_share=T.gap_share * 2, gap_ratio=T.gap_ratio * 2,
                           val_bounce=T.bounce * 2)
    assert decide(q).verdict == verdict
