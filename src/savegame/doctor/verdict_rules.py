"""The built-in verdicts: each one's rule and, right below it, its :class:`Verdict` row.

Whether a built-in verdict holds is decided by its definition over the run's named quantities
(``definitions.py`` over ``quantities.py``, computed once per run and kept on the ``Curves`` as
``c.decision``): a rule here holds when the decision names it, and then fills the diagnosis
with what a person needs: the definition with its numbers (the evidence), the marks the plots
draw, and the suggestions that depend on the run. The training signals (``doctor/...`` tags,
``signals.py``) add evidence where a run has them.

Each verdict is in ONE place, here: its rule and its row (its place in the order, whether the
live doctor warns, its colours, what it means, its fixed suggestions), gathered in
:data:`BUILTIN`. Everything else (the rules engine, the terminal table, the report, the live
doctor, ``--json``, ``verdicts.py``) reads that tuple; ``test_user_rules.py`` checks that
docs/doctor.md describes every verdict in it, and ``definitions.py`` defines it.

>>> import numpy as np
>>> from savegame.doctor.curves import RunData, Series
>>> from savegame.doctor.rules import diagnose
>>> steps = np.arange(1, 101)
>>> run = RunData("r", None, {"loss/train": Series(steps, np.full(100, 0.7))})
>>> d = diagnose(run)
>>> d.verdict, d.evidence[0].startswith("the loss removed 0.0% of its start")
('plateau', True)
"""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np

from ._base import Curves, Verdict
from .curves import RunData, Series
from .diagnosis import Diagnosis
from .features import CurveFeatures
from .quantities import tail_start
from .signals_read import DEAD_RELU, VANISHING

__all__ = ["diverged", "plateau", "lr_too_high", "overfitting", "lr_too_low", "underfitting", "still_improving",
           "healthy", "BUILTIN", "HEALTHY", "OVERFITTING", "UNDERFITTING", "DIVERGED", "PLATEAU", "LR_TOO_HIGH",
           "LR_TOO_LOW", "STILL_IMPROVING"]

MIN_POINTS = 5             # fewer finite points than this: cannot judge a trend
NOISY = 0.25               # a "noisy" finding (rules.py) from here ...
MIN_SWING = 0.05           # ... only when the jumps are also this share of the starting loss
HEALTHY_UPDATE = (1e-4, 1e-2)  # cs231n: update/weight ratios around 1e-3 are healthy


def _decided(d: Diagnosis, c: Curves, name: str) -> bool:
    """Whether the run's decision is ``name``; if so, its definition and numbers open the evidence."""
    decision = c.decision
    if decision is None or decision.verdict != name:
        return False
    d.evidence.append(decision.why)
    d.decided_by = dict(decision.numbers)
    d.confidence = decision.confidence
    d.marks.region, d.marks.region_label = _region(c, name)
    return True


def _region(c: Curves, name: str) -> tuple[tuple[int, int] | None, str | None]:
    """The steps the deciding numbers were read from, and what they say there."""
    main = c.main
    first, last = int(main.steps[0]), int(main.steps[-1])
    tail = tail_start(main)
    q = c.quantities
    if name == "overfitting" and c.val is not None:
        return (c.val.low_step, int(c.val.steps[-1])), "validation past its best"
    if name == "diverged":  # to the last step logged, NaN included
        start = q.first_nonfinite_step if q.first_nonfinite_step is not None else main.low_step
        return (start, max(int(c.main_series.steps[-1]), last, start)), "the loss blew up"
    if name == "lr_too_high" and q.peak_step and q.peak / max(q.start, 1e-30) >= 3:
        return (first, q.peak_step), "the jump"
    if name == "lr_too_high":
        return (int(first + 0.5 * (last - first)), last), "swings around the trend"
    return (tail, last), {"plateau": "flat", "lr_too_low": "still falling slowly",
                          "still_improving": "still falling", "underfitting": "flat, high",
                          "healthy": "flat"}.get(name, "the end")


