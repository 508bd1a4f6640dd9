"""The torture runner (issue 16): every family of ``tests/reliability/`` at its long scale, one
table of what was tried and what went wrong. The CI tests run the same functions, smaller.

    python bench/torture.py                  # all of it (~10-15 minutes on 2 cores)
    python bench/torture.py --only kills     # one family (see FAMILIES), e.g. while fixing it
    python bench/torture.py --write          # also put the table into docs/reliability.md

Each family returns tallies (``tests/reliability/tally.py``): how many kills, faults, damaged
files, hostile inputs or fuzz cases it tried, and how many of them lost data, resumed from a
corrupt checkpoint, ran a payload's code, or went wrong in another way (an unclear error, a crash
that is not savegame's own error, a hang). The exit status is 1 when any row has a failure; the
first failures of each row are printed below the table.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "tests" / "reliability"), str(ROOT / "tests"), str(HERE)]

from machine import machine  # noqa: E402

# (name for --only, module in tests/reliability, function): each function takes
# (workdir, scale, seed) and returns a Tally or a list of them
FAMILIES = [
    ("kills", "kills", "kill_storms"),
    ("sweep-kills", "job_kills", "sweep_storm"),
    ("torchrun-kills", "job_kills", "torchrun_storm"),
    ("save-faults", "iofaults", "save_faults"),
    ("log-faults", "iofaults", "event_writer_faults"),
    ("disk-faults", "iofaults", "real_disk_faults"),
    ("damage", "damage", "damaged_checkpoints"),
    ("damage-events", "damage", "damaged_event_files"),
    ("hostile-pickle", "hostile", "pickle_payloads"),
    ("hostile-paths", "hostile", "path_traversal"),
    ("hostile-sizes", "hostile", "huge_sizes"),
    ("hostile-json", "hostile", "hostile_json"),
    ("hostile-names", "hostile", "hostile_names"),
    ("fuzz-manifest", "fuzz", "fuzz_manifest"),
    ("fuzz-checkpoint", "fuzz", "fuzz_checkpoint_bytes"),
    ("fuzz-events", "fuzz", "fuzz_event_reader"),
    ("fuzz-spec", "fuzz", "fuzz_sweep_spec"),
    ("fuzz-atheris", "fuzz", "fuzz_atheris"),
    ("two-writers", "concurrency", "two_processes_one_folder"),
    ("two-sweeps", "concurrency", "two_sweeps_one_study"),
    ("readers", "concurrency", "readers_while_writing"),
]
BEGIN, END = "<!-- torture:begin -->", "<!-- torture:end -->"


def run_family(name: str, module: str, function: str, scale: str, seed: int) -> tuple[list, float]:
    work = Path(tempfile.mkdtemp(prefix=f"torture-{name}-"))
    started = time.monotonic()
    try:
        result = getattr(importlib.import_module(module), function)(work, scale, seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return (result if isinstance(result, list) else [result]), time.monotonic() - started


def table(rows: list[tuple[object, float]]) -> str:
    lines = ["| family | tried | data lost | corrupt resume | code executed | other failures | s |",
             "|---|---|---|---|---|---|---|"]
    for tally, seconds in rows:
        lines.append(f"| {tally.family} | {tally.tried} {tally.unit} | {tally.data_lost} | {tally.corrupt_resume} "
                     f"| {tally.code_executed} | {tally.other} | {seconds:.0f} |")
    totals = {}
    for tally, _ in rows:
        totals[tally.unit] = totals.get(tally.unit, 0) + tally.tried
    lines.append("")
    lines.append("In all: " + ", ".join(f"{n} {unit}" for unit, n in totals.items()) + "; "
                 f"data lost: {sum(t.data_lost for t, _ in rows)}, corrupt resume: "
                 f"{sum(t.corrupt_resume for t, _ in rows)}, code executed: {sum(t.code_executed for t, _ in rows)}, "
                 f"other failures: {sum(t.other for t, _ in rows)}.")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=[name for name, _, _ in FAMILIES],
                        help="run only this family (repeatable)")
    parser.add_argument("--scale", choices=["ci", "torture"], default="torture")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--write", action="store_true", help="put the table into docs/reliability.md")
    args = parser.parse_args()
    print(machine(), flush=True)
    started = time.monotonic()
    rows = []
    for name, module, function in FAMILIES:
        if args.only and name not in args.only:
            continue
        tallies, seconds = run_family(name, module, function, args.scale, args.seed)
        for tally in tallies:
            rows.append((tally, seconds / len(tallies)))
            print(f"{tally.family}: {tally.tried} {tally.unit}, {len(tally.failures)} failures, "
                  f"{seconds / len(tallies):.0f} s", flush=True)
    total = time.monotonic() - started
    text = table(rows)
    command = "python bench/torture.py" + ("" if args.scale == "torture" else f" --scale {args.scale}") + \
        "".join(f" --only {name}" for name in args.only or [])
    print(f"\n{text}\n\nwall time: {total / 60:.1f} min (`{command}`, seed {args.seed})")
    for tally, _ in rows:
        for line in tally.notes:
            print(f"- {tally.family}: {line}")
        for failure in tally.failures[:10]:
            print(f"  FAILED {tally.family}: {failure}")
    if args.write:
        docs = ROOT / "docs" / "reliability.md"
        block = (f"{BEGIN}\n```\n{machine()}\n```\n\n{text}\n\nWall time {total / 60:.1f} min, seed {args.seed}, "
                 f"`{command}`.\n{END}")
        current = docs.read_text()
        docs.write_text(re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, current, flags=re.S))
    return 0 if all(t.ok for t, _ in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
