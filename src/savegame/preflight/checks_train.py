"""Preflight checks that train a copy for a few steps: the model can overfit a few examples, it
beats an input-independent baseline, and two identical runs give identical losses.

Each check is ``check_x(setup) -> CheckResult``; it trains copies from ``setup`` (the user's model
and optimizer are never stepped) and leaves the RNG and grad mode as they were. Each stops when
``setup.time_budget`` runs out, and then says so ("cut short by the time budget after N steps /
X s"): it passes on what it saw, fails only on what the steps it ran prove, and warns otherwise.

>>> import torch
>>> from savegame.preflight.setup import Setup
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> data = [(torch.randn(8, 4), torch.randint(0, 3, (8,)))]
>>> setup = Setup.build(torch.nn.Linear(4, 3), torch.nn.CrossEntropyLoss(), data,
...                     optimizer=lambda p: torch.optim.Adam(p, lr=0.1))
>>> check_determinism(setup).status
'pass'
"""

from __future__ import annotations

import math
import random
import warnings
from typing import Any, Callable

import numpy
import torch
from torch import nn
from torch.nn import functional as F

from .budget import Budget
from .checks_grad import (batch_size, map_tensors, names, replace_inputs, scalar_loss,
                          seeded, subset, timed, trainable)
from .report import CheckResult
from .setup import Setup, SetupError

OVERFIT_SAMPLES = 8       # examples the model must memorize
OVERFIT_STEPS_FACTOR = 4  # overfit gets this many times setup.steps (stops as soon as it passes)...
OVERFIT_MIN_STEPS = 100   # ...and at least this many
RELATIVE_TARGET = 0.05    # pass: loss below 5% of its initial value (above the floor)...
ABSOLUTE_TARGET = 0.05    # ...or within 0.05 of the floor for classification (0, or label smoothing's)
BASELINE_MARGIN = 0.10    # real inputs must beat zeroed inputs by 10% of the baseline's held-out loss
BASELINE_EVALUATIONS = 10  # held-out evaluations over the baseline's step budget
DETERMINISM_STEPS = 4     # two runs of 4 steps: a difference shows at step 0 (forward) or 1 (backward)
SEED = 0


# -- training helpers ---------------------------------------------------------------------------

def _dropout_off(model: nn.Module) -> nn.Module:
    """Dropout modules in eval mode (regularization off), everything else (BatchNorm) in train mode."""
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.eval()
    return model


def _forward(setup: Setup, model: nn.Module, batch: Any) -> tuple[torch.Tensor, Any, Any]:
    """(scalar loss, output, targets); output and targets are None under the user's ``forward``."""
    if setup.forward is not None:
        return scalar_loss(setup.loss(model, batch)), None, None
    inputs, targets = setup.split(batch)
    out = model(inputs)
    return scalar_loss(setup.loss_fn(out, targets)), out, targets


def _lr(optimizer: torch.optim.Optimizer) -> Any:
    lrs = sorted({g["lr"] for g in optimizer.param_groups if isinstance(g.get("lr"), (int, float))})
    return lrs[0] if len(lrs) == 1 else lrs


def _is_cross_entropy(loss_fn: Any) -> bool:
    return isinstance(loss_fn, nn.CrossEntropyLoss) or loss_fn is F.cross_entropy


def _task(setup: Setup, out: Any, targets: Any) -> dict[str, Any]:
    """What the outputs/targets look like: ``kind`` is "classification" (integer targets, (B, C, ...)
    outputs), "binary" (BCE with 0/1 targets), or "other"; with ``classes`` and the loss ``floor``."""
    if not isinstance(out, torch.Tensor) or not isinstance(targets, torch.Tensor) or not out.is_floating_point():
        return {"kind": "other", "floor": 0.0}
    if (not targets.is_floating_point() and targets.dtype != torch.bool and out.dim() >= 2
            and targets.shape == out.shape[:1] + out.shape[2:]):
        classes = int(out.shape[1])
        smoothing = float(getattr(setup.loss_fn, "label_smoothing", 0.0) or 0.0)
        floor = 0.0
        if _is_cross_entropy(setup.loss_fn) and smoothing > 0 and classes > 1:
            true, other = 1 - smoothing + smoothing / classes, smoothing / classes
            floor = -(true * math.log(true) + (classes - 1) * other * math.log(other))
        return {"kind": "classification", "classes": classes, "floor": floor, "label_smoothing": smoothing}
    binary_loss = isinstance(setup.loss_fn, (nn.BCEWithLogitsLoss, nn.BCELoss))
    if (binary_loss and out.numel() == targets.numel() and targets.numel() > 0
            and bool(((targets == 0) | (targets == 1)).all())):
        return {"kind": "binary", "threshold": 0.0 if isinstance(setup.loss_fn, nn.BCEWithLogitsLoss) else 0.5,
                "floor": 0.0}
    return {"kind": "other", "floor": 0.0}


