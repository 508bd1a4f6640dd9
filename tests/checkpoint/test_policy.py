"""Save policies (when to save) and keep policies (what to keep) in savegame.checkpoint.policy."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from savegame.checkpoint.policy import (
    AllOf,
    Always,
    AnyOf,
    EveryEpochs,
    EverySeconds,
    EverySteps,
    Keep,
    KeepAll,
    KeepAny,
    KeepBest,
    KeepEvery,
    KeepLast,
    KeepPolicy,
    MetricNotFoundError,
    Never,
    OnImprovement,
    SaveContext,
    SavePolicy,
    When,
    plan_deletions,
    ranking_of,
)


@dataclass(frozen=True)
class Ckpt:
    """A fake of store.CheckpointInfo: only what keep policies read."""

    step: int
    epoch: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)


def ctx(step: int = 0, **kw) -> SaveContext:
    return SaveContext(step=step, **kw)


def decide(policy: SavePolicy, context: SaveContext) -> bool:
    """What Run does: ask the policy, and when it says save, tell it the save was written."""
    save = policy.should_save(context)
    if save:
        policy.saved(context)
    return save


# --------------------------------------------------------------------------------------------
# When to save
# --------------------------------------------------------------------------------------------

def test_every_steps_saves_when_a_multiple_is_crossed_between_calls():
    p = EverySteps(500)
    assert p.should_save(ctx(1003, last_save_step=998))
    assert not p.should_save(ctx(1499, last_save_step=1003))
    assert p.should_save(ctx(1500, last_save_step=1003))


def test_every_steps_counts_from_step_zero_when_the_run_never_saved():
    p = EverySteps(500)
    assert not p.should_save(ctx(0))
    assert not p.should_save(ctx(499))
    assert p.should_save(ctx(500))


def test_every_epochs_saves_when_finished_epochs_cross_a_multiple():
    p = EveryEpochs(2)
    assert not p.should_save(ctx(epochs_done=1))
    assert p.should_save(ctx(epochs_done=2))
    assert not p.should_save(ctx(epochs_done=3, last_save_epochs_done=2))
    assert p.should_save(ctx(epochs_done=5, last_save_epochs_done=3))


@pytest.mark.parametrize("make", [EverySteps, EveryEpochs])
@pytest.mark.parametrize("n", [0, -3, 1.5, True])
def test_interval_policies_reject_n_that_is_not_a_positive_integer(make, n):
    expected = rf"{make.__name__} needs an integer n >= 1, but got n={n!r}"
    with pytest.raises(ValueError, match=expected):
        make(n)


def test_every_seconds_measures_from_its_first_call_then_from_the_last_save():
    p = EverySeconds(60)
    assert not p.should_save(ctx(now=1000.0))  # first call: the clock starts
    assert not p.should_save(ctx(now=1059.0))
    assert p.should_save(ctx(now=1060.0))
    assert not p.should_save(ctx(now=1100.0, last_save_time=1060.0))
    assert p.should_save(ctx(now=1120.0, last_save_time=1060.0))


@pytest.mark.parametrize("seconds", [0, -1.0, math.nan])
def test_every_seconds_rejects_a_non_positive_interval(seconds):
    with pytest.raises(ValueError, match="EverySeconds needs seconds > 0, but got seconds="):
        EverySeconds(seconds)


def test_on_improvement_saves_only_when_the_metric_beats_the_best_by_min_delta():
    p = OnImprovement("loss/val", min_delta=0.1)
    seen = [decide(p, ctx(metrics={"loss/val": v})) for v in (1.0, 0.95, 0.85, 0.9, 0.5)]
    assert seen == [True, False, True, False, True]


def test_on_improvement_in_max_mode_saves_on_a_higher_value():
    p = OnImprovement("acc/val", mode="max")
    seen = [decide(p, ctx(metrics={"acc/val": v})) for v in (0.5, 0.4, 0.5, 0.6)]
    assert seen == [True, False, False, True]


def test_on_improvement_never_counts_nan_as_an_improvement():
    p = OnImprovement("loss")
    seen = [decide(p, ctx(metrics={"loss": v})) for v in (math.nan, 2.0, math.nan, 1.0)]
    assert seen == [False, True, False, True]


def test_on_improvement_keeps_its_best_across_epochs_instead_of_resetting_it():
    # the seed reset its best loss every epoch and so saved a worse model in each new epoch
    p = OnImprovement("loss/val")
    assert decide(p, ctx(epoch=0, epochs_done=1, metrics={"loss/val": 0.3}))
    assert not decide(p, ctx(epoch=1, epochs_done=2, metrics={"loss/val": 0.4}))


def test_on_improvement_names_the_missing_metric_and_the_metrics_given():
    p = OnImprovement("loss/val")
    with pytest.raises(MetricNotFoundError) as info:
        p.should_save(ctx(metrics={"loss/train": 1.0, "acc/train": 0.5}))
    assert isinstance(info.value, KeyError)
    assert str(info.value).startswith("OnImprovement(metric='loss/val', mode='min', min_delta=0.0) "
                                      "needs metric 'loss/val', but the save got metrics "
                                      "['acc/train', 'loss/train'].")


def test_on_improvement_skips_a_save_call_that_passes_no_metrics_at_all():
    p = EverySteps(500) | OnImprovement("loss/val")
    assert not p.should_save(ctx(step=3, last_save_step=0))  # a mid-epoch run.save()
    assert p.should_save(ctx(step=12, last_save_step=0, metrics={"loss/val": 0.5}))


def test_on_improvement_rejects_an_unknown_mode_and_a_negative_min_delta():
    with pytest.raises(ValueError, match=r"OnImprovement needs mode='min'.* but got mode='lowest'"):
        OnImprovement("loss", mode="lowest")
    with pytest.raises(ValueError, match=r"needs min_delta >= 0, but got min_delta=-0.1"):
        OnImprovement("loss", min_delta=-0.1)


def test_on_improvement_starts_fresh_with_a_warning_when_the_saved_state_is_for_another_metric():
    old = OnImprovement("loss/val")
    old.should_save(ctx(metrics={"loss/val": 0.1}))
    new = OnImprovement("acc/val", mode="max")
    with pytest.warns(UserWarning, match="ignores a saved best for metric 'loss/val'"):
        new.load_state_dict(old.state_dict())
    assert new.best is None


def test_when_asks_the_predicate_with_the_save_context():
    late = When(lambda c: c.epoch >= 5)
    assert not late.should_save(ctx(epoch=4))
    assert late.should_save(ctx(epoch=5))
    with pytest.raises(TypeError, match="When needs a callable predicate"):
        When(5)


def test_always_saves_and_never_does_not():
    assert Always().should_save(ctx())
    assert not Never().should_save(ctx())


def test_or_and_and_build_one_flat_composite_per_operator():
    a, b, c = EverySteps(1), EveryEpochs(1), Never()
    assert (a | b | c).policies == (a, b, c)
    assert type(a | b | c) is AnyOf
    assert (a & b & c).policies == (a, b, c)
    assert type((a | b) & c) is AllOf and len(((a | b) & c).policies) == 2


def test_composites_reject_anything_but_save_policies():
    with pytest.raises(TypeError, match="AnyOf takes SavePolicy objects, but argument 1 is 500"):
        AnyOf(Always(), 500)
    with pytest.raises(ValueError, match="AllOf needs at least one policy"):
        AllOf()
    with pytest.raises(TypeError):
        Always() | 500


def test_all_of_stops_at_the_first_false_so_later_children_see_only_gated_calls():
    best = OnImprovement("loss/val")
    p = EveryEpochs(1) & best
    assert not decide(p, ctx(epochs_done=0, metrics={}))  # mid-epoch: metric not asked for
    assert decide(p, ctx(epochs_done=1, metrics={"loss/val": 0.5}))
    assert best.best == 0.5


def test_any_of_asks_every_child_so_on_improvement_sees_values_saved_by_another_child():
    best = OnImprovement("loss/val")
    p = Always() | best
    decide(p, ctx(metrics={"loss/val": 0.5}))
    assert best.best == 0.5


def test_on_improvement_moves_its_best_only_when_the_save_is_written():
    # a save that the policy asked for but that then failed (disk full) must not count as the
    # best, or the next, truly saved improvement would be skipped
    best = OnImprovement("loss/val")
    assert best.should_save(ctx(metrics={"loss/val": 0.5}))
    assert best.best is None
    assert best.should_save(ctx(metrics={"loss/val": 0.6}))  # 0.5 was never written
    best.saved(ctx(metrics={"loss/val": 0.6}))
    assert best.best == 0.6


def test_all_of_tells_every_child_of_a_save_even_those_it_did_not_ask():
    best = OnImprovement("loss/val")
    p = (best & Never()) | EverySteps(1)
    assert decide(p, ctx(1, last_save_step=0, metrics={"loss/val": 0.5}))
    assert best.best == 0.5


def test_stateless_policies_have_an_empty_state_and_composites_key_children_by_index():
    p = EverySteps(2) | (EveryEpochs(1) & OnImprovement("loss"))
    improvement = {"metric": "loss", "mode": "min", "best": None}
    assert p.state_dict() == {"0": {}, "1": {"0": {}, "1": improvement}}


def _simulate(policy: SavePolicy, values, *, start=0, last_step=None, last_epochs=None):
    """Calls should_save at steps start.. with one metric value each, like a manager would."""
    decisions, states = [], []
    for step, value in enumerate(values[start:], start=start):
        c = ctx(step, epoch=step // 4, epochs_done=(step + 1) // 4, metrics={"loss": value},
                last_save_step=last_step, last_save_epochs_done=last_epochs)
        save = decide(policy, c)
        decisions.append(save)
        if save:  # the lead stores policy state inside each checkpoint, after deciding
            last_step, last_epochs = c.step, c.epochs_done
            state = json.loads(json.dumps(policy.state_dict()))  # it travels in manifest.json
            states.append((step, last_step, last_epochs, state))
    return decisions, states


POLICIES = [
    lambda: OnImprovement("loss"),
    lambda: OnImprovement("loss", mode="max", min_delta=0.25),
    lambda: EverySteps(5) | OnImprovement("loss"),
    lambda: EveryEpochs(1) & OnImprovement("loss"),
    lambda: EverySteps(3) | (EveryEpochs(2) & OnImprovement("loss", mode="max")),
]


@settings(max_examples=200, deadline=None)
@given(
    make=st.sampled_from(POLICIES),
    values=st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, math.nan, -math.inf]), max_size=40),
    pick=st.integers(0, 100),
)
def test_a_resumed_policy_decides_like_an_uninterrupted_one(make, values, pick):
    straight, saves = _simulate(make(), values)
    if not saves:
        return
    step, last_step, last_epochs, state = saves[pick % len(saves)]
    resumed = make()  # a new process: fresh objects, state from the checkpoint
    resumed.load_state_dict(state)
    after, _ = _simulate(resumed, values, start=step + 1,
                         last_step=last_step, last_epochs=last_epochs)
    assert after == straight[step + 1:]


# --------------------------------------------------------------------------------------------
# What to keep
# --------------------------------------------------------------------------------------------

def test_keep_last_keeps_the_newest_by_step_whatever_the_order():
    assert KeepLast(2).keep([Ckpt(30), Ckpt(10), Ckpt(20)]) == {20, 30}
    assert KeepLast(5).keep([Ckpt(1)]) == {1}
    assert KeepLast(1).keep([]) == set()


def test_keep_best_skips_missing_and_nan_and_breaks_ties_by_the_newer_step():
    cps = [Ckpt(1, metrics={"loss": 0.5}), Ckpt(2, metrics={}), Ckpt(3, metrics={"loss": math.nan}),
           Ckpt(4, metrics={"loss": 0.5}), Ckpt(5, metrics={"loss": 0.9})]
    assert KeepBest(1, "loss").keep(cps) == {4}
    assert KeepBest(2, "loss").keep(cps) == {1, 4}
    assert KeepBest(10, "loss").keep(cps) == {1, 4, 5}
    assert KeepBest(1, "loss", mode="max").keep(cps) == {5}


def test_keep_every_keeps_the_first_checkpoint_of_each_bucket_even_off_the_multiples():
    cps = [Ckpt(s, epoch=s // 100) for s in (40, 90, 130, 260, 290, 1010)]
    assert KeepEvery(steps=100).keep(cps) == {40, 130, 260, 1010}
    assert KeepEvery(epochs=2).keep(cps) == {40, 260, 1010}


def test_keep_every_needs_exactly_one_of_steps_and_epochs():
    with pytest.raises(ValueError, match=r"KeepEvery needs exactly one of steps=\.\.\. or "
                                         r"epochs=\.\.\., but got steps=None, epochs=None"):
        KeepEvery()
    with pytest.raises(ValueError, match="but got steps=10, epochs=2"):
        KeepEvery(steps=10, epochs=2)
    with pytest.raises(ValueError, match="KeepEvery needs an integer epochs >= 1, but got epochs=0"):
        KeepEvery(epochs=0)


def test_keep_policies_reject_bad_arguments_with_the_rule_and_the_value():
    with pytest.raises(ValueError, match="KeepLast needs an integer n >= 1, but got n=0"):
        KeepLast(0)
    with pytest.raises(ValueError, match="KeepBest needs an integer k >= 1, but got k=-1"):
        KeepBest(-1, "loss")
    with pytest.raises(ValueError, match="KeepBest needs mode='min'.*but got mode='best'"):
        KeepBest(1, "loss", mode="best")
    with pytest.raises(TypeError, match="KeepAny takes KeepPolicy objects, but argument 0 is 3"):
        KeepAny(3)


def test_keep_all_and_the_union_operator():
    cps = [Ckpt(1), Ckpt(2), Ckpt(3)]
    assert KeepAll().keep(cps) == {1, 2, 3}
    assert (KeepLast(1) | KeepEvery(steps=2) | KeepLast(2)).keep(cps) == {1, 2, 3}
    assert len((KeepLast(1) | KeepLast(2) | KeepAll()).policies) == 3


def test_keep_factory_builds_the_union_of_the_parts_asked_for():
    assert Keep() == KeepLast(3)
    p = Keep(last=2, best=3, metric="loss/val", every_steps=1000, every_epochs=10)
    assert p.policies == (KeepLast(2), KeepBest(3, "loss/val"),
                          KeepEvery(steps=1000), KeepEvery(epochs=10))
    assert Keep(last=None, metric="acc/val", mode="max") == KeepBest(1, "acc/val", mode="max")


def test_keep_factory_explains_how_to_fix_bad_arguments():
    with pytest.raises(ValueError, match=r'Keep\(best=3\) ranks checkpoints by a metric, but got '
                                         r'metric=None\. .*Keep\(best=3, metric="loss/val"\)'):
        Keep(best=3)
    with pytest.raises(ValueError, match="keeps nothing but the newest checkpoint. Pass last=1"):
        Keep(last=None)
    with pytest.raises(ValueError, match="KeepLast needs an integer n >= 1, but got n=0"):
        Keep(last=0)
    with pytest.raises(ValueError, match="Keep needs mode='min'"):
        Keep(mode="up")
    with pytest.raises(TypeError):
        Keep(2)  # keyword-only


def test_plan_deletions_spares_the_newest_and_the_protected_and_lists_oldest_first():
    cps = [Ckpt(s) for s in (50, 10, 40, 20, 30)]
    gone = plan_deletions(cps, KeepBest(1, "loss"), protected=[20])
    assert [c.step for c in gone] == [10, 30, 40]
    assert plan_deletions([], KeepLast(1)) == []


# --------------------------------------------------------------------------------------------
# Which policy ranks "best": KeepPolicy.ranking()
# --------------------------------------------------------------------------------------------

def test_keep_best_and_the_keep_factory_rank_by_their_metric_and_the_others_rank_nothing():
    assert KeepBest(2, "acc", mode="max").ranking() == ("acc", "max")
    assert Keep(last=2, best=1, metric="loss/val").ranking() == ("loss/val", "min")
    assert Keep(last=1, metric="acc", mode="max", every_epochs=5).ranking() == ("acc", "max")
    for policy in (KeepLast(3), KeepAll(), KeepEvery(steps=100), Keep(last=3), KeepLast(1) | KeepAll()):
        assert policy.ranking() is None and ranking_of(policy) is None


def test_a_union_ranks_by_its_first_member_that_ranks():
    assert (KeepLast(1) | KeepBest(1, "a") | KeepBest(1, "b", mode="max")).ranking() == ("a", "min")
    assert KeepAny(KeepAll(), KeepAny(KeepEvery(epochs=1), KeepBest(1, "b", mode="max"))).ranking() == ("b", "max")


class KeepBestLate(KeepPolicy):
    """A user's policy: the best by loss/val among the checkpoints from step 100 on."""

    def keep(self, checkpoints):
        return KeepBest(1, "loss/val").keep([c for c in checkpoints if c.step >= 100])

    def ranking(self):
        return ("loss/val", "min")


