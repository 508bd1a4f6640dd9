"""Preflight: two identical short runs (same seed, fresh copies, same batches) give identical
losses; when they differ, the nondeterministic ops that torch names, and what to set.

>>> import torch
>>> from savegame.preflight.setup import Setup
>>> _ = torch.manual_seed(0)
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
from typing import Any

import numpy
import torch

from ._training import SEED
from .budget import Budget
from .checks_grad import names, scalar_loss, seeded, timed, trainable
from .report import CheckResult
from .setup import Setup

DETERMINISM_STEPS = 4     # two runs of 4 steps: a difference shows at step 0 (forward) or 1 (backward)


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
