"""What preflight found: one ``CheckResult`` per check, gathered in a ``PreflightReport``.

>>> report = PreflightReport([CheckResult("loss at init", "pass", "2.31 vs ln(10) = 2.30"),
...                           CheckResult("overfit one batch", "fail", "loss stuck at 1.46",
...                                       fix="return logits, not softmax")])
>>> report.passed, [c.status for c in report.checks]
(False, ['pass', 'fail'])
>>> report.to_dict()["checks"][1]["fix"]
'return logits, not softmax'
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

STATUSES = ("pass", "warn", "fail", "skip")


@dataclass
class CheckResult:
    """One check's verdict.

    Args:
        name: the check, in the user's words ("loss at init").
        status: ``"pass"``, ``"warn"``, ``"fail"`` or ``"skip"``.
        message: what was measured and what was expected, in plain words.
        fix: the likely fix when status is warn or fail ("" otherwise).
        numbers: the measured values (JSON-able), e.g. ``{"loss": 2.31, "expected": 2.30}``.
        seconds: how long the check took.
    """

    name: str
    status: str
    message: str
    fix: str = ""
    numbers: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"CheckResult.status must be one of {STATUSES}, got {self.status!r}")


@dataclass
class PreflightReport:
    """All checks of one preflight; ``passed`` when none failed (warnings do not fail it)."""

    checks: list[CheckResult]
    images: Any = field(default=None, repr=False, compare=False)  # the first batch, (N, C, H, W), if images

    @property
    def passed(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def __getitem__(self, name: str) -> CheckResult:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"no check named {name!r}; there are {[c.name for c in self.checks]}")

    def to_markdown(self) -> str:
        """A Markdown table, for TensorBoard's TEXT tab."""
        rows = ["| status | check | what was found | likely fix |", "|---|---|---|---|"]
        for c in self.checks:
            cells = [c.status.upper() if c.status in ("warn", "fail") else c.status, c.name, c.message, c.fix]
            rows.append("| " + " | ".join(str(x).replace("|", "\\|").replace("\n", " ") for x in cells) + " |")
        return f"**preflight: {'passed' if self.passed else 'FAILED'}**\n\n" + "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def table(self) -> Any:
        """A rich ``Table``: status, check, message and fix."""
        from rich.table import Table

        colors = {"pass": "green", "warn": "yellow", "fail": "red", "skip": "dim"}
        table = Table(title="preflight: " + ("passed" if self.passed else "FAILED"))
        for column in ("status", "check", "what was found", "likely fix"):
            table.add_column(column, overflow="fold")
        for c in self.checks:
            table.add_row(f"[{colors[c.status]}]{c.status}[/]", c.name, c.message, c.fix)
        return table

    def __str__(self) -> str:
        lines = [f"preflight: {'passed' if self.passed else 'FAILED'}"]
        for c in self.checks:
            lines.append(f"  [{c.status:4}] {c.name}: {c.message}" + (f" -> fix: {c.fix}" if c.fix else ""))
        return "\n".join(lines)