class KeepAboveThreshold(KeepPolicy):
    """A user's policy with a ``metric`` attribute that is no ranking: it says so."""

    def __init__(self, metric):
        self.metric = metric

    def keep(self, checkpoints):
        return {c.step for c in checkpoints if c.metrics.get(self.metric, 0) > 0.9}

    def ranking(self):
        return None


class OldStyle(KeepPolicy):
    """A user's policy written before ranking() existed: its metric/mode attributes rank, as they did."""

    metric, mode = "acc", "max"

    def keep(self, checkpoints):
        return set()


def test_a_user_policy_takes_part_in_best_through_ranking_or_says_it_does_not():
    assert ranking_of(KeepBestLate()) == ("loss/val", "min")
    assert (KeepLast(2) | KeepBestLate()).ranking() == ("loss/val", "min")
    assert ranking_of(KeepAboveThreshold("acc")) is None
    assert (KeepAboveThreshold("acc") | KeepBest(1, "loss")).ranking() == ("loss", "min")
    assert OldStyle().ranking() == ("acc", "max") and (KeepLast(1) | OldStyle()).ranking() == ("acc", "max")


def test_ranking_of_reads_duck_typed_policies_and_rejects_a_malformed_ranking():
    class Duck:  # no KeepPolicy: only keep() and the attributes savegame read before ranking()
        metric, mode = "loss", "max"

        def keep(self, checkpoints):
            return set()

    assert ranking_of(Duck()) == ("loss", "max")
    assert ranking_of(object()) is None

    class Bad(KeepBestLate):
        def ranking(self):
            return ("loss/val", "lowest")

    with pytest.raises(ValueError, match=r"ranking\(\) must return None or \(metric, mode\).*'lowest'"):
        ranking_of(Bad())