def _accuracy(task: dict[str, Any], out: torch.Tensor, targets: torch.Tensor) -> float | None:
    with torch.no_grad():
        if task["kind"] == "classification":
            valid = (targets >= 0) & (targets < task["classes"])  # ignore_index (-100) entries
            if not valid.any():
                return None
            return (out.argmax(1) == targets)[valid].float().mean().item()
        if task["kind"] == "binary":
            predicted = out.reshape(-1) > task["threshold"]
            return (predicted == (targets.reshape(-1) > 0.5)).float().mean().item()
    return None


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


# -- overfit one batch --------------------------------------------------------------------------

@timed
def check_overfit_one_batch(setup: Setup) -> CheckResult:
    """A few examples of the first batch reach near-zero loss (100% accuracy for classification)
    within the step budget, with dropout off; otherwise report the floor reached and why."""
    name = "overfit one batch"
    batch = setup.batches[0]
    size = batch_size(setup, batch)
    n = min(OVERFIT_SAMPLES, size) if size else None
    small = subset(batch, n, size) if n else batch
    model = _dropout_off(setup.fresh_model())
    if not trainable(model):
        return CheckResult(name, "skip", "no trainable parameter (see the gradients check)")
    optimizer = setup.fresh_optimizer(model)
    budget = max(OVERFIT_MIN_STEPS, setup.steps * OVERFIT_STEPS_FACTOR)
    clock = setup.budget()
    losses: list[float] = []
    accuracy = None
    first_out, task, target, passed = None, {"kind": "other", "floor": 0.0}, 0.0, False
    with seeded(setup, SEED):
        for step in range(budget + 1):
            if step > 0 and clock.exhausted():
                break
            optimizer.zero_grad(set_to_none=True)
            loss, out, targets = _forward(setup, model, small)
            value = loss.item()
            losses.append(value)
            if step == 0:
                if not loss.requires_grad:
                    return CheckResult(name, "skip", "the loss is not connected to the graph "
                                       "(see the gradients check)", numbers={"loss": value})
                first_out = out.detach() if isinstance(out, torch.Tensor) else None
                task = _task(setup, out, targets)
                floor = task["floor"]
                if task["kind"] == "other" and value <= 0:
                    return CheckResult(name, "skip", f"the loss starts at {value:.3g} <= 0 (a likelihood "
                                       "loss?): no near-zero target to judge against", numbers={"loss": value})
                if task["kind"] in ("classification", "binary"):
                    target = floor + max(ABSOLUTE_TARGET, RELATIVE_TARGET * (value - floor))
                else:
                    target = max(RELATIVE_TARGET * value, 1e-4 * abs(value), 1e-8)
            if not math.isfinite(value):
                break
            if task["kind"] == "classification" and value < -1e-6:
                break  # a cross-entropy cannot be negative: probabilities into NLLLoss, or a custom loss bug
            accuracy = _accuracy(task, out, targets) if out is not None else None
            if value <= target and (accuracy is None or accuracy >= 1.0):
                passed = True
                break
            if step == budget:
                break
            loss.backward()
            optimizer.step()
    steps = len(losses) - 1
    finite = [v for v in losses if math.isfinite(v)]
    lowest = min(finite) if finite else float("nan")
    numbers: dict[str, Any] = {
        "examples": n, "steps": steps, "budget": budget, "initial_loss": losses[0], "final_loss": losses[-1],
        "lowest_loss": lowest, "target_loss": target, "accuracy": accuracy, "task": task["kind"],
        "lr": _lr(optimizer), "optimizer": type(optimizer).__name__,
    }
    if task.get("floor"):
        numbers["label_smoothing_floor"] = task["floor"]
    acc_text = f", accuracy {accuracy:.0%}" if accuracy is not None else ""
    if passed:
        return CheckResult(name, "pass", f"{n} examples overfit in {steps} step{'s' if steps != 1 else ''}: loss {losses[0]:.3g} -> "
                           f"{losses[-1]:.3g} (target {target:.3g}){acc_text}", numbers=numbers)
    causes, conclusive = _overfit_causes(setup, model, small, first_out, task, losses, target, numbers)
    cut = f" ({clock.said(steps)}, of {budget})" if clock.cut else ""
    if clock.cut:
        numbers["cut_short"] = True
    if clock.cut and not conclusive:  # not overfit *yet*: no failure for lack of time
        return CheckResult(name, "warn", f"{n} examples not overfit yet: loss {losses[0]:.3g} -> {losses[-1]:.3g} "
                           f"in {steps} step{'s' if steps != 1 else ''} (needs {target:.3g}){acc_text}{cut}, "
                           "too few steps to tell", fix="give the check more time: preflight(..., time_budget="
                           "seconds) or a faster device; if it still cannot overfit: " + "; or ".join(causes),
                           numbers=numbers)
    if task["kind"] == "classification" and lowest < -1e-6:
        return CheckResult(name, "fail", f"the loss is {lowest:.3g} on {n} examples at step {steps}: a "
                           f"cross-entropy is never negative{cut}", fix="; or ".join(causes), numbers=numbers)
    return CheckResult(name, "fail", f"the loss cannot fall below {lowest:.3g} on {n} examples in {steps} "
                       f"steps (from {losses[0]:.3g}; needs {target:.3g}){acc_text}{cut}",
                       fix="; or ".join(causes), numbers=numbers)


