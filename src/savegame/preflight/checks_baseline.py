"""Preflight: a short run on the real inputs beats the same run on zeroed inputs (Karpathy's
"input-independent baseline"), measured on held-out samples.

It trains copies from ``setup`` (the user's model and optimizer are never stepped), leaves the RNG
and grad mode as they were, and stops when ``setup.time_budget`` runs out, saying so: it passes on
what it saw, fails only on what the steps it ran prove, and warns otherwise.

>>> import torch
>>> from savegame.preflight.setup import Setup
>>> _ = torch.manual_seed(0)
>>> x = torch.randn(64, 4)
>>> data = [(x[:32], (x[:32, 0] > 0).long()), (x[32:], (x[32:, 0] > 0).long())]
>>> setup = Setup.build(torch.nn.Linear(4, 2), torch.nn.CrossEntropyLoss(), data,
...                     optimizer=lambda p: torch.optim.Adam(p, lr=0.1))
>>> check_input_independent_baseline(setup).status
'pass'
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from ._training import SEED, _dropout_off, _is_cross_entropy
from .budget import Budget
from .checks_grad import batch_size, map_tensors, replace_inputs, scalar_loss, seeded, subset, timed, trainable
from .report import CheckResult
from .setup import Setup

BASELINE_MARGIN = 0.10    # real inputs must beat zeroed inputs by 10% of the baseline's held-out loss
BASELINE_EVALUATIONS = 10  # held-out evaluations over the baseline's step budget


@timed
def check_input_independent_baseline(setup: Setup) -> CheckResult:
    """A short run on the real inputs beats the same run (same seed, same init) on zeroed inputs,
    measured on held-out samples (the last batch, or the second half of a single batch).

    Two shortcuts keep it cheap without weakening it: the real run stops as soon as its
    held-out loss is below the *floor*, the lowest held-out loss any input-independent model can
    reach (the loss of the best constant prediction: the entropy of the held-out labels for
    cross-entropy, their variance for MSE), so the zeroed run could not have done better; and a
    zeroed model gives every sample the same output, so its run trains on 2 zeroed samples and
    spreads their output over the batch (the same loss and gradients in exact arithmetic, at a
    fraction of the cost)."""
    name = "input-independent baseline"
    if setup.forward is not None or not setup.splittable:
        return CheckResult(name, "skip", "needs (inputs, targets) batches to zero the inputs; "
                           "not available with forward=")
    split = _held_out_split(setup)
    if split is None:
        return CheckResult(name, "skip", "needs two batches or a batch of at least 4 samples")
    train, held = split
    if not trainable(setup.model):
        return CheckResult(name, "skip", "no trainable parameter (see the gradients check)")
    steps = max(1, setup.steps)
    every = max(1, steps // BASELINE_EVALUATIONS)
    clock = setup.budget()
    compact, zero_out = _constant_when_zeroed(setup, train, held)
    floor = _input_independent_floor(setup, held, zero_out) if compact else None
    stop_below = (1 - BASELINE_MARGIN) * floor if floor else None
    real = _baseline_run(setup, train, held, steps, every, clock.part(0.85 if compact else 0.5),
                         _loss_of(setup), stop_below=stop_below)
    numbers: dict[str, Any] = {"steps": real["steps"], "budget_steps": steps, "real_held_out_loss": real["best"],
                               "zeroed_held_out_loss": None, "real_train_loss": real["train"],
                               "zeroed_train_loss": None, "input_independent_floor": floor}
    if real["stopped_early"]:
        numbers["improvement"] = (floor - real["best"]) / floor
        if real["cut"]:
            numbers["cut_short"] = True
        cut = f" ({clock.said(real['steps'])}, of {steps})" if real["cut"] else ""
        return CheckResult(name, "pass", f"after {real['steps']} step{'s' if real['steps'] != 1 else ''}{cut}, "
                           f"held-out loss {real['best']:.3g} with the real inputs, below {floor:.3g}: the lowest "
                           "any input-independent model (zeroed inputs) can reach on these samples",
                           numbers=numbers)
    if compact:
        zero = _baseline_run(setup, train, held, real["steps"], every, clock.part(1.0), _compact_zeroed_loss(setup))
    else:
        zero = _baseline_run(setup, [_zeroed(setup, b) for b in train], _zeroed(setup, held), real["steps"], every,
                             clock.part(1.0), _loss_of(setup))
    common = sorted(set(real["evals"]) & set(zero["evals"]))
    real_best = min((real["evals"][k] for k in common), default=real["best"])
    zero_best = min((zero["evals"][k] for k in common), default=zero["best"])
    done = common[-1] if common else min(real["steps"], zero["steps"])
    cut = real["cut"] or zero["cut"]
    numbers.update(steps=done, real_held_out_loss=real_best, zeroed_held_out_loss=zero_best,
                   zeroed_train_loss=zero["train"])
    if cut:
        numbers["cut_short"] = True
    if not (math.isfinite(real_best) and math.isfinite(zero_best)):
        return CheckResult(name, "skip", "a run's loss was not finite (see the overfit check)"
                           + (f"; {clock.said(done)}" if cut and common else ""), numbers=numbers)
    gap = zero_best - real_best
    numbers["improvement"] = gap / abs(zero_best) if zero_best else None
    text = (f"after {done} step{'s' if done != 1 else ''}, held-out loss {real_best:.3g} with the real inputs vs "
            f"{zero_best:.3g} with zeroed inputs")
    if cut:
        text = f"{text} ({clock.said(done)}, of {steps})"
    fix = ("the model does not use its inputs: labels misaligned/shuffled separately from inputs, or inputs "
           "zeroed/detached on the way in (check the dataset's __getitem__ and the first layer)")
    if gap >= BASELINE_MARGIN * abs(zero_best):
        return CheckResult(name, "pass", text, numbers=numbers)
    if cut:  # fewer steps than the check needs to tell: no failure for lack of time
        better = f"only {gap / abs(zero_best):.0%} better" if gap > 0 else "no better yet"
        return CheckResult(name, "warn", f"{text}: {better} (needs {BASELINE_MARGIN:.0%}), too few steps to tell",
                           fix="give the check more time: preflight(..., time_budget=seconds) or a faster device; "
                               f"if the real inputs still do no better, {fix}", numbers=numbers)
    if gap > 0:
        return CheckResult(name, "warn", text + f": only {gap / abs(zero_best):.0%} better "
                           f"(needs {BASELINE_MARGIN:.0%})",
                           fix=fix + "; or the task needs more than a short run to learn anything", numbers=numbers)
    return CheckResult(name, "fail", text + ": the real inputs do no better", fix=fix, numbers=numbers)


def _loss_of(setup: Setup) -> Callable[[nn.Module, Any], torch.Tensor]:
    return lambda model, batch: scalar_loss(setup.loss(model, batch))


def _compact_zeroed_loss(setup: Setup) -> Callable[[nn.Module, Any], torch.Tensor]:
    """The loss of ``batch`` with zeroed inputs, computed from 2 zeroed samples: the model gives every
    zeroed sample the same output (checked by ``_constant_when_zeroed``), so the first one's output,
    repeated for the batch, is the whole batch's output."""
    def loss(model: nn.Module, batch: Any) -> torch.Tensor:
        inputs, targets = setup.split(batch)
        out = model(torch.zeros_like(inputs[:2]))
        return scalar_loss(setup.loss_fn(out[:1].expand(inputs.shape[0], *out.shape[1:]), targets))
    return loss


