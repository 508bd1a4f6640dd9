"""The verdicts as definitions over a run's named quantities (``quantities.py``), the way a person
states them, each with the numbers that decided it.

``docs/doctor.md`` says the same in prose; every threshold is a field of :class:`Thresholds`, so
an evaluation can tune them on some families of runs and judge on others. The guess level is
the chance-level loss ``ln C`` when C is known, else the starting loss (an untrained classifier
starts at about ``ln C``; a regressor at about the targets' variance, the loss of predicting 0).

In order, the first that holds wins:

1. **diverged**: the loss ends NaN/inf, or ends at least ``exploded`` x its start and
   ``exploded_over_best`` x its own best, or it had learned (down to ``learned`` x its start),
   then jumped to ``jump`` x its start and ended back at the guess level: it lost what it learned.
2. **lr_too_high** (a jump): the loss jumped to ``jump`` x its start or more before it had
   learned, and ended back at the guess level (``at_guess`` x it or more): the first steps threw
   the weights where they predict nothing better than a guess.
3. **overfitting** (the gap; needs validation): the validation loss ends ``memorized`` x the
   training loss or more with a gap of a third of ``gap_share`` of the start (the training data
   were memorized), or ``gap_ratio`` x it with a gap of ``gap_share`` of the start, while the
   training loss kept what it gained (gave back less than ``rise`` of it). Tried before the
   noise: a validation loss far above training that also bounces is a memorizing model.
4. **lr_too_high** (noise): the validation loss bounces (its path is ``bounce`` x the shortest
   path from its start down to its best and on to its end, with jumps between evaluations of
   ``val_jump`` of the start on average over its second half), or over the second half the
   training loss swings ``noisy`` of its level around its trend, jumps ``swing`` of its start,
   made little progress in its last fifth, and the validation loss shows it (rose ``val_jump``
   of the start from its best, or jumps that much): batches that swing beside a smooth
   validation loss are batch noise, not steps too big.
5. **plateau**: the validation loss removed less than half of ``stuck`` of its start while the
   training loss removed less than ``slow`` (without validation: the loss removed less than
   ``stuck``, or less than ``slow`` with nothing more in its last fifth): it learned nothing
   that generalizes. A loss that moves, however slowly, is not a plateau.
6. **overfitting** (a rise; needs validation): the validation loss gave back ``rise`` of what it
   had gained from its best, and ``rise_share`` of the start, while the training loss kept
   falling (by ``still_fitting`` of the start or more) and stayed below it. A validation loss
   that rises with the training loss is no memorization.
7. **lr_too_low**: the loss removed less than ``low_progress`` of its start, on a decline still
   going (the last fifth made ``late`` of the drop or more) or straight (its first half made less
   than ``converged`` of the drop): the steps are too small to get anywhere.
8. **still_improving**: the last fifth still made ``late`` of the drop or more, or it removed
   ``moving`` of the start and cut ``gaining`` off the level the validation loss ends at: more
   training would still pay.
9. **underfitting** (needs validation): the final training loss is ``high`` of the guess level or
   more, validation is within ``close`` of it, and the accuracy, where one is logged, is less
   than ``skilled`` of the way from chance to perfect (with the class count unknown, from 1/2).
   The curves cannot tell a floor set by the data (wrong labels, overlapping classes) from a
   model too small for it; an accuracy well past chance decides for the data.
10. **healthy** (needs validation): none of the above (its evidence says when the loss stays
   high beside a good accuracy); without a validation loss the doctor says it cannot tell
   healthy from overfitting instead of guessing.

>>> from savegame.doctor.quantities import Quantities
>>> q = Quantities(start=2.3, peak=2.4e9, peak_step=40, best_before_peak=1.0, train_best=0.9, train_final=115.0, val_best=None,
...                val_best_step=None, val_final=None, val_rise=None, train_fall_after=None, gap=None, gap_ratio=None, gap_share=None,
...                progress=-49.0, val_progress=None, tail_drop=0.0, tail_share=None, tail_gain=0.0, noise=0.01, val_bounce=None, val_jump=None, swing=0.01, nonfinite=0,
...                ends_nonfinite=False, first_nonfinite_step=None, classes=10, chance_loss=2.303,
...                chance_source="num_classes=10 in the run config", final_over_chance=49.9, acc_final=0.1,
...                acc_chance=0.1, train_points=300, val_points=0)
>>> decision = decide(q)
>>> decision.verdict, decision.numbers["final/start"]
('diverged', 50.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Collection

from .quantities import Quantities

__all__ = ["Thresholds", "Decision", "decide", "DEFAULT"]


@dataclass(frozen=True)
class Thresholds:
    """Every number the definitions compare against (see the module docstring)."""

    exploded: float = 1.5
    exploded_over_best: float = 3.0
    jump: float = 3.0
    learned: float = 0.5
    at_guess: float = 0.85
    stuck: float = 0.08
    slow: float = 0.2
    flat_tail: float = 0.02
    noisy: float = 0.4
    bounce: float = 1.5
    val_jump: float = 0.01
    swing: float = 0.05
    rise: float = 0.25
    rise_share: float = 0.05
    still_fitting: float = 0.02
    gap_share: float = 0.3
    gap_ratio: float = 2.0
    memorized: float = 20.0
    late: float = 0.12
    converged: float = 0.75
    gaining: float = 0.1
    moving: float = 0.02
    low_progress: float = 0.35
    high: float = 0.2
    skilled: float = 0.5
    close: float = 0.25


DEFAULT = Thresholds()


@dataclass
class Decision:
    """A verdict (None: the logs cannot support one, ``why`` says why), the quantities that
    decided it by name, one sentence that states the definition with them, and a confidence:
    0.9 where the numbers are far past their thresholds, less near them."""

    verdict: str | None
    why: str
    numbers: dict[str, float] = field(default_factory=dict)
    confidence: float = 0.8


def decide(q: Quantities, t: Thresholds = DEFAULT, *, among: Collection[str] | None = None) -> Decision:
    """The first definition that holds for ``q`` (see the module docstring for the order), of the
    verdicts ``among`` (default: all; a user's verdict that replaces a built-in one takes its
    definition out)."""
    guess = q.chance_loss if q.chance_loss else q.start
    guess_name = f"the chance level ln {q.classes}" if q.chance_loss else "the starting loss"
    best = min(v for v in (q.train_best, q.val_best, q.start) if v is not None)
    final = _main_final(q)
    for definition in (_diverged, _jumped, _gap, _noisy, _plateau, _overfitting, _too_slow, _still_improving,
                       _underfitting, _healthy):
        found = definition(q, t, final=final, best=best, guess=guess, guess_name=guess_name)
        if found is not None and (among is None or found.verdict is None or found.verdict in among):
            return found
    return Decision(None, "no built-in definition holds (a verdict of your own replaced the one that did)")


def _main_final(q: Quantities) -> float:
    return q.train_final if q.train_final is not None else q.val_final


def _margin(value: float, threshold: float) -> float:
    """0.6 at the threshold, 0.9 at twice it (or more)."""
    return 0.6 + 0.3 * min(1.0, max(0.0, value / threshold - 1.0)) if threshold > 0 else 0.8


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.inf


def _diverged(q, t, *, final, best, **_) -> Decision | None:
    if q.ends_nonfinite:
        return Decision("diverged", f"the loss ends NaN/inf (first at step {q.first_nonfinite_step:,})",
                        {"nonfinite": q.nonfinite, "first_nonfinite_step": q.first_nonfinite_step}, 0.95)
    over_start, over_best = _ratio(final, q.start), _ratio(final, best)
    if q.start > 0 and over_start >= t.exploded and over_best >= t.exploded_over_best:
        return Decision("diverged", f"the loss ends at {over_start:.3g}x its start and {over_best:.3g}x its best",
                        {"final/start": round(over_start, 3), "final/best": round(over_best, 3),
                         "peak/start": round(_ratio(q.peak, q.start), 3)}, _margin(over_start, t.exploded))
    return None


def _jumped(q, t, *, final, guess, guess_name, **_) -> Decision | None:
    jump = _ratio(q.peak, q.start)
    if q.start > 0 and jump >= t.jump and final >= t.at_guess * guess:
        if q.best_before_peak <= t.learned:
            return Decision("diverged", f"the loss came down to {q.best_before_peak:.2f}x its start, then jumped to "
                            f"{jump:.3g}x it (step {q.peak_step:,}) and ended at {final / guess:.2f}x {guess_name}: "
                            "it lost what it had learned", {"best_before_peak/start": round(q.best_before_peak, 4),
                                                            "peak/start": round(jump, 3),
                                                            "final/guess": round(final / guess, 3)})
        return Decision("lr_too_high", f"the loss jumped to {jump:.3g}x its start (step {q.peak_step:,}) and ended "
                        f"at {final / guess:.2f}x {guess_name}: the step threw the weights to a guess",
                        {"peak/start": round(jump, 3), "final/guess": round(final / guess, 3)})
    return None


def _plateau(q, t, **_) -> Decision | None:
    if q.val_progress is not None:  # a validation loss that never moved: nothing that generalizes was learned
        stuck = q.val_progress < t.stuck / 2 and q.progress < t.slow
    else:
        stuck = q.progress < t.stuck or (q.progress < t.slow and q.tail_drop < t.flat_tail)
    if stuck:
        val = f", the validation loss {q.val_progress:.1%}" if q.val_progress is not None else ""
        return Decision("plateau", f"the loss removed {q.progress:.1%} of its start, {q.tail_drop:.1%} in its "
                        f"last fifth{val}: it never learned", {"progress": round(q.progress, 4),
                                                                "tail_drop": round(q.tail_drop, 4),
                                                                "val_progress": q.val_progress})
    return None


def _gap(q, t, **_) -> Decision | None:
    """Overfitting by the textbook definition, tried before the noise: a bouncing validation loss far
    above the training loss is a memorizing model, not steps too big."""
    if q.gap_ratio is None or q.gap_share is None:
        return None
    if q.train_best is not None and q.train_final is not None and q.start > q.train_best \
            and (q.train_final - q.train_best) / (q.start - q.train_best) > t.rise:
        return None  # the training loss gave back its gain too: thrown around, not fitting ever closer
    numbers = {"gap": q.gap, "gap_ratio": round(q.gap_ratio, 3), "gap/start": round(q.gap_share, 4)}
    best = f"; the validation loss was lowest at step {q.val_best_step:,} ({q.val_best:.4g})" \
        if q.val_best_step is not None and q.val_best is not None else ""
    if q.gap_ratio >= t.memorized and q.gap_share >= t.gap_share / 3:
        return Decision("overfitting", f"the validation loss ends {q.gap_ratio:.3g}x the training loss (a gap of "
                        f"{q.gap_share:.0%} of the starting loss): the training data were memorized{best}", numbers,
                        _margin(q.gap_ratio, t.memorized))
    if q.gap_share >= t.gap_share and q.gap_ratio >= t.gap_ratio:
        return Decision("overfitting", f"the validation loss ends {q.gap_ratio:.3g}x the training loss, a gap of "
                        f"{q.gap_share:.0%} of the starting loss{best}", numbers, _margin(q.gap_share, t.gap_share))
    return None


def _noisy(q, t, **_) -> Decision | None:
    if q.val_bounce is not None and q.val_bounce >= t.bounce and q.val_jump is not None and q.val_jump >= t.val_jump:
        return Decision("lr_too_high", f"the validation loss bounces: its path is {q.val_bounce:.3g}x the shortest "
                        f"one from its start to its best and its end, jumps of {q.val_jump:.1%} of the start",
                        {"val_bounce": round(q.val_bounce, 3), "val_jump": round(q.val_jump, 4)},
                        _margin(q.val_bounce, t.bounce))
    settled = q.tail_share is None or q.tail_share < t.late
    # batches that swing while the validation loss stays smooth are batch noise, not steps too big
    shows = q.val_final is None or _val_rise_share(q) >= t.val_jump or (q.val_jump or 0.0) >= t.val_jump
    if q.noise >= t.noisy and q.swing >= t.swing and settled and shows:
        return Decision("lr_too_high", f"the loss swings {q.noise:.0%} of its level around its trend (jumps of "
                        f"{q.swing:.0%} of its start) instead of settling",
                        {"noise": round(q.noise, 4), "swing": round(q.swing, 4)})
    return None


def _overfitting(q, t, **_) -> Decision | None:
    if q.val_final is None:
        return None
    fitting = q.train_fall_after is not None and q.train_fall_after >= t.still_fitting \
        and (q.gap_ratio is None or q.gap_ratio > 1.0)
    if q.val_rise is not None and q.val_rise >= t.rise and _val_rise_share(q) >= t.rise_share and fitting:
        return Decision("overfitting", f"the validation loss rose from its best {q.val_best:.4g} (step "
                        f"{q.val_best_step:,}) to {q.val_final:.4g}, giving back {q.val_rise:.0%} of its gain",
                        {"val_best": q.val_best, "val_final": q.val_final, "val_rise": round(q.val_rise, 4),
                         "(val_final-val_best)/start": round(_val_rise_share(q), 4),
                         "train_fall_after": round(q.train_fall_after, 4)})
    return None


def _too_slow(q, t, **_) -> Decision | None:
    straight = q.half_share is not None and q.half_share < t.converged
    if q.progress < t.low_progress and ((q.tail_share is not None and q.tail_share >= t.late) or straight):
        shape = (f"{q.half_share:.0%} of that in its first half: a straight decline" if straight
                 else f"{q.tail_share:.0%} of that in the last fifth")
        return Decision("lr_too_low", f"a slow decline: {q.progress:.0%} of the start removed, {shape}",
                        {"progress": round(q.progress, 4),
                         "tail_share": round(q.tail_share, 4) if q.tail_share is not None else None,
                         "half_share": round(q.half_share, 4) if q.half_share is not None else None})
    return None


def _still_improving(q, t, **_) -> Decision | None:
    if (q.tail_share is not None and q.tail_share >= t.late) or (q.tail_drop >= t.moving and q.tail_gain >= t.gaining):
        return Decision("still_improving", f"the last fifth still made {q.tail_share or 0:.0%} of the drop and cut "
                        f"{q.tail_gain:.0%} off the level it ends at",
                        {"tail_share": round(q.tail_share or 0.0, 4), "tail_drop": round(q.tail_drop, 4),
                         "tail_gain": round(q.tail_gain, 4)})
    return None


def _underfitting(q, t, *, guess, guess_name, **_) -> Decision | None:
    if q.train_final is None or q.val_final is None:
        return None
    level = q.train_final / guess
    apart = abs(q.val_final - q.train_final) / q.train_final if q.train_final > 0 else math.inf
    skill = _skill(q)
    if level >= t.high and apart <= t.close and (skill is None or skill < t.skilled):
        numbers = {"train_final/guess": round(level, 4), "val-train/train": round(apart, 4)}
        accuracy = ""
        if skill is not None:
            numbers["accuracy_skill"] = round(skill, 4)
            accuracy = f", the accuracy {q.acc_final:.0%} only {skill:.0%} of the way from chance to perfect"
        return Decision("underfitting", f"converged with the training loss at {level:.0%} of {guess_name} and "
                        f"validation within {apart:.0%} of it{accuracy}", numbers)
    return None


def _val_rise_share(q: Quantities) -> float:
    """What the validation loss rose from its best to its end, against the starting loss."""
    if q.val_final is None or q.val_best is None or not q.start:
        return 0.0
    return (q.val_final - q.val_best) / abs(q.start)


def _skill(q: Quantities) -> float | None:
    """The accuracy's way from chance (0) to perfect (1), where an accuracy is logged; with the
    class count unknown, its least value over every count (two classes: chance 1/2)."""
    if q.acc_final is None:
        return None
    chance = q.acc_chance if q.acc_chance is not None and q.acc_chance < 1 else 0.5
    return (q.acc_final - chance) / (1 - chance)


def _healthy(q, t, *, guess, guess_name, **_) -> Decision:
    if q.val_final is None:
        return Decision(None, f"the training loss converged ({q.progress:.0%} of its start removed), but without "
                        "a validation loss healthy cannot be told from overfitting; log one (e.g. loss/val)",
                        {"progress": round(q.progress, 4)})
    numbers = {"progress": round(q.progress, 4), "gap/start": round(q.gap_share, 4) if q.gap_share is not None else None}
    why = f"converged: {q.progress:.0%} of the start removed, the last fifth flat, validation close to training"
    level, skill = (q.train_final / guess if q.train_final is not None and guess else 0.0), _skill(q)
    if level >= t.high and skill is not None:
        # the curves cannot tell a floor set by the data (wrong labels, overlapping classes) from a model
        # too small or too regularized for it; an accuracy well past chance decides for the data, and says so
        numbers.update({"train_final/guess": round(level, 4), "accuracy_skill": round(skill, 4)})
        why += (f"; the training loss stays at {level:.0%} of {guess_name}, but the accuracy {q.acc_final:.0%} is "
                f"{skill:.0%} of the way from chance to perfect: if the labels are clean and the classes separable, "
                "a bigger model or less regularization may still do better")
    return Decision("healthy", why, numbers)