# --------------------------------------------------------------------------------------------
# Properties of keep policies over random checkpoint lists
# --------------------------------------------------------------------------------------------

metric_values = st.one_of(st.none(), st.just(math.nan), st.sampled_from([0.0, 0.25, 0.5, 1.0]),
                          st.floats(-10, 10))


@st.composite
def checkpoint_lists(draw, max_size=25):
    steps = draw(st.lists(st.integers(0, 5_000), unique=True, max_size=max_size))
    out = []
    for step in steps:
        value = draw(metric_values)
        metrics = {} if value is None else {"loss": value}
        out.append(Ckpt(step, epoch=draw(st.integers(0, 50)), metrics=metrics))
    return out


keep_policies = st.one_of(
    st.builds(KeepLast, st.integers(1, 6)),
    st.builds(KeepBest, st.integers(1, 6), st.just("loss"), mode=st.sampled_from(["min", "max"])),
    st.builds(KeepEvery, steps=st.integers(1, 2_000)),
    st.builds(KeepEvery, epochs=st.integers(1, 20)),
    st.just(KeepAll()),
    st.builds(Keep, last=st.one_of(st.none(), st.integers(1, 4)), best=st.integers(1, 4),
              metric=st.just("loss"), every_steps=st.one_of(st.none(), st.integers(1, 2_000))),
)