def _plain_pair(setup: Setup, batch: Any) -> bool:
    """``(inputs, targets)`` and nothing else, the inputs one tensor: zeroing them zeroes all the model sees."""
    if isinstance(batch, (tuple, list)):
        if len(batch) != 2:
            return False
    elif not (isinstance(batch, dict) and len(batch) == 2):
        return False
    inputs, targets = setup.split(batch)
    return (isinstance(inputs, torch.Tensor) and isinstance(targets, torch.Tensor) and inputs.dim() > 0
            and inputs.shape[0] >= 2 and targets.dim() > 0 and targets.shape[0] == inputs.shape[0])


def _constant_when_zeroed(setup: Setup, train: list[Any], held: Any) -> tuple[bool, torch.Tensor | None]:
    """(whether the model gives every zeroed sample the same output, that output for 2 samples). Only
    for plain (inputs, targets) batches; one forward of a fresh copy on the zeroed held-out batch."""
    if not all(_plain_pair(setup, b) for b in [*train, held]):
        return False, None
    inputs, _ = setup.split(held)
    try:
        with seeded(setup, SEED), torch.no_grad():
            model = _dropout_off(setup.fresh_model())
            full = model(torch.zeros_like(inputs))
            two = model(torch.zeros_like(inputs[:2]))
    except Exception:  # noqa: BLE001 - e.g. a model that needs its full batch: no shortcut, same verdict
        return False, None
    if not (isinstance(full, torch.Tensor) and isinstance(two, torch.Tensor) and full.is_floating_point()
            and two.dim() > 0 and two.shape[0] == 2 and full.shape == (inputs.shape[0], *two.shape[1:])):
        return False, None
    same = torch.allclose(full, two[:1].expand_as(full), rtol=1e-4, atol=1e-5) and torch.allclose(two[0], two[1])
    return (True, two) if same and bool(torch.isfinite(two).all()) else (False, None)