def diverged(d: Diagnosis, c: Curves) -> bool:
    if not _decided(d, c, "diverged"):
        return False
    main = c.main
    bad = _first_nonfinite(c)
    if bad is not None:
        step, name, features = bad
        d.marks.diverged_step = step
        d.evidence.append(f"{name} became NaN/inf at step {step:,} and stayed so, after falling to "
                          f"{features.low:.4g} (smoothed) at step {features.low_step:,}")
    else:
        d.marks.diverged_step = _first_step_above(main, max(main.start, 3 * main.low))
        d.evidence.append(f"the loss fell to {main.low:.4g} (smoothed) at step {main.low_step:,}, then rose from "
                          f"step {d.marks.diverged_step:,} to {main.end:.4g} at the end (it started at "
                          f"{main.start:.4g})")
    if c.signals.grad_growth is not None and c.signals.grad_growth > 100:
        d.evidence.append(f"gradient norm grew {c.signals.grad_growth:.3g}x during the run")
    d.marks.low_step, d.marks.low_value = _low(c)
    best = d.best_checkpoint
    before = (f" (the run's best checkpoint, step {best['step']:,}, is one: Run(..., resume={best['step']}))"
              if best is not None and best["step"] < d.marks.diverged_step else "")
    d.suggestions.append(f"resume from a checkpoint before step {d.marks.diverged_step:,}{before} with a lower "
                         "learning rate (try 1/3 to 1/10 of it) or a warmup")
    return True


DIVERGED = Verdict(
    name="diverged", rule=diverged, order=100, alarm=True, colour="#b71c1c", style="bold red",
    description="the loss became NaN/inf, or climbed far above its minimum back to where it started",
    suggestions=("clip gradients: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0) before optimizer.step()",
                 "look for log(0), division by zero or a too-small eps; with AMP keep the GradScaler"))


def overfitting(d: Diagnosis, c: Curves) -> bool:
    if not _decided(d, c, "overfitting"):
        return False
    v, t = c.val, c.train
    d.marks.low_step, d.marks.low_value = v.low_step, v.low
    if t is not None:
        d.evidence.append(f"training loss went from {t.at(v.low_step):.4g} at the validation minimum (step "
                          f"{v.low_step:,}) to {t.end:.4g}; validation ends at {v.end:.4g}")
        d.marks.gap_step, d.marks.gap = int(c.val_series.steps[-1]), v.end - t.end
    d.suggestions.append(_keep_suggestion(d, c.run, "validation"))
    return True


OVERFITTING = Verdict(
    name="overfitting", rule=overfitting, order=400, alarm=True, colour="#ef6c00", style="yellow",
    description="the validation loss bottomed out and rose while the training loss kept falling",
    suggestions=("stop earlier: Run(..., doctor=Doctor(overfit_patience=5)) stops and saves once it is past the "
                 "minimum",
                 "regularize: weight decay (AdamW weight_decay=0.05), dropout, data augmentation; or get more "
                 "data / use a smaller model"))


