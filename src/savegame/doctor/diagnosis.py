"""What the doctor says about one run: a verdict, how sure it is, why, and what to do.

>>> d = Diagnosis(run="cnn", verdict="overfitting", confidence=0.8,
...               evidence=["validation loss (smoothed) bottomed out at 0.21 at step 2,300"],
...               suggestions=["the run's best checkpoint is step 2,250 (loss/val 0.2071): ..."],
...               best_checkpoint={"step": 2250, "metric": "loss/val", "mode": "min", "value": 0.2071,
...                                "checkpoint": "step-002250"})
>>> d.to_dict()["verdict"], d.judged, d.to_dict()["best_checkpoint"]["step"]
('overfitting', True, 2250)
>>> Diagnosis(run="empty", cannot_judge="no scalar data").line()
'empty: cannot judge: no scalar data'
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._base import Verdict


@dataclass
class Finding:
    """A secondary observation: ``kind`` is a stable name (``nan``, ``noisy``, ``gap``,
    ``vanishing_gradients`` ...), ``message`` a sentence with steps and values."""

    kind: str
    message: str
    step: int | None = None
    severity: str = "warn"  # "info" | "warn"


@dataclass
class Marks:
    """Numbers a plot draws on the curves (any may be None).

    ``low_step`` / ``low_value`` are the lowest point of the *smoothed* validation (else training)
    loss, as the rules measure it: a point of a curve, not a checkpoint. The run's best checkpoint
    is :attr:`Diagnosis.best_checkpoint`."""

    low_step: int | None = None         # where the smoothed validation (else training) loss was lowest
    low_value: float | None = None      # that smoothed value
    diverged_step: int | None = None    # first step of the explosion / first non-finite value
    plateau_start: int | None = None    # where the loss stopped improving
    gap_step: int | None = None         # where the train/val gap is measured (the last val point)
    gap: float | None = None            # val - train there
    region: tuple[int, int] | None = None  # the steps that decided the verdict (first, last)
    region_label: str | None = None     # what happened there, for the plot's legend


@dataclass
class Diagnosis:
    """One run's diagnosis. ``verdict`` is the name of a verdict (one of
    :data:`~savegame.doctor.verdicts.VERDICTS`, or of a user's ``Verdict``), or None with
    ``cannot_judge`` saying why; ``verdict_info`` is that :class:`~savegame.doctor.Verdict`
    (colours, alarm...; not in :meth:`to_dict`). ``tags`` names the series it read (train_loss,
    val_loss, ...).

    ``best_checkpoint`` is the run's best checkpoint, the one ``savegame export RUN --best``
    writes: ``{"step", "metric", "mode", "value", "checkpoint"}`` from a savegame run's
    ``run.json`` (the best of the *kept* checkpoints by the keep policy's metric, see
    :mod:`savegame.ranking`); None for a plain TensorBoard logdir or a run that ranks none."""

    run: str
    verdict: str | None = None
    confidence: float = 0.0
    evidence: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    marks: Marks = field(default_factory=Marks)
    tags: dict[str, str] = field(default_factory=dict)
    cannot_judge: str | None = None
    best_checkpoint: dict[str, Any] | None = None
    decided_by: dict[str, Any] = field(default_factory=dict)  # the numbers that decided the verdict
    quantities: dict[str, Any] = field(default_factory=dict)  # every named quantity (quantities.py)
    verdict_info: Verdict | None = field(default=None, repr=False, compare=False)

    @property
    def judged(self) -> bool:
        return self.verdict is not None

    def numbers(self) -> str:
        """The numbers that decided the verdict, on one line: ``final/start 50.2 · final/best 128``."""
        return " · ".join(f"{k} {_number(v)}" for k, v in self.decided_by.items() if v is not None)

    def line(self) -> str:
        """One line for a terminal or a log."""
        if not self.judged:
            return f"{self.run}: cannot judge: {self.cannot_judge}"
        why = f" — {self.evidence[0]}" if self.evidence else ""
        return f"{self.run}: {self.verdict} ({self.confidence:.0%}){why}"

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON-ready (NaN/inf become None): run, verdict, confidence, evidence,
        suggestions, findings, marks, tags, cannot_judge, best_checkpoint, decided_by, quantities."""
        data = asdict(replace(self, verdict_info=None))
        del data["verdict_info"]  # code (a rule), not data: the JSON names the verdict
        data["confidence"] = round(self.confidence, 3)
        return json_safe(data)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats as None: strict JSON that every parser reads."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
