"""Preflight: the model can overfit a few examples of the first batch (Karpathy's "overfit one
batch"), with dropout off; when it cannot, the likely causes (probabilities into a cross-entropy,
labels misaligned with the inputs, a learning rate too high or too low).

It trains a copy from ``setup`` (the user's model and optimizer are never stepped), leaves the RNG
and grad mode as they were, and stops when ``setup.time_budget`` runs out, saying so: it passes on
what it saw, fails only on what the steps it ran prove, and warns otherwise.

>>> import torch
>>> from savegame.preflight.setup import Setup
>>> _ = torch.manual_seed(0)
>>> data = [(torch.randn(8, 4), torch.randint(0, 3, (8,)))]
>>> setup = Setup.build(torch.nn.Linear(4, 3), torch.nn.CrossEntropyLoss(), data,
...                     optimizer=lambda p: torch.optim.Adam(p, lr=0.1))
>>> check_overfit_one_batch(setup).status
'pass'
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._training import SEED, _dropout_off, _is_cross_entropy
from .checks_grad import batch_size, scalar_loss, seeded, subset, timed, trainable
from .report import CheckResult
from .setup import Setup, SetupError

OVERFIT_SAMPLES = 8       # examples the model must memorize
OVERFIT_STEPS_FACTOR = 4  # overfit gets this many times setup.steps (stops as soon as it passes)...
OVERFIT_MIN_STEPS = 100   # ...and at least this many
RELATIVE_TARGET = 0.05    # pass: loss below 5% of its initial value (above the floor)...
ABSOLUTE_TARGET = 0.05    # ...or within 0.05 of the floor for classification (0, or label smoothing's)


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
        return CheckResult(name, "pass", f"{n} examples overfit in {steps} step{'s' if steps != 1 else ''}: "
                           f"loss {losses[0]:.3g} -> {losses[-1]:.3g} (target {target:.3g}){acc_text}", numbers=numbers)
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
