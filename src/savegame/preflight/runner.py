"""``preflight``: run every check on copies of the user's objects and gather the verdicts.

Every check is a :class:`~savegame.preflight._base.Check`: the built-in ones are the
:data:`REGISTRY` (in the order they run and are reported; adding one is one entry there), the
user's ``checks=`` run after them. A check that crashes is that check's failure; a setup that
cannot be built is a failed "setup" check. Nothing raises out of ``preflight`` for bad user input
(a malformed ``checks=`` list is a programming error: ``TypeError`` / ``ValueError`` before
anything runs), and the user's model, optimizer and random generators are as they were before.

Ctrl-C is the one exception that leaves: it stops the check that runs at the end of its current
step and raises :class:`~savegame.preflight.budget.PreflightInterrupted` (a ``KeyboardInterrupt``),
after the random generators are restored (see ``budget.py``).
"""

from __future__ import annotations

import random
import time
import traceback
import warnings
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ..checkpoint.rng import capture_rng, restore_rng
from ._base import Check, CheckNotAvailable, FunctionCheck, _LoadError, check_list
from .budget import TIME_BUDGET, PreflightInterrupted, check_interrupt, ctrl_c_stops_preflight
from .report import CheckResult, PreflightReport
from .setup import Setup, SetupError, explain_error

_CHECKS = "savegame.preflight.checks_"
# The built-in checks, in the order they run and are reported. "data" and "loss/target shapes"
# still say something useful when the loss cannot be computed on the first batch.
REGISTRY: list[Check] = [
    FunctionCheck("data", _CHECKS + "data:check_data", needs_loss=False),
    FunctionCheck("loss/target shapes", _CHECKS + "loss:check_loss_target_shapes", needs_loss=False),
    FunctionCheck("loss at init", _CHECKS + "loss:check_loss_at_init"),
    FunctionCheck("gradients", _CHECKS + "grad:check_gradients"),
    FunctionCheck("parameters change", _CHECKS + "grad:check_parameters_change"),
    FunctionCheck("batch independence", _CHECKS + "grad:check_batch_independence", cheap=False),
    FunctionCheck("overfit one batch", _CHECKS + "overfit:check_overfit_one_batch", cheap=False),
    FunctionCheck("input-independent baseline", _CHECKS + "baseline:check_input_independent_baseline", cheap=False),
    FunctionCheck("determinism", _CHECKS + "determinism:check_determinism", cheap=False),
]
# Opt-in (gradcheck=True): float64 numerical gradients are slow.
GRADCHECK: Check = FunctionCheck("gradcheck", _CHECKS + "grad:check_gradcheck")
RESERVED = ("setup", "untouched")  # the names of the runner's own results
SEED = 0  # every check starts from this seed, so a report is the same run after run


def run_preflight(model: nn.Module, loss_fn: Callable | None, data: Iterable, *, optimizer: Any = None,
              steps: int | None = None, device: Any = None, forward: Callable | None = None,
              quick: bool = False, keys: tuple[str, str] | None = None,
              gradcheck: bool = False, time_budget: float | None = TIME_BUDGET,
              checks: Sequence[Check] = ()) -> PreflightReport:
    """The body of :func:`savegame.preflight` (see there); imports torch, so it loads on first use."""
    builtin = [*REGISTRY, *([GRADCHECK] if gradcheck else [])]
    user = check_list(checks, taken=[*RESERVED, *(c.name for c in builtin)])
    # (check, whether savegame wrote it): a crash of a built-in check is savegame's bug, not the user's
    registry = [(c, mine) for mine, group in ((True, builtin), (False, user)) for c in group if c.cheap or not quick]
    started = time.perf_counter()
    try:
        with ctrl_c_stops_preflight():
            rng = capture_rng()
            before = _fingerprint(model, optimizer)
            try:
                with torch.enable_grad(), warnings.catch_warnings():
                    # The checks provoke torch's warnings on purpose; their verdicts say it in words.
                    warnings.simplefilter("ignore")
                    results, images = _run(model, loss_fn, data, registry, optimizer=optimizer, steps=steps,
                                           device=device, forward=forward, quick=quick, keys=keys,
                                           time_budget=time_budget)
            finally:
                restore_rng(rng)
            changed = _fingerprint(model, optimizer) != before
    except PreflightInterrupted as stop:
        where = f" in the check {stop.check!r}" if stop.check else ""
        raise PreflightInterrupted(f"{stop.args[0] if stop.args else 'Ctrl-C during preflight'}: preflight "
                                   f"stopped{where} after {time.perf_counter() - started:.1f} s; it works on "
                                   "copies, so the model, the optimizer and the random state are as they were",
                                   check=stop.check) from None
    if changed:
        results.append(CheckResult("untouched", "fail", "preflight changed the model's or the optimizer's "
                                   "state, which it must never do", fix="report this as a savegame bug; "
                                   "reload the model before training"))
    return PreflightReport(results, images=images)


def _run(model, loss_fn, data, registry, **options) -> tuple[list[CheckResult], torch.Tensor | None]:
    started = time.perf_counter()
    try:
        setup, problem, loss_error = _build(model, loss_fn, data, **options)
    except PreflightInterrupted as stop:
        stop.check = stop.check or "setup"
        raise
    head = CheckResult("setup", "fail" if problem else "pass", problem[0] if problem else _describe(setup),
                       fix=problem[1] if problem else "", seconds=time.perf_counter() - started)
    results = [head]
    for check, builtin in registry:
        if problem:
            results.append(CheckResult(check.name, "skip", "not run: the setup failed"))
        elif loss_error and check.needs_loss:
            results.append(CheckResult(check.name, "skip", "not run: the loss cannot be computed on the first "
                                       "batch (see 'loss/target shapes')"))
        else:
            try:
                check_interrupt()
                results.extend(run_check(check, setup, builtin=builtin))
            except PreflightInterrupted as stop:
                stop.check = stop.check or check.name
                raise
    return results, _images(setup)