def _overfit_causes(setup: Setup, model: nn.Module, batch: Any, out: torch.Tensor | None, task: dict,
                    losses: list[float], target: float, numbers: dict) -> tuple[list[str], bool]:
    """(the likely causes, whether one of them rules out overfitting whatever the number of steps:
    probabilities into a cross-entropy, a negative cross-entropy, a NaN loss, one input with two labels)."""
    causes: list[str] = []
    conclusive = False
    lr = numbers["lr"]
    is_ce = _is_cross_entropy(setup.loss_fn)
    if out is not None and out.dim() >= 2 and task["kind"] == "classification" and out.shape[1] > 1:
        sums = out.sum(dim=1)
        if bool((out >= -1e-6).all()) and bool(((sums - 1).abs() < 1e-3).all()):
            numbers["outputs_sum_to_one"] = True
            has_softmax = any(isinstance(m, nn.Softmax) for m in model.modules())
            ends = "the model ends in Softmax" if has_softmax else "the outputs are probabilities (sum to 1)"
            conclusive = True  # a softmax's outputs cap the logits' spread: the loss has a floor above 0
            if isinstance(setup.loss_fn, nn.NLLLoss):
                causes.append(f"{ends}, but NLLLoss expects log-probabilities: end in LogSoftmax, or return "
                              "logits and use CrossEntropyLoss")
            else:
                loss_name = "CrossEntropyLoss" if is_ce else "a cross-entropy loss"
                causes.append(f"{ends} and {loss_name} applies log-softmax again — return logits "
                              "(remove the final softmax)")
        elif bool((out >= 0).all()):
            numbers["outputs_nonnegative"] = True
            causes.append("the outputs are never negative (a ReLU or sigmoid at the end): return raw logits")
    if batch is not None and not causes:
        duplicate = _conflicting_duplicates(setup, batch)
        if duplicate:
            numbers["conflicting_duplicates"] = duplicate
            conclusive = True
            causes.append(f"samples {duplicate[0]} and {duplicate[1]} have the same input but different "
                          "labels: labels misaligned with inputs (shuffled separately, an off-by-one)")
    finite = [v for v in losses if math.isfinite(v)]
    if task["kind"] == "classification" and finite and min(finite) < -1e-6:
        conclusive = True
    if task["kind"] == "classification" and finite and min(finite) < -1e-6 and not causes:
        causes.append(f"the loss is negative ({min(finite):.3g}), which a cross-entropy cannot be: NLLLoss "
                      "expects log-probabilities (end in LogSoftmax, or return logits and use CrossEntropyLoss)")
    if len(finite) < len(losses):
        conclusive = True
        causes.append(f"the loss became NaN/inf at step {len(finite)}: learning rate too high (lr={lr}) or a "
                      "numerics bug (log of 0, division by 0)")
    elif losses[-1] > 1.1 * losses[0] + 1e-8:
        causes.append(f"the loss rose from {losses[0]:.3g} to {losses[-1]:.3g}: learning rate too high (lr={lr})")
    elif not causes:
        quarter = max(1, len(losses) // 4)
        recent = losses[max(0, len(losses) - quarter - 1)] - losses[-1]
        if losses[-1] > 0.9 * losses[0]:
            causes.append(f"the loss barely moved ({losses[0]:.3g} -> {losses[-1]:.3g}): learning rate too low "
                          f"(lr={lr}), a frozen or detached model (see the gradients check), or labels "
                          "misaligned with inputs")
        elif recent > 0.1 * max(losses[-1] - task["floor"], 1e-12):
            causes.append(f"the loss was still falling when the budget ran out: learning rate too low "
                          f"(lr={lr}) or too few steps (preflight(..., steps=)) for this model")
        else:
            causes.append("the loss levels off: the model may be too small for these examples, heavy "
                          "regularization (weight decay), or labels misaligned with inputs")
    return causes, conclusive


def _conflicting_duplicates(setup: Setup, batch: Any) -> tuple[int, int] | None:
    try:
        inputs, targets = setup.split(batch)
    except SetupError:
        return None
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        return None
    if inputs.dim() == 0 or targets.dim() == 0 or inputs.shape[0] != targets.shape[0]:
        return None
    rows, labels = inputs.reshape(inputs.shape[0], -1), targets.reshape(targets.shape[0], -1)
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if torch.equal(rows[i], rows[j]) and not torch.equal(labels[i], labels[j]):
                return i, j
    return None


# -- input-independent baseline -----------------------------------------------------------------

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


# -- determinism --------------------------------------------------------------------------------

@timed
def check_determinism(setup: Setup) -> CheckResult:
    """Two identical short runs (same seed, fresh copies, same batches) give identical losses."""
    name = "determinism"
    if not trainable(setup.model):
        return CheckResult(name, "skip", "no trainable parameter (see the gradients check)")
    planned = max(2, min(setup.steps, DETERMINISM_STEPS // (2 if setup.quick else 1)))
    clock = setup.budget()
    first = _seeded_losses(setup, planned, other_seed=1, clock=clock.part(0.5))
    steps = len(first)  # the second run repeats as many steps as the first one had time for
    second = _seeded_losses(setup, steps, other_seed=2, clock=Budget(None))
    differ = [i for i, (a, b) in enumerate(zip(first, second)) if a != b and not (a != a and b != b)]
    numbers: dict[str, Any] = {"steps": steps, "losses_1": first, "losses_2": second}
    cut = clock.said(steps) if steps < planned and all(math.isfinite(v) for v in first) else ""
    if cut:
        numbers["cut_short"] = True
    if not differ and steps < 2 and cut:
        return CheckResult(name, "skip", f"{cut}: too few to compare two runs", numbers=numbers)
    if not differ:
        return CheckResult(name, "pass", f"two runs of {steps} steps from seed {SEED} gave identical losses "
                           f"(last {first[-1]:.6g})" + (f" ({cut}, of {planned})" if cut else ""), numbers=numbers)
    step = differ[0]
    numbers["first_difference_step"] = step
    numbers["max_difference"] = max(abs(a - b) for a, b in zip(first, second))
    ops = _nondeterministic_ops(setup, steps)
    numbers["nondeterministic_ops"] = ops
    hints = []
    if ops:
        hints.append(f"nondeterministic ops ({names(ops, 4)}): call torch.use_deterministic_algorithms(True), "
                     "set torch.backends.cudnn.benchmark = False and CUBLAS_WORKSPACE_CONFIG=:4096:8")
    else:
        hints.append("nondeterministic GPU kernels (atomics in scatter/index_add/backward of pooling or "
                     "interpolate): torch.use_deterministic_algorithms(True), cudnn.benchmark = False")
    hints.append("randomness outside torch's seeded RNG in forward (numpy, random, dropout or noise with its "
                 "own unseeded Generator): seed it or draw from torch")
    hints.append("and in the real loop, seed the DataLoader (generator=, worker_init_fn) so the data order repeats")
    return CheckResult(name, "warn", f"two runs of {steps} steps from seed {SEED} differ from step {step} "
                       f"({first[step]:.8g} vs {second[step]:.8g}; max difference {numbers['max_difference']:.3g})",
                       fix="; ".join(hints), numbers=numbers)


def _seeded_losses(setup: Setup, steps: int, other_seed: int = 1, clock: Budget | None = None) -> list[float]:
    """Losses of a run from torch seed ``SEED``; numpy's and Python's RNG get ``other_seed``, as
    they would differ between two processes that seed only torch (restored on exit). Stops early
    when ``clock`` runs out."""
    losses = []
    clock = clock or Budget(None)
    with seeded(setup, SEED):
        random.seed(other_seed)
        numpy.random.seed(other_seed)
        model = setup.fresh_model()
        optimizer = setup.fresh_optimizer(model)
        for step in range(steps):
            if step > 0 and clock.exhausted():
                break
            optimizer.zero_grad(set_to_none=True)
            loss = scalar_loss(setup.loss(model, setup.batches[step % len(setup.batches)]))
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                break
            loss.backward()
            optimizer.step()
    return losses


def _nondeterministic_ops(setup: Setup, steps: int) -> list[str]:
    """The ops that warn under ``torch.use_deterministic_algorithms(True, warn_only=True)`` in one
    more run; the previous setting is restored."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    found: list[str] = []
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                _seeded_losses(setup, min(steps, 2))
            except Exception:  # noqa: BLE001 - the diagnosis is best effort
                pass
        for w in caught:
            text = str(w.message)
            if "deterministic" in text:
                op = text.split(" does not have a deterministic")[0].strip()
                if op and op not in found:
                    found.append(op[:120])
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    return found