def lr_too_high(d: Diagnosis, c: Curves) -> bool:
    if not _decided(d, c, "lr_too_high"):
        return False
    main = c.main
    low, high = np.percentile(main.raw[len(main.raw) // 2:], [5, 95])
    d.evidence.append(f"in the second half of the run the training loss ranges from {low:.3g} to {high:.3g}")
    return _learning_rate_verdict(d, c)


LR_TOO_HIGH = Verdict(
    name="lr_too_high", rule=lr_too_high, order=300, alarm=True, colour="#c62828", style="red",
    description="the loss swings around its trend, or the validation loss jumps between evaluations",
    suggestions=("lower the learning rate 3-10x (or add a warmup and a decay schedule)",
                 "a larger batch also calms the updates; clip gradients if spikes remain"))


def _learning_rate_verdict(d: Diagnosis, c: Curves) -> bool:
    """The common end of both learning-rate verdicts: the signals' word on it, the lowest point."""
    if c.signals.update_ratio is not None:
        d.evidence.append(f"median update/weight ratio {c.signals.update_ratio:.1e} per step (healthy: about 1e-3)")
    d.marks.low_step, d.marks.low_value = _low(c)
    return True


def plateau(d: Diagnosis, c: Curves) -> bool:
    if not _decided(d, c, "plateau"):
        return False
    main = c.main
    d.marks.plateau_start = _flat_since(main)
    if np.ptp(main.raw) == 0:
        d.evidence.append(f"the loss is exactly {main.end:.4g} at every step: is it computed from the model's "
                          "output (not a constant or a detached tensor), and logged from the right variable?")
    else:
        d.evidence.append(f"the loss stayed near its starting value {main.start:.4g} (ended at {main.end:.4g}), "
                          f"flat since step {d.marks.plateau_start:,}")
    s = c.signals
    if s.grad_total_end is not None and s.grad_total_end < VANISHING:
        d.evidence.append(f"gradient norm is tiny ({s.grad_total_end:.1e}): vanishing gradients")
    if s.dead_relu is not None and s.dead_relu > DEAD_RELU:
        d.evidence.append(f"{s.dead_relu:.0%} of ReLU units are dead in the worst layer")
    return True


PLATEAU = Verdict(
    name="plateau", rule=plateau, order=200, alarm=True, colour="#6d6d6d", style="yellow",
    description="the loss never really left its starting value: the network is not learning",
    suggestions=("the network is not learning: check the gradients reach every layer (savegame preflight)",
                 "dead ReLUs or saturated sigmoids/tanh: use a standard init (kaiming), LeakyReLU/GELU, "
                 "normalization layers, or a smaller learning rate if the units died after a big step",
                 "if the learning rate is tiny or decayed to ~0, raise it"))


def lr_too_low(d: Diagnosis, c: Curves) -> bool:
    if not _decided(d, c, "lr_too_low"):
        return False
    main = c.main
    d.evidence.append(f"the loss fell from {main.start:.4g} to {main.end:.4g}, at an even pace")
    return _learning_rate_verdict(d, c)


LR_TOO_LOW = Verdict(
    name="lr_too_low", rule=lr_too_low, order=500, alarm=True, colour="#6a1b9a", style="yellow",
    description="a slow, almost straight decline that is still going",
    suggestions=("raise the learning rate 3-10x (an LR range test finds the largest stable one)",
                 "Adam/AdamW with lr around 1e-3 is a forgiving default"))


def underfitting(d: Diagnosis, c: Curves) -> bool:
    if not _decided(d, c, "underfitting"):
        return False
    t, v = c.train or c.main, c.val
    gap = "" if v is None else f"; validation ends at {v.end:.4g}, close to it"
    d.evidence.append(f"training loss converged at {t.end:.4g}, {t.end / t.start:.0%} of its start {t.start:.4g}"
                      f"{gap}" if t.start > 0 else f"training loss converged at {t.end:.4g}{gap}")
    acc = _last(c.acc_train) if c.acc_train is not None else _last(c.acc_val)
    if acc is not None:
        d.evidence.append(f"{'training' if c.acc_train is not None else 'validation'} accuracy only {acc:.1%}")
    d.marks.low_step, d.marks.low_value = _low(c)
    return True


UNDERFITTING = Verdict(
    name="underfitting", rule=underfitting, order=600, alarm=True, colour="#f9a825", style="yellow",
    description="converged, but the training and validation losses both stayed high and close",
    suggestions=("the model cannot fit even the training data: make it bigger (width/depth) or better suited "
                 "(features, architecture)",
                 "lower regularization (weight decay, dropout) and train longer with a decaying lr"))


def still_improving(d: Diagnosis, c: Curves) -> bool:
    if not _decided(d, c, "still_improving"):
        return False
    judged = c.val or c.main
    name = "validation" if c.val is not None else "training"
    d.evidence.append(f"{name} loss is still falling at the end ({judged.start:.4g} to {judged.end:.4g})")
    d.marks.low_step, d.marks.low_value = _low(c)
    return True


STILL_IMPROVING = Verdict(
    name="still_improving", rule=still_improving, order=700, colour="#00897b", style="cyan",
    description="the loss is still clearly falling at the end: not there yet",
    suggestions=("train longer: rerun the same command with more epochs; the run resumes from its last checkpoint",))


def healthy(d: Diagnosis, c: Curves) -> bool:
    if not _decided(d, c, "healthy"):
        return False
    d.marks.low_step, d.marks.low_value = _low(c)
    judged = c.val or c.main
    d.evidence.append(f"{'validation' if c.val else 'training'} loss converged: {judged.start:.4g} to "
                      f"{judged.end:.4g}, flat over the last fifth")
    if d.marks.low_step is not None:
        d.suggestions.append(_keep_suggestion(d, c.run, "validation" if c.val else "training"))
    return True


HEALTHY = Verdict(
    name="healthy", rule=healthy, order=800, colour="#2e7d32", style="green",
    description="the loss converged and nothing else held: nothing is wrong")


# -- helpers -----------------------------------------------------------------------------------
def _first_nonfinite(c: Curves) -> tuple[int, str, CurveFeatures] | None:
    """(step, name, features) of the first curve that ends in NaN/inf, if any."""
    found = [(f.nonfinite_step, name, f) for f, name in ((c.train, "training loss"), (c.val, "validation loss"))
             if f is not None and f.nonfinite_step is not None]
    return min(found, key=lambda item: item[0]) if found else None


def _flat_since(f: CurveFeatures) -> int:
    """The first step from which the smoothed loss stays within 5% (of its start) of its end."""
    band = 0.05 * abs(f.start) + 1e-12
    outside = np.flatnonzero(np.abs(f.smooth - f.end) > band)
    return int(f.steps[outside[-1] + 1]) if len(outside) and outside[-1] + 1 < len(f.steps) else int(f.steps[0])


def _first_step_above(f: CurveFeatures, level: float) -> int:
    after = np.flatnonzero((f.smooth > level) & (f.steps > f.low_step))
    return int(f.steps[after[0]]) if len(after) else int(f.steps[-1])


def _keep_suggestion(d: Diagnosis, run: RunData, curve: str) -> str:
    """Which checkpoint to keep: the run's best one when it has one (named with its step, value and
    the export command); otherwise the lowest point, and how to keep the best checkpoint from now on."""
    low = f"lowest {curve} loss (smoothed) at step {d.marks.low_step:,}"
    best = d.best_checkpoint
    if best is not None:
        value = f" {best['value']:.4g}" if isinstance(best.get("value"), (int, float)) else ""
        place = shlex.quote(Path(run.path).as_posix()) if run.path is not None else "RUN"
        export = f"savegame export {place} --best -o model.safetensors"
        if best["step"] == d.marks.low_step:
            return (f"the run's best checkpoint is step {best['step']:,} ({best['metric']}{value}), where the "
                    f"smoothed {curve} loss is lowest too: {export}")
        return (f"{low}; the run's best checkpoint is step {best['step']:,} ({best['metric']}{value}, the best "
                f"of the kept checkpoints): {export}")
    tag = d.tags.get("val_loss", "loss/val")
    how = (f"Keep(best=1, metric={tag!r}) with run.save(metrics={{{tag!r}: val_loss}}) keeps the best "
           "checkpoint by validation loss, savegame export RUN --best -o model.safetensors writes it")
    if run.info is not None:  # a savegame run whose checkpoints rank by no metric
        return f"{low}; this run records no best checkpoint (its keep policy ranks none): {how}"
    return f"{low}; these logs have no checkpoints: save with savegame, where {how}"


def _low(c: Curves) -> tuple[int | None, float | None]:
    f = c.val or c.train
    return (f.low_step, f.low) if f is not None else (None, None)


def _last(s: Series | None) -> float | None:
    if s is None or not len(s):
        return None
    finite = s.values[np.isfinite(s.values)]
    return float(np.median(finite[-3:])) if len(finite) else None


# Every row above, in the order of VERDICTS (the badge colours: red for broken, amber for wasteful,
# green for fine).
BUILTIN: tuple[Verdict, ...] = (HEALTHY, OVERFITTING, UNDERFITTING, DIVERGED, PLATEAU, LR_TOO_HIGH, LR_TOO_LOW,
                                STILL_IMPROVING)
"""Every built-in verdict (in the order of :data:`VERDICTS`; the rules try them by ``order``)."""
