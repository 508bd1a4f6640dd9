"""Preflight checks on gradients: every trainable parameter gets one, a step changes the
parameters, samples do not mix across the batch, and (opt-in) custom modules pass gradcheck.

Each check is ``check_x(setup) -> CheckResult`` and works on copies from ``setup``: the user's
model, optimizer and global state (grad mode, RNG) are left as they were.

>>> import torch
>>> from savegame.preflight.setup import Setup
>>> data = [(torch.randn(8, 4), torch.randint(0, 3, (8,)))]
>>> setup = Setup.build(torch.nn.Linear(4, 3), torch.nn.CrossEntropyLoss(), data)
>>> check_gradients(setup).status, check_batch_independence(setup).status
('pass', 'pass')
"""

from __future__ import annotations

import random
import time
from typing import Any, Callable

import torch
from torch import nn
from torch.autograd.gradcheck import GradcheckError

from ..checkpoint.rng import capture_rng, restore_rng
from .budget import check_interrupt
from .report import CheckResult
from .setup import Setup, SetupError

FROZEN_FIX = "requires_grad is False on every parameter: did you freeze the model / forget to unfreeze?"
DETACHED_FIX = ("the output is not connected to the graph: remove .detach(), .item(), .numpy(), "
                "torch.no_grad() or tensor re-creation (torch.tensor(...)) between the parameters and the loss")
MIXED_FIX = ("samples mixed across the batch: a reshape/view/transpose over the batch dimension, or a "
             "reduction over dim 0 in forward; use permute/transpose instead of view to reorder dimensions "
             "and reduce over the feature dimensions only")


# -- shared helpers (checks_train uses them too) ------------------------------------------------

def timed(check: Callable[..., CheckResult]) -> Callable[..., CheckResult]:
    """Fill ``seconds`` of the check's result; run it with grad mode on and the RNG restored."""
    def wrapper(setup: Setup, **options: Any) -> CheckResult:
        start = time.perf_counter()
        with seeded(setup, None), torch.enable_grad():
            result = check(setup, **options)
        result.seconds = round(time.perf_counter() - start, 4)
        return result
    wrapper.__name__ = check.__name__
    wrapper.__qualname__ = check.__qualname__
    wrapper.__doc__ = check.__doc__
    wrapper.__wrapped__ = check  # type: ignore[attr-defined]
    return wrapper


class seeded:
    """Save every generator's state (``checkpoint.rng.capture_rng``), seed torch with ``seed``
    (when not None), restore everything on exit."""

    def __init__(self, setup: Setup, seed: int | None) -> None:
        self.seed = seed

    def __enter__(self) -> "seeded":
        self.state = capture_rng()
        if self.seed is not None:
            torch.manual_seed(self.seed)
        return self

    def __exit__(self, *exc: Any) -> None:
        restore_rng(self.state)


def scalar_loss(loss: Any) -> torch.Tensor:
    """The loss as a scalar tensor (a per-sample loss is averaged); TypeError for a non-tensor."""
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"the loss is a {type(loss).__name__}, not a tensor: return the loss tensor "
                        "(not loss.item()) from the loss function")
    return loss if loss.dim() == 0 else loss.mean()


def trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def names(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def batch_size(setup: Setup, batch: Any) -> int | None:
    """The number of samples in ``batch``: dim 0 of its inputs (or of its first tensor)."""
    try:
        inputs, _ = setup.split(batch)
    except SetupError:
        inputs = batch
    tensor = first_tensor(inputs)
    return int(tensor.shape[0]) if tensor is not None and tensor.dim() > 0 else None


def first_tensor(obj: Any) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (list, tuple)):
        for item in obj:
            found = first_tensor(item)
            if found is not None:
                return found
    if isinstance(obj, dict):
        for item in obj.values():
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(item, fn) for item in obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    return obj


def subset(batch: Any, n: int, size: int) -> Any:
    """The first ``n`` samples of a batch of ``size``: every tensor whose dim 0 is ``size`` is sliced."""
    return map_tensors(batch, lambda t: t[:n] if t.dim() > 0 and t.shape[0] == size else t)


def replace_inputs(setup: Setup, batch: Any, new_inputs: Any) -> Any:
    """``batch`` with its inputs (as ``setup.split`` finds them) replaced by ``new_inputs``."""
    inputs, _ = setup.split(batch)
    if isinstance(batch, (tuple, list)):
        return type(batch)((new_inputs, *batch[1:]))
    key = next(k for k, v in batch.items() if v is inputs)
    return {**batch, key: new_inputs}


