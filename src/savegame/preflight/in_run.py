"""Preflight inside a run: once, when the run starts, with its report kept in the run folder.

``run.preflight(model, loss_fn, data)`` runs :func:`savegame.preflight` and keeps the report in
``preflight.json`` and in TensorBoard; a resumed run does not check again and returns the report
of its start.

>>> import tempfile
>>> from pathlib import Path
>>> earlier_preflight(Path(tempfile.mkdtemp()), 500)["preflight"].status  # no preflight.json
'skip'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import PreflightFailedError
from ..messages import notice
from ..runinfo import write_json_atomic
from .report import CheckResult, PreflightReport

REPORT_FILE = "preflight.json"


def preflight_in_run(run_dir: Path, writer: Any, step: int, model: Any, loss_fn: Any, data: Any, *,
                     continue_on_failure: bool, options: dict[str, Any]) -> PreflightReport:
    """Run the checks, keep the report (``preflight.json``; a table in TensorBoard's TEXT, the
    first batch in IMAGES when it is images), raise :class:`PreflightFailedError` on a failed
    check unless ``continue_on_failure``."""
    from . import preflight

    report = preflight(model, loss_fn, data, **options)
    write_json_atomic(run_dir / REPORT_FILE, report.to_dict())
    writer.add_text("preflight", report.to_markdown(), step)
    if report.images is not None:
        writer.add_images("preflight/first_batch", report.images, step)
    if not report.passed and not continue_on_failure:
        raise PreflightFailedError(report)
    return report


def earlier_preflight(run_dir: Path, resumed_step: int) -> Any:
    """On resume: the report of the preflight that ran when the run started (``preflight.json``),
    or a report with one skipped check, so that ``print(run.preflight(...))`` says what happened."""
    try:
        saved = json.loads((run_dir / REPORT_FILE).read_text())
        report = PreflightReport([CheckResult(**check) for check in saved["checks"]])
    except (OSError, ValueError, KeyError, TypeError):
        return PreflightReport([CheckResult(
            "preflight", "skip", f"skipped: the run resumed from step {resumed_step}; preflight runs once, "
            "when a run starts")])
    notice(f"preflight skipped on resume; returning its report from when the run started "
           f"({run_dir / 'preflight.json'})")
    return report
