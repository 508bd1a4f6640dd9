"""Preflight: double check a training setup before spending a day of GPU time on it.

``preflight(model, loss_fn, data)`` runs the checks of cs231n's notes and Karpathy's "A Recipe for
Training Neural Networks" on copies of your objects (data, loss at init, gradients, overfitting one
batch, ...) and says pass, warn or fail for each, with the likely fix.

>>> import torch
>>> from savegame.preflight import preflight
>>> _ = torch.manual_seed(0)
>>> model = torch.nn.Linear(4, 3)
>>> data = [(torch.randn(32, 4), torch.randint(0, 3, (32,))) for _ in range(2)]
>>> report = preflight(model, torch.nn.CrossEntropyLoss(), data, quick=True)
>>> report["loss at init"].status, report["data"].status
('pass', 'pass')
>>> bad = [(torch.randn(32, 4), torch.randint(0, 5, (32,)))]   # labels 0..4 for 3 outputs
>>> report = preflight(model, torch.nn.CrossEntropyLoss(), bad, quick=True)
>>> report.passed, report["label range"].status
(False, 'fail')

Checks of your own subclass :class:`Check` (``_base.py``) and run after the built-in ones:
``preflight(..., checks=[MyCheck()])``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from ._base import Check, CheckNotAvailable, FunctionCheck
from .budget import TIME_BUDGET, PreflightInterrupted
from .report import CheckResult, PreflightReport

if TYPE_CHECKING:
    from torch import nn


def preflight(model: nn.Module, loss_fn: Callable | None, data: Iterable, *, optimizer: Any = None,
              steps: int | None = None, device: Any = None, forward: Callable | None = None,
              quick: bool = False, keys: tuple[str, str] | None = None,
              gradcheck: bool = False, time_budget: float | None = TIME_BUDGET,
              checks: Sequence[Check] = ()) -> PreflightReport:
    """Check a training setup before training: data, loss at init, gradients, overfitting one batch...

    Args:
        model: the model to train; only copies of it are run.
        loss_fn: ``loss_fn(model(inputs), targets) -> loss`` (may be ``None`` with ``forward``).
        data: a DataLoader or any iterable of ``(inputs, targets)`` or dict batches; the first two are used.
        optimizer: an optimizer (its class and hyperparameters are reused on a copy), a factory
            ``params -> optimizer``, or ``None`` for Adam(lr=1e-3).
        steps: the step budget of the training checks (default 50, 20 with ``quick``).
        device: where to run (default: the model's device).
        forward: ``forward(model, batch) -> loss`` for batches that are not ``(inputs, targets)``.
        quick: only the cheap checks (data, loss, gradients, parameters change), fewer steps.
        keys: ``(input_key, target_key)`` of dict batches.
        gradcheck: also run ``torch.autograd.gradcheck`` in float64 (slow).
        time_budget: seconds each check that trains (overfit one batch, input-independent baseline,
            determinism) may run, default 10; ``None`` for no limit. A check cut short says so in
            its message ("cut short by the time budget after N steps / X s") and never fails for
            lack of time: it warns where the steps it ran settle nothing.
        checks: checks of your own (:class:`Check` objects; :class:`FunctionCheck` wraps a
            function), run after the built-in ones, in this order, under the same rules: seeded,
            timed, on copies, skipped when the setup failed (or, with ``needs_loss``, when the loss
            cannot be computed), left out under ``quick=True`` unless ``cheap``; one that raises is
            its own failed result, named after it. The built-in checks always run.

    Returns:
        a :class:`PreflightReport`; ``report.passed`` is False when any check failed.

    Raises:
        TypeError, ValueError: ``checks`` holds something that is not a :class:`Check`, or a name
            that another check has (before anything runs).
        PreflightInterrupted: on Ctrl-C (a ``KeyboardInterrupt``): the check that runs stops at the end
            of its step (a second Ctrl-C: at once), whatever SIGINT handler was installed (a
            ``savegame.Run``'s included, which is back afterwards); the model, the optimizer and the
            random state are as they were.

    A check of your own (it runs after the built-in ones; ``quick=True`` keeps only cheap ones):

    >>> import torch
    >>> class NoConstantTargets(Check):
    ...     name, needs_loss = "targets vary", False    # it only reads the data
    ...     def run(self, setup):
    ...         y = torch.cat([setup.split(batch)[1].float() for batch in setup.batches])
    ...         if y.min() == y.max():
    ...             return CheckResult(self.name, "fail", f"every target is {float(y[0]):g}",
    ...                                fix="check the labels: a constant target teaches nothing")
    ...         return CheckResult(self.name, "pass", f"{len(y.unique())} distinct targets")
    >>> data = [(torch.randn(32, 4), torch.zeros(32, dtype=torch.long))]
    >>> report = preflight(torch.nn.Linear(4, 3), torch.nn.CrossEntropyLoss(), data, quick=True,
    ...                    checks=[NoConstantTargets()])
    >>> report.checks[-1].name, report["targets vary"].status, report["targets vary"].message
    ('targets vary', 'fail', 'every target is 0')
    """
    from .runner import run_preflight  # torch loads here, not when savegame is imported

    return run_preflight(model, loss_fn, data, optimizer=optimizer, steps=steps, device=device, forward=forward,
                         quick=quick, keys=keys, gradcheck=gradcheck, time_budget=time_budget, checks=checks)


__all__ = ["preflight", "PreflightReport", "CheckResult", "PreflightInterrupted", "TIME_BUDGET",
           "Check", "FunctionCheck", "CheckNotAvailable"]