# -- the checks ---------------------------------------------------------------------------------

@timed
def check_gradients(setup: Setup) -> CheckResult:
    """One backward on a fresh copy: every trainable parameter gets a finite, non-zero gradient."""
    name = "gradients"
    model = setup.fresh_model()
    params = trainable(model)
    total = sum(1 for _ in model.parameters())
    if not params:
        return CheckResult(name, "fail", f"none of the model's {total} parameters is trainable",
                           fix=FROZEN_FIX, numbers={"parameters": total, "trainable": 0})
    loss = scalar_loss(setup.loss(model, setup.batches[0]))
    numbers: dict[str, Any] = {"parameters": total, "trainable": len(params), "loss": _float(loss)}
    if not loss.requires_grad:
        return CheckResult(name, "fail", "the loss does not require grad: the output is not connected "
                           "to the graph, so no parameter can learn", fix=DETACHED_FIX, numbers=numbers)
    if not torch.isfinite(loss):
        return CheckResult(name, "fail", f"the loss on the first batch is {loss.item()}",
                           fix="NaN/inf in the inputs or targets, a log/division of zero in the loss, or "
                               "an overflow in forward: check the data check and the loss at init",
                           numbers=numbers)
    loss.backward()
    missing, nonfinite, zero = [], [], []
    norms = {}
    for pname, p in params:
        if p.grad is None:
            missing.append(pname)
        elif not torch.isfinite(p.grad).all():
            nonfinite.append(pname)
        elif not p.grad.any():
            zero.append(pname)
        else:
            norms[pname] = p.grad.norm().item()
    numbers.update({"no_grad": missing, "nonfinite_grad": nonfinite, "zero_grad": zero,
                    "grad_norm_min": min(norms.values(), default=None),
                    "grad_norm_max": max(norms.values(), default=None)})
    problems, fixes = [], []
    if missing:
        problems.append(f"{len(missing)} trainable parameter(s) got no gradient: {names(missing)}")
        fixes.append("these layers are never used in forward (an unused layer, a branch that is skipped) or "
                     "their output is detached; use them, delete them, or set requires_grad=False on purpose")
    if nonfinite:
        problems.append(f"{len(nonfinite)} parameter(s) got NaN/inf gradients: {names(nonfinite)}")
        fixes.append("an overflow or 0/0 in forward or the loss (log of 0, sqrt at 0, exp of large values): "
                     "add an epsilon, clamp, or lower the input scale")
    if zero:
        problems.append(f"{len(zero)} parameter(s) got an all-zero gradient: {names(zero)}")
        fixes.append("a layer whose output is multiplied by zero, dead ReLUs, a gate stuck shut, or an "
                     "embedding not used by this batch: check the layers named")
    if missing or nonfinite:
        status = "fail"
    elif zero:
        status = "warn"
    else:
        return CheckResult(name, "pass", f"all {len(params)} trainable parameters got a finite, non-zero "
                           f"gradient (norms {numbers['grad_norm_min']:.3g} to {numbers['grad_norm_max']:.3g})",
                           numbers=numbers)
    return CheckResult(name, status, "; ".join(problems), fix="; ".join(fixes), numbers=numbers)


@timed
def check_parameters_change(setup: Setup) -> CheckResult:
    """After one optimizer step on a copy, every trainable parameter that got a gradient changed."""
    name = "parameters change"
    model = setup.fresh_model()
    params = trainable(model)
    if not params:
        return CheckResult(name, "skip", "no trainable parameter (see the gradients check)")
    optimizer = setup.fresh_optimizer(model)
    before = {pname: p.detach().clone() for pname, p in params}
    optimizer.zero_grad(set_to_none=True)
    loss = scalar_loss(setup.loss(model, setup.batches[0]))
    if not loss.requires_grad:
        return CheckResult(name, "skip", "the loss is not connected to the graph (see the gradients check)")
    loss.backward()
    optimizer.step()
    with_grad = [(pname, p) for pname, p in params if p.grad is not None and p.grad.any()]
    unchanged = [pname for pname, p in with_grad if torch.equal(before[pname], p.detach())]
    lrs = sorted({g.get("lr") for g in optimizer.param_groups if isinstance(g.get("lr"), (int, float))})
    numbers = {"checked": len(with_grad), "unchanged": unchanged, "lr": lrs[0] if len(lrs) == 1 else lrs,
               "optimizer": type(optimizer).__name__}
    if not with_grad:
        return CheckResult(name, "skip", "no parameter got a non-zero gradient (see the gradients check)",
                           numbers=numbers)
    if unchanged:
        return CheckResult(name, "fail", f"{len(unchanged)} of {len(with_grad)} parameters with a gradient "
                           f"did not change after one {type(optimizer).__name__} step: {names(unchanged)}",
                           fix=f"the learning rate is 0 or too small for float32 (lr={numbers['lr']}), or the "
                               "optimizer does not hold these parameters (build it after moving/replacing "
                               "layers, pass model.parameters())", numbers=numbers)
    return CheckResult(name, "pass", f"all {len(with_grad)} parameters with a gradient changed after one "
                       f"{type(optimizer).__name__} step", numbers=numbers)