def _input_independent_floor(setup: Setup, held: Any, out: torch.Tensor) -> float | None:
    """The lowest held-out loss of any input-independent model: the user's loss of the best constant
    prediction on the held-out targets, for the losses where it is known in closed form (mean
    reduction, no class weights); None otherwise. ``out`` is the zeroed model's output (2 samples)."""
    loss_fn = setup.loss_fn
    _, y = setup.split(held)
    if getattr(loss_fn, "reduction", "mean") != "mean" or getattr(loss_fn, "weight", None) is not None:
        return None
    nll = isinstance(loss_fn, nn.NLLLoss) or loss_fn is F.nll_loss
    if nll or _is_cross_entropy(loss_fn):
        if out.dim() != 2 or y.dim() != 1 or y.is_floating_point() or out.shape[1] < 2:
            return None
        classes = out.shape[1]
        if nll and not torch.allclose(out.logsumexp(1), torch.zeros(()), atol=1e-4):
            return None  # NLLLoss on outputs that are not log-probabilities: no floor
        valid = y[y != getattr(loss_fn, "ignore_index", -100)]
        if valid.numel() == 0 or int(valid.min()) < 0 or int(valid.max()) >= classes:
            return None
        smoothing = 0.0 if nll else float(getattr(loss_fn, "label_smoothing", 0.0) or 0.0)
        share = torch.bincount(valid.reshape(-1).long(), minlength=classes).double() / valid.numel()
        target = (1 - smoothing) * share + smoothing / classes  # the mean target distribution
        target = target[target > 0]
        return float(-(target * target.log()).sum())  # its entropy: the best constant's cross-entropy
    if not y.is_floating_point() or y.dim() == 0 or tuple(out.shape[1:]) != tuple(y.shape[1:]):
        return None
    if isinstance(loss_fn, nn.MSELoss) or loss_fn is F.mse_loss:
        return float(((y.double() - y.double().mean(0, keepdim=True)) ** 2).mean())  # predict the mean
    binary = (nn.BCEWithLogitsLoss, nn.BCELoss)
    if (isinstance(loss_fn, binary) and getattr(loss_fn, "pos_weight", None) is None) or loss_fn in (
            F.binary_cross_entropy_with_logits, F.binary_cross_entropy):
        if bool(((y < 0) | (y > 1)).any()):
            return None
        p = y.double().mean(0)
        entropy = -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p))
        return float(entropy.mean())  # predict each target's mean probability
    return None


def _baseline_run(setup: Setup, train: list[Any], held: Any, steps: int, every: int, clock: Budget,
                  loss_of: Callable[[nn.Module, Any], torch.Tensor], *, stop_below: float | None = None) -> dict:
    """Train a fresh copy up to ``steps`` steps (seeded), evaluating the held-out loss every ``every``
    steps and at the last step; stops early once it is at most ``stop_below``, or when ``clock``
    runs out (then evaluated where it stopped). ``evals`` maps steps done to held-out losses."""
    evals: dict[int, float] = {}
    last, done, stopped_early = float("nan"), 0, False
    with seeded(setup, SEED):
        model = _dropout_off(setup.fresh_model())
        optimizer = setup.fresh_optimizer(model)
        for step in range(steps):
            if step > 0 and clock.exhausted():
                break
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of(model, train[step % len(train)])
            last = loss.item()
            if not math.isfinite(last):
                return {"evals": {}, "best": float("nan"), "train": last, "steps": done, "cut": False,
                        "stopped_early": False}
            loss.backward()
            optimizer.step()
            done = step + 1
            if done % every == 0 or done == steps:
                with torch.no_grad():
                    evals[done] = loss_of(model, held).item()
                if stop_below is not None and evals[done] <= stop_below:
                    stopped_early = True
                    break
        if clock.cut and done and done not in evals:
            with torch.no_grad():
                evals[done] = loss_of(model, held).item()
            stopped_early = stop_below is not None and evals[done] <= stop_below
    finite = [v for v in evals.values() if math.isfinite(v)]
    best = min(finite) if len(finite) == len(evals) and finite else float("nan")
    return {"evals": evals, "best": best, "train": last, "steps": done, "cut": clock.cut,
            "stopped_early": stopped_early}


def _held_out_split(setup: Setup) -> tuple[list[Any], Any] | None:
    """(training batches, held-out batch): the last batch is held out; with a single batch, its
    second half."""
    if len(setup.batches) >= 2:
        return setup.batches[:-1], setup.batches[-1]
    batch = setup.batches[0]
    size = batch_size(setup, batch)
    if not size or size < 4:
        return None
    half = size // 2
    tail = map_tensors(batch, lambda t: t[half:] if t.dim() > 0 and t.shape[0] == size else t)
    return [subset(batch, half, size)], tail


def _zeroed(setup: Setup, batch: Any) -> Any:
    inputs, _ = setup.split(batch)
    return replace_inputs(setup, batch, map_tensors(inputs, torch.zeros_like))