def _value(c: Ckpt) -> float | None:
    v = c.metrics.get("loss")
    return None if v is None or math.isnan(v) else v


@settings(max_examples=300, deadline=None)
@given(cps=checkpoint_lists(), policy=keep_policies, data=st.data())
def test_plan_deletions_splits_the_checkpoints_into_kept_and_deleted(cps, policy, data):
    steps = {c.step for c in cps}
    protected = set()
    if steps:
        protected = set(data.draw(st.lists(st.sampled_from(sorted(steps)), max_size=2)))
    gone = plan_deletions(cps, policy, protected=protected)
    gone_steps = [c.step for c in gone]
    kept = steps - set(gone_steps)
    assert gone_steps == sorted(gone_steps)
    assert kept == (policy.keep(cps) | protected | {max(steps, default=None)}) & steps
    assert not set(gone_steps) & policy.keep(cps)
    assert set(gone_steps) | kept == steps
    assert not protected & set(gone_steps)
    if steps:
        assert max(steps) in kept
    # applying it twice changes nothing: the second plan deletes nothing
    assert plan_deletions([c for c in cps if c.step in kept], policy, protected=protected) == []


@given(cps=checkpoint_lists(), n=st.integers(1, 30))
def test_keep_last_keeps_exactly_the_min_n_len_newest(cps, n):
    assert KeepLast(n).keep(cps) == set(sorted(c.step for c in cps)[::-1][:n])


