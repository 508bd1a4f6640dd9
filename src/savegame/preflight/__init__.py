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
"""

from .report import CheckResult, PreflightReport
from .runner import preflight

__all__ = ["preflight", "PreflightReport", "CheckResult"]
