"""How often a 2-rank torchrun DDP job loses a rank at exit, with savegame as it is and, with
``--before REV``, as it was at commit REV, interleaved job by job under the same load.

A race in torch's gloo backend kills a rank with SIGABRT ("terminate called without an active
exception") when a worker thread frees a finished collective's Python-owned tensor during
interpreter shutdown. savegame's Coordinator holds its collectives' works so that it cannot (see
``savegame/distributed.py``). The job is ``tests/fixtures/ddp_script.py``, one epoch.

    python bench/torchrun_exits.py --jobs 80 --before 4c4acdd~1   # before the fix and after

Prints, per arm, the jobs run, the jobs that failed, and those that failed with the abort.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from torchrun_jobs import DDP_SCRIPT, torchrun, torchrun_env  # noqa: E402

ABORT = "terminate called without an active exception"


def one_job(workdir: Path, src: Path | None) -> tuple[int, bool]:
    """Run the DDP fixture once; its exit code and whether a rank died of the abort."""
    env = torchrun_env()
    if src is not None:  # another checkout's savegame, ahead of the installed one
        env["PYTHONPATH"] = str(src)
    workdir.mkdir(parents=True)
    done = subprocess.run(torchrun(DDP_SCRIPT, workdir / "run", workdir / "out", "--epochs", "1"),
                          capture_output=True, text=True, env=env, timeout=300)
    return done.returncode, ABORT in done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=40, help="jobs per arm (default 40)")
    parser.add_argument("--before", metavar="REV", help="also run savegame as of this commit, interleaved")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="torchrun-exits-") as tmp:
        arms: dict[str, Path | None] = {"now": None}
        if args.before:
            tree = Path(tmp) / "before"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), args.before],
                           check=True, capture_output=True)
            arms = {f"before ({args.before})": tree / "src", "now": None}
        tally = {arm: collections.Counter() for arm in arms}
        try:
            for n in range(args.jobs):
                for arm, src in arms.items():
                    code, aborted = one_job(Path(tmp) / f"{arm.split()[0]}-{n}", src)
                    tally[arm]["jobs"] += 1
                    tally[arm]["failed"] += code != 0
                    tally[arm]["aborted at exit"] += aborted
                print(f"{n + 1}/{args.jobs}: " + "; ".join(f"{arm}: {dict(c)}" for arm, c in tally.items()),
                      flush=True)
        finally:
            if args.before:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                               capture_output=True)
    for arm, counts in tally.items():
        print(f"{arm:>24}: {counts['aborted at exit']} of {counts['jobs']} jobs lost a rank to the abort at exit, "
              f"{counts['failed']} failed in all")


if __name__ == "__main__":
    main()