@given(cps=checkpoint_lists(), k=st.integers(1, 8), mode=st.sampled_from(["min", "max"]))
def test_keep_best_keeps_the_true_top_k_of_the_checkpoints_having_the_metric(cps, k, mode):
    ranked = [c for c in cps if _value(c) is not None]
    kept = KeepBest(k, "loss", mode=mode).keep(cps)
    assert len(kept) == min(k, len(ranked))
    sign = 1 if mode == "min" else -1
    for x in (c for c in ranked if c.step in kept):
        for y in (c for c in ranked if c.step not in kept):
            vx, vy = sign * _value(x), sign * _value(y)
            assert vx < vy or (vx == vy and x.step > y.step)


@given(cps=checkpoint_lists(), a=keep_policies, b=keep_policies)
def test_the_union_keeps_exactly_what_either_part_keeps(cps, a, b):
    assert (a | b).keep(cps) == a.keep(cps) | b.keep(cps)
    assert KeepAny(a, b).keep(cps) == a.keep(cps) | b.keep(cps)


@settings(max_examples=200, deadline=None)
@given(
    cps=checkpoint_lists(max_size=40),
    last=st.integers(1, 4),
    best=st.integers(1, 4),
    every=st.one_of(st.none(), st.integers(200, 2_000)),
    mode=st.sampled_from(["min", "max"]),
    protect_first=st.booleans(),
)
def test_a_run_that_prunes_after_each_save_stays_bounded_and_keeps_the_best_so_far(
    cps, last, best, every, mode, protect_first
):
    policy = Keep(last=last, best=best, metric="loss", mode=mode, every_steps=every)
    arrivals = sorted(cps, key=lambda c: c.step)
    # a run resumed from its first checkpoint protects it
    protected = {arrivals[0].step} if protect_first and arrivals else set()
    sign = 1 if mode == "min" else -1
    on_disk: list[Ckpt] = []
    for i, new in enumerate(arrivals):
        on_disk.append(new)
        gone = {c.step for c in plan_deletions(on_disk, policy, protected=protected)}
        on_disk = [c for c in on_disk if c.step not in gone]
        ever = arrivals[: i + 1]
        milestones = len({c.step // every for c in ever}) if every else 0
        assert len(on_disk) <= last + best + milestones + 1
        assert new in on_disk
        scored = [c for c in ever if _value(c) is not None]
        if scored:
            best_so_far = min(scored, key=lambda c: (sign * _value(c), -c.step))
            assert best_so_far in on_disk