@timed
def check_batch_independence(setup: Setup) -> CheckResult:
    """In eval mode, the gradient of sample i's output w.r.t. sample j's input is zero for j != i."""
    name = "batch independence"
    try:
        inputs, _ = setup.split(setup.batches[0])
    except SetupError as error:
        return CheckResult(name, "skip", f"needs (inputs, targets) batches: {error}")
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        kind = type(inputs).__name__ if not isinstance(inputs, torch.Tensor) else f"{inputs.dtype} tensor"
        return CheckResult(name, "skip", f"the inputs are a {kind}, not a float tensor: "
                           "no gradient with respect to them")
    size = inputs.shape[0] if inputs.dim() else 0
    if size < 2:
        return CheckResult(name, "skip", f"the first batch has {size} sample(s); needs at least 2")
    model = setup.fresh_model().eval()
    x = inputs.detach().clone().requires_grad_(True)
    out = model(x)
    if not isinstance(out, torch.Tensor):
        return CheckResult(name, "skip", f"the model returns a {type(out).__name__}, not a tensor")
    if out.dim() == 0 or out.shape[0] != size:
        shape = tuple(out.shape)
        return CheckResult(name, "fail", f"the output has shape {shape} for a batch of {size}: its first "
                           "dimension is not the batch", fix=MIXED_FIX, numbers={"output_shape": shape})
    if not out.requires_grad:
        return CheckResult(name, "skip", "the output does not depend on the inputs through autograd "
                           "(see the gradients check)")
    worst, leaks = 0.0, []
    for i in sorted({0, size // 2, size - 1}):
        check_interrupt()
        (grad,) = torch.autograd.grad(out[i].sum(), x, retain_graph=True, allow_unused=True)
        if grad is None:
            continue
        grad = grad.detach().abs().reshape(size, -1).amax(dim=1)
        own = grad[i].item()
        others = torch.cat([grad[:i], grad[i + 1:]])
        other = others.max().item()
        if not (other <= 1e-6 * own) or (own == 0 and other > 0):
            j = int(others.argmax()) + (1 if int(others.argmax()) >= i else 0)
            leaks.append((i, j, other, own))
        if own > 0:
            worst = max(worst, other / own)
    numbers = {"batch": size, "samples_checked": sorted({0, size // 2, size - 1}),
               "max_cross_grad_ratio": worst, "leaks": [list(leak[:2]) for leak in leaks]}
    if leaks:
        i, j, other, own = leaks[0]
        return CheckResult(name, "fail", f"the output of sample {i} depends on the input of sample {j} "
                           f"(max |d out[{i}] / d x[{j}]| = {other:.3g}, vs {own:.3g} for its own input), "
                           "with BatchNorm and dropout in eval mode", fix=MIXED_FIX, numbers=numbers)
    return CheckResult(name, "pass", f"the outputs of samples {numbers['samples_checked']} depend on their "
                       f"own inputs only (batch of {size}, eval mode)", numbers=numbers)


@timed
def check_gradcheck(setup: Setup, *, max_modules: int = 8) -> CheckResult:
    """Opt-in: ``torch.autograd.gradcheck`` in float64 on the user's custom modules (classes not
    from torch), on the inputs each gets in one forward pass of 2 samples and on a random input of
    the same shape."""
    name = "gradcheck"
    try:
        inputs, _ = setup.split(setup.batches[0])
    except SetupError as error:
        return CheckResult(name, "skip", f"needs (inputs, targets) batches: {error}")
    model = setup.fresh_model().double().eval()
    custom = [(mname or "(the model)", m) for mname, m in model.named_modules()
              if not type(m).__module__.startswith("torch.") and type(m).__module__ != "torch"]
    if not custom:
        return CheckResult(name, "skip", "no custom module: every module is from torch.nn")
    if len(custom) > max_modules:
        picked = sorted(random.Random(0).sample(range(len(custom)), max_modules))
        custom = [custom[i] for i in picked]
    captured: dict[str, tuple[tuple, dict]] = {}
    hooks = []
    for mname, module in custom:
        def hook(module: nn.Module, args: tuple, kwargs: dict, mname: str = mname) -> None:
            if mname not in captured:
                detach = lambda t: t.detach().clone()  # noqa: E731
                captured[mname] = (map_tensors(args, detach), map_tensors(kwargs, detach))
        hooks.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    size = batch_size(setup, setup.batches[0]) or 1
    small = map_tensors(subset(inputs, min(2, size), size),
                        lambda t: t.double() if t.is_floating_point() else t)
    try:
        with torch.no_grad():
            model(small)
    finally:
        for h in hooks:
            h.remove()
    checked, failed, errors = [], [], []
    torch.manual_seed(0)  # the RNG is restored by @timed
    for mname, module in custom:
        check_interrupt()
        if mname not in captured:
            continue
        args, kwargs = captured[mname]
        flat: list[torch.Tensor] = []
        map_tensors((args, kwargs), lambda t: flat.append(t) or t if t.is_floating_point() else t)
        if not flat:
            continue
        samples = [flat, [torch.randn_like(t) * (t.std() if t.numel() > 1 else 1) + t.mean() for t in flat]]
        for k, values in enumerate(samples):
            values = [v.detach().clone().requires_grad_(True) for v in values]
            fn = _rebuilt_call(module, args, kwargs)
            try:
                ok = torch.autograd.gradcheck(fn, tuple(values), eps=1e-6, atol=1e-5, rtol=1e-3,
                                              fast_mode=True, raise_exception=True)
            except GradcheckError as error:
                failed.append(f"{mname} ({type(module).__name__}, {'captured' if k == 0 else 'random'} input): "
                              f"{str(error).splitlines()[0]}")
                break
            except Exception as error:  # noqa: BLE001 - a module that cannot run in float64: say so
                errors.append(f"{mname} ({type(module).__name__}): {type(error).__name__}: {error}")
                break
            if ok and k == len(samples) - 1:
                checked.append(mname)
    classes = {m: type(module).__name__ for m, module in custom}
    numbers = {"modules": [m for m, _ in custom], "passed": checked, "failed": failed, "errors": errors}
    if failed:
        return CheckResult(name, "fail", f"{len(failed)} custom module(s) have gradients that differ from "
                           f"finite differences in float64: {names(failed, 3)}",
                           fix="a custom autograd.Function's backward is wrong, or forward uses .data / in-place "
                               "ops / non-torch math (numpy) that autograd cannot see: fix the backward or use "
                               "torch ops", numbers=numbers)
    if errors and not checked:
        return CheckResult(name, "warn", f"no custom module could be checked in float64: {names(errors, 3)}",
                           fix="the modules create float32 tensors or call non-torch code in forward; make them "
                               "follow the input's dtype (x.new_tensor, torch.zeros_like)", numbers=numbers)
    if not checked:
        return CheckResult(name, "skip", "no custom module received a float tensor input", numbers=numbers)
    extra = f"; could not run: {names(errors, 3)}" if errors else ""
    return CheckResult(name, "warn" if errors else "pass",
                       f"{len(checked)} custom module(s) pass gradcheck in float64 on captured and random "
                       f"inputs: {names([f'{m} ({classes[m]})' for m in checked])}{extra}", numbers=numbers,
                       fix="make the modules that could not run follow the input's dtype" if errors else "")


def _rebuilt_call(module: nn.Module, args: tuple, kwargs: dict) -> Callable:
    """``fn(*float_tensors)`` calling ``module`` with its captured arguments, the float tensors
    replaced in order; returns the float tensors of the output as a tuple."""
    def fn(*values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        it = iter(values)
        new_args, new_kwargs = map_tensors((args, kwargs), lambda t: next(it) if t.is_floating_point() else t)
        out: list[torch.Tensor] = []
        map_tensors(module(*new_args, **new_kwargs),
                    lambda t: out.append(t) or t if t.is_floating_point() else t)
        if not out:
            raise TypeError("the module returns no float tensor")
        return tuple(out)
    return fn


def _float(t: torch.Tensor) -> float | None:
    try:
        return float(t.detach())
    except (TypeError, ValueError, RuntimeError):
        return None
