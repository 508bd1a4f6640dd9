"""What one family of the reliability suite tried, and every way it went wrong.

The CI tests (``tests/reliability/test_*.py``) and the long runner (``bench/torture.py``) call
the same scenario functions; each returns :class:`Tally` objects. A test asserts that a tally
has no failure; the runner prints them as the table of ``docs/reliability.md``.

>>> t = Tally("damaged files: checkpoint", "damaged files tried")
>>> t.tried += 2
>>> t.fail("corrupt_resume", "step-000004: a flipped byte in the manifest was loaded")
>>> t.ok, t.corrupt_resume, t.failures[0].startswith("corrupt resume")
(False, 1, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The figures every row shows, and what each counts. ``other`` is any other wrong outcome: an
# unclear error, a crash that is not savegame's own error, a hang, training that did not go on.
KINDS = {
    "data_lost": "a committed checkpoint, curve point or trial result gone",
    "corrupt_resume": "a damaged or half-written checkpoint loaded or resumed from",
    "code_executed": "a payload in a file ran",
    "other": "any other wrong outcome",
}


@dataclass
class Tally:
    """One row: ``family`` (what was tortured), ``unit`` (what ``tried`` counts)."""

    family: str
    unit: str
    tried: int = 0
    data_lost: int = 0
    corrupt_resume: int = 0
    code_executed: int = 0
    other: int = 0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the row covered, for the table's reader

    def fail(self, kind: str, what: str) -> None:
        """Count one wrong outcome of ``kind`` (a key of :data:`KINDS`), described by ``what``."""
        if kind not in KINDS:
            raise ValueError(f"Tally.fail: kind must be one of {sorted(KINDS)}, not {kind!r}")
        setattr(self, kind, getattr(self, kind) + 1)
        self.failures.append(f"{kind.replace('_', ' ')}: {what}")

    @property
    def ok(self) -> bool:
        return not self.failures

    def check(self) -> None:
        """For tests: raise AssertionError listing the failures (the first 20), if any."""
        if self.failures:
            shown = "\n  ".join(self.failures[:20])
            raise AssertionError(f"{self.family}: {len(self.failures)} of {self.tried} {self.unit} went wrong:\n  {shown}")