def _images(setup: Setup | None) -> torch.Tensor | None:
    """The first batch as images for ``report.images`` (TensorBoard), or None."""
    if setup is None:
        return None
    try:
        from .checks_data import image_grid
        return image_grid(setup)
    except Exception:  # noqa: BLE001 - a picture is a bonus, never a failure
        return None


def _build(model, loss_fn, data, **options) -> tuple[Setup | None, tuple[str, str] | None, str | None]:
    """(setup, (message, fix) when the setup is unusable, error text when the loss cannot be computed)."""
    try:
        setup = Setup.build(model, loss_fn, data, **options)
    except SetupError as error:
        return None, (str(error), "give preflight the same model, loss and data you train with"), None
    except Exception as error:  # noqa: BLE001 - a bad device string, a loader that crashes...
        return None, (f"the setup could not be built: {explain_error(error)}",
                      "check the device= argument and that the data loader runs on its own"), None
    if setup.forward is None and not setup.splittable:
        try:
            setup.split(setup.batches[0])
        except SetupError as error:
            fix = "yield (inputs, targets) or a dict, or pass forward=lambda model, batch: loss"
            return None, (str(error), fix), None
    try:
        model_copy = setup.fresh_model()
    except Exception as error:  # noqa: BLE001 - e.g. a module holding a lock or an open file
        return None, (f"the model cannot be copied: {explain_error(error)}",
                      "preflight only runs copies of the model; make it deep-copyable (copy.deepcopy)"), None
    try:
        _seed()
        setup.loss(model_copy, setup.batches[0])
    except Exception as error:  # noqa: BLE001 - which check explains it depends on the error
        text = explain_error(error)
        if "same device" in str(error) or "expected device" in str(error):
            return None, (f"the model and the data are on different devices ({text.partition(' — ')[0]})",
                          "move the model and the data to one device (model.to(device)), or pass device="), None
        return setup, None, text
    return setup, None, None


def run_check(check: Check, setup: Setup, *, builtin: bool = True) -> list[CheckResult]:
    """Run one check, seeded and timed; a crash is its failure, named after it (``builtin``: a
    crash is savegame's bug, else the fix points at the user's check)."""
    started = time.perf_counter()
    try:
        _seed()
        found = check.run(setup)
    except CheckNotAvailable as why:
        return [CheckResult(check.name, "skip", str(why))]
    except _LoadError as failed:
        return [_crash(check.name, failed.error, started, "loading the check failed", builtin)]
    except Exception as error:  # noqa: BLE001 - one check's crash must not sink the report
        return [_crash(check.name, error, started, "the check crashed", builtin)]
    results = list(found) if isinstance(found, (list, tuple)) else [found]
    if not results or not all(isinstance(r, CheckResult) for r in results):
        fix = ("report this as a savegame bug" if builtin else
               f"make {type(check).__name__}.run(setup) return a CheckResult or a list of them")
        return [CheckResult(check.name, "fail", f"the check returned {type(found).__name__}, not CheckResult",
                            fix=fix, seconds=time.perf_counter() - started)]
    share = (time.perf_counter() - started) / len(results)
    for result in results:
        result.seconds = share
    return results


def _crash(name: str, error: BaseException, started: float, what: str, builtin: bool = True) -> CheckResult:
    frames = traceback.extract_tb(error.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    fix = ("run the model and the loss on one batch by hand to see the full traceback; if they run, report "
           "this as a savegame bug" if builtin else
           f"fix the check {name!r}" + (f" ({where})" if where else "") + ": it raised the error above")
    return CheckResult(name, "fail", f"{what}: {explain_error(error)}", fix=fix,
                       numbers={"error": type(error).__name__, "where": where},
                       seconds=time.perf_counter() - started)


def _seed() -> None:
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)


def _describe(setup: Setup) -> str:
    try:
        optimizer = type(setup.fresh_optimizer(setup.fresh_model())).__name__
    except Exception as error:  # noqa: BLE001 - e.g. no trainable parameter; the checks say so
        optimizer = f"? ({explain_error(error)})"
    count = len(setup.batches)
    return (f"{count} batch{'es' if count > 1 else ''} on {setup.device}, optimizer {optimizer}, "
            f"{setup.steps} steps" + (f", {setup.time_budget:g} s per training check" if setup.time_budget is not None
                                      else "") + (", quick" if setup.quick else ""))


def _fingerprint(model: nn.Module, optimizer: Any) -> list:
    """A cheap summary of every tensor's value (no copy of the model is kept): sums, weighted sums
    and version counters of the parameters, buffers and optimizer state, plus the train flags."""
    def tensor(t: torch.Tensor) -> tuple:
        with torch.no_grad():
            f = t.detach().reshape(-1)
            f = (torch.view_as_real(f) if f.is_complex() else f).double().reshape(-1)
            weights = torch.arange(f.numel(), device=f.device, dtype=torch.float64).remainder_(97).add_(1)
            # repr: NaN != NaN, but its text is stable.
            return (tuple(t.shape), str(t.dtype), str(t.device), t._version, repr(float(f.sum())),
                    repr(float((f * weights).sum())))

    def value(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return tensor(v)
        if isinstance(v, dict):
            return {k: value(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [value(x) for x in v]
        return repr(v)

    found = [value(model.state_dict()), [(m.training) for m in model.modules()],
             [(p.requires_grad, None if p.grad is None else id(p.grad)) for p in model.parameters()]]
    if isinstance(optimizer, torch.optim.Optimizer):
        found.append(value(optimizer.state_dict()))
    return found
