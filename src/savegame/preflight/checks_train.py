"""Preflight checks that train a copy for a few steps: the model can overfit a few examples
(``checks_overfit.py``), it beats an input-independent baseline (``checks_baseline.py``), and two
identical runs give identical losses (``checks_determinism.py``). This module gathers them.

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

from ._training import SEED, _dropout_off, _is_cross_entropy
from .checks_baseline import (BASELINE_EVALUATIONS, BASELINE_MARGIN, _baseline_run, _compact_zeroed_loss,
                              _constant_when_zeroed, _held_out_split, _input_independent_floor, _loss_of,
                              _plain_pair, _zeroed, check_input_independent_baseline)
from .checks_determinism import DETERMINISM_STEPS, _nondeterministic_ops, _seeded_losses, check_determinism
from .checks_overfit import (ABSOLUTE_TARGET, OVERFIT_MIN_STEPS, OVERFIT_SAMPLES, OVERFIT_STEPS_FACTOR,
                             RELATIVE_TARGET, _accuracy, _conflicting_duplicates, _forward, _lr, _overfit_causes,
                             _task, check_overfit_one_batch)

__all__ = ["check_overfit_one_batch", "check_input_independent_baseline", "check_determinism", "SEED",
           "OVERFIT_SAMPLES", "OVERFIT_STEPS_FACTOR", "OVERFIT_MIN_STEPS", "RELATIVE_TARGET", "ABSOLUTE_TARGET",
           "BASELINE_MARGIN", "BASELINE_EVALUATIONS", "DETERMINISM_STEPS"]
