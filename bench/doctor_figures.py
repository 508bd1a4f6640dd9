"""Draw one example figure per doctor verdict for docs/doctor.md.

Generates the labeled set of tests/doctor/cases.py (seed 0, ~30 s on a CPU) into a temporary
folder, or reads an existing one given with ``--cases DIR``, diagnoses every run with
``savegame.doctor.diagnose`` and saves one PNG per verdict to ``docs/img/doctor/<verdict>.png``.

    python bench/doctor_figures.py
    python bench/doctor_figures.py --cases /tmp/cases --out docs/img/doctor
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "doctor"))  # tests/doctor has no __init__.py

import cases  # noqa: E402

from savegame.doctor import VERDICTS, diagnose, load_runs  # noqa: E402
from savegame.doctor.plot import run_figure  # noqa: E402

# The case drawn for each verdict: the one whose picture reads best.
CHOSEN = {
    "healthy": "healthy_cls",
    "overfitting": "overfit_reg",
    "underfitting": "underfit_reg",
    "diverged": "diverged_reg",
    "plateau": "plateau_cls",
    "lr_too_high": "lr_too_high_reg",
    "lr_too_low": "lr_too_low_cls",
    "still_improving": "still_improving_cls",
}
MAX_BYTES = 120_000
DPI = 80


def draw(cases_dir: Path, out_dir: Path) -> dict[str, tuple[str, str | None, int]]:
    """{verdict: (run, verdict the doctor gave, PNG size in bytes)}."""
    runs = {run.name: run for run in load_runs(cases_dir)}
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for verdict in VERDICTS:
        name = CHOSEN[verdict]
        run = runs[name]
        diagnosis = diagnose(run)
        path = out_dir / f"{verdict}.png"
        fig = run_figure(run, diagnosis)
        dpi = DPI
        while True:
            fig.savefig(path, dpi=dpi)
            if path.stat().st_size < MAX_BYTES or dpi <= 40:
                break
            dpi -= 10
        written[verdict] = (name, diagnosis.verdict, path.stat().st_size)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, default=None,
                        help="an existing labeled set (python tests/doctor/cases.py DIR); default: generate one")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "doctor")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cases_dir = args.cases
        if cases_dir is None:
            cases_dir = Path(tmp) / "cases"
            cases.generate(cases_dir, [CHOSEN[v] for v in VERDICTS], seed=0)
        written = draw(cases_dir, args.out)
    wrong = []
    for verdict, (name, got, size) in written.items():
        print(f"{verdict:16} {name:22} doctor: {got or 'cannot judge':16} {size / 1000:6.1f} KB")
        if got != verdict:
            wrong.append(f"{name}: expected {verdict}, the doctor said {got}")
    if wrong:
        sys.exit("the figures do not show their verdict:\n  " + "\n  ".join(wrong))


if __name__ == "__main__":
    main()
