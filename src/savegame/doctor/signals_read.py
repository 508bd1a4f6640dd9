"""The training signals a run logged (``doctor/...`` tags, see ``signals.py``), summed up for
the verdict rules: gradient growth and size, the typical update/weight ratio, dead ReLUs.

>>> import numpy as np
>>> from savegame.doctor.curves import Series
>>> s = lambda *v: Series(np.arange(len(v)) * 50, np.array(v, float))
>>> summary = summarize_signals({"doctor/update_ratio/fc": s(3e-2, 4e-2, 5e-2),
...                              "doctor/dead_relu/act": s(0.1, 0.7, 0.9)})
>>> round(summary.update_ratio, 3), summary.dead_relu, [f.kind for f in summary.findings]
(0.045, 0.9, ['update_ratio_high', 'dead_relu'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from .curves import Series
from .diagnosis import Finding

PREFIX = "doctor/"
UPDATE_HIGH = 1e-2       # update/weight ratio per step above this: a finding (cs231n: ~1e-3 is healthy)
UPDATE_LOW = 1e-5        # ... below this: a finding
VANISHING = 1e-5         # total gradient norm at the end below this: vanishing gradients
EXPLODING_GROWTH = 1e3   # total gradient norm grew more than this factor: exploding gradients
DEAD_RELU = 0.5          # a ReLU module with more dead units than this: dying ReLU


@dataclass
class SignalSummary:
    update_ratio: float | None = None   # median over layers of each layer's median (second half)
    grad_total_end: float | None = None  # total gradient norm, median of the last samples
    grad_growth: float | None = None     # largest / first total gradient norm
    dead_relu: float | None = None       # worst module's dead fraction at the end
    nonfinite_grads: int = 0             # samples that saw non-finite gradients
    findings: list[Finding] = field(default_factory=list)


def summarize_signals(scalars: Mapping[str, Series], prefix: str = PREFIX) -> SignalSummary:
    summary = SignalSummary()
    ratios = [_late_median(s) for tag, s in scalars.items() if tag.startswith(f"{prefix}update_ratio/")]
    ratios = [r for r in ratios if r is not None and r > 0]
    if ratios:
        summary.update_ratio = float(np.median(ratios))
        if summary.update_ratio > UPDATE_HIGH:
            summary.findings.append(Finding("update_ratio_high", f"updates are {summary.update_ratio:.1e} of the "
                                            "weights per step (healthy: about 1e-3): learning rate too high?"))
        elif summary.update_ratio < UPDATE_LOW:
            summary.findings.append(Finding("update_ratio_low", f"updates are {summary.update_ratio:.1e} of the "
                                            "weights per step (healthy: about 1e-3): learning rate too low?"))
    total = scalars.get(f"{prefix}grad_norm/total")
    if total is not None and len(total):
        finite = total.values[np.isfinite(total.values)]
        if len(finite):
            summary.grad_total_end = float(np.median(finite[-3:]))
            first = float(finite[0])
            if first > 0:
                summary.grad_growth = float(finite.max() / first)
            if summary.grad_total_end < VANISHING:
                summary.findings.append(Finding("vanishing_gradients", f"total gradient norm is "
                                                f"{summary.grad_total_end:.1e} at the end: vanishing gradients"))
            elif summary.grad_growth is not None and summary.grad_growth > EXPLODING_GROWTH:
                summary.findings.append(Finding("exploding_gradients", f"total gradient norm grew "
                                                f"{summary.grad_growth:.3g}x: exploding gradients"))
        if len(finite) < len(total.values):
            summary.nonfinite_grads = int(len(total.values) - len(finite))
    dead = [(tag[len(prefix) + len("dead_relu/"):], float(s.values[-1])) for tag, s in scalars.items()
            if tag.startswith(f"{prefix}dead_relu/") and len(s) and np.isfinite(s.values[-1])]
    if dead:
        module, worst = max(dead, key=lambda item: item[1])
        summary.dead_relu = worst
        if worst > DEAD_RELU:
            summary.findings.append(Finding("dead_relu", f"{worst:.0%} of the units of ReLU {module!r} never "
                                            "fire on a batch (dying ReLU)"))
    counts = scalars.get(f"{prefix}nonfinite_grads")
    if counts is not None and len(counts):
        bad = int(np.sum(np.nan_to_num(counts.values, nan=1.0) > 0))
        summary.nonfinite_grads = max(summary.nonfinite_grads, bad)
    if summary.nonfinite_grads:
        summary.findings.append(Finding("nonfinite_grads", f"{summary.nonfinite_grads} signal sample(s) saw "
                                        "NaN/inf gradients"))
    return summary


def _late_median(s: Series) -> float | None:
    values = s.values[np.isfinite(s.values)]
    if not len(values):
        return None
    return float(np.median(values[len(values) // 2:]))
