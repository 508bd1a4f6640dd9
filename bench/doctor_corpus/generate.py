"""Regenerate the doctor's corpus of real small trainings, labeled by construction.

    python bench/doctor_corpus/generate.py OUT_DIR [--families a,b] [--labels a,b] [--seeds N] [--jobs 2]

Every family (families.py) x label (recipes.py) gets ``--seeds`` runs (healthy gets twice as many:
no alarm on a healthy run is what matters most). A run trains for real (train.py) and is written by
torch's ``SummaryWriter`` to ``OUT_DIR/torch/<family>/<run>/`` and by ``savegame.SummaryWriter`` to
``OUT_DIR/savegame/<family>/<run>/``, the same points in both. Run names are a hash, so they do
not give the label away; ``OUT_DIR/labels.json`` maps ``"<family>/<run>"`` to its label, recipe,
seed, tags and number of classes.

A run that fails its label's acceptance check (accept.py: crude checks on the raw logged numbers,
only there to reject a recipe that missed; not the doctor's definitions) is regenerated with the
next seed (seed + 1000), up to ``--tries`` times; ``tries`` in labels.json says how many it took.
A run that never passes is left out and listed. The summary table at the end counts runs per
family and label, with the retries. One run per task, ``torch.set_num_threads(1)`` in each worker:
the corpus is deterministic given the seeds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accept import check  # noqa: E402
from families import FAMILIES, chance_loss  # noqa: E402
from recipes import LABELS, RECIPES, describe, recipe  # noqa: E402


def run_name(family: str, label: str, i: int) -> str:
    return "run-" + hashlib.sha1(f"{family}/{label}/{i}".encode()).hexdigest()[:8]


def tasks(families: list[str], labels: list[str], seeds: int) -> list[tuple[str, str, int]]:
    return [(f, label, i) for f in families for label in labels if label in RECIPES.get(f, {})
            for i in range(seeds * (2 if label == "healthy" else 1))]


def run_task(job: tuple) -> dict:
    """Train one run (retrying with the next seed while its acceptance check fails)."""
    import torch
    from train import train
    torch.set_num_threads(1)  # one core per worker: --jobs workers share the machine
    (family, label, i), out_dir, max_tries = job
    fam, name = FAMILIES[family], run_name(family, label, i)
    r, note = recipe(family, label, i)
    dirs = [out_dir / tree / family / name for tree in ("torch", "savegame")]
    start, fails = time.perf_counter(), []
    for t in range(max_tries):
        seed = i + 1000 * t
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
        out = train(fam, r, seed, *dirs)
        ok, why = check(label, out, {**fam.accept, "chance": chance_loss(fam)})
        if ok:
            break
        fails.append(seed)
    else:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    entry = {"family": family, "label": label, "recipe": f"{note}: {describe(r)}", "seed": seed, "tries": t + 1,
             "num_classes": fam.num_classes, "chance_loss": chance_loss(fam), "steps": out["steps"],
             "optimizer": r["opt"], "lr": r["lr"], "schedule": r.get("sched", "const"), "batch_size": r["batch"],
             "train_points": len(out["train"]), "val_points": len(out["val"]), "tags": fam.tags,
             "notes": f"{fam.what}; accepted by: {why}"}
    return {"key": f"{family}/{name}", "ok": ok, "entry": entry, "failed_seeds": fails,
            "secs": time.perf_counter() - start}


def summary(results: list[dict], families: list[str], labels: list[str]) -> str:
    """Family x label table: runs kept, with '+r' for the retries the cell took."""
    width = max(len(f) for f in families) + 2
    lines = [" " * width + "".join(f"{label[:15]:>16}" for label in labels) + f"{'total':>8}"]
    for f in families:
        row, total = f"{f:<{width}}", 0
        for label in labels:
            cell = [x for x in results if x["entry"]["family"] == f and x["entry"]["label"] == label]
            kept, retries = sum(x["ok"] for x in cell), sum(len(x["failed_seeds"]) for x in cell)
            total += kept
            row += f"{(str(kept) + (f' +{retries}' if retries else '')) if cell else '-':>16}"
        lines.append(row + f"{total:>8}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma-separated (default: all)")
    ap.add_argument("--labels", default=",".join(LABELS), help="comma-separated (default: all)")
    ap.add_argument("--seeds", type=int, default=3, help="runs per family and label (healthy: twice as many)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--tries", type=int, default=4, help="seeds tried per run before it is left out")
    args = ap.parse_args()
    families, labels = args.families.split(","), args.labels.split(",")
    for f in families:
        if f not in FAMILIES:
            sys.exit(f"unknown family {f!r}; known: {', '.join(FAMILIES)}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(t, args.out_dir, args.tries) for t in tasks(families, labels, args.seeds)]
    print(f"{len(jobs)} runs, {args.jobs} workers -> {args.out_dir}", flush=True)
    start, results = time.perf_counter(), []
    # close + join, not the context manager: its terminate() SIGTERMs the workers, and we once saw a
    # worker hang there (savegame's writer installs a flush-on-SIGTERM handler in each worker)
    pool = get_context("fork").Pool(args.jobs, maxtasksperchild=20)
    for n, res in enumerate(pool.imap_unordered(run_task, jobs), 1):
        results.append(res)
        e = res["entry"]
        flag = "ok" if res["ok"] else "REJECTED"
        print(f"[{n:3d}/{len(jobs)}] {res['key']:<40} {e['label']:<16} tries={e['tries']} "
              f"{res['secs']:5.1f}s {flag}", flush=True)
    pool.close()
    pool.join()
    results.sort(key=lambda x: x["key"])
    path = args.out_dir / "labels.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    kept = {x["key"]: x["entry"] for x in results if x["ok"]}
    done = {x["key"] for x in results}
    merged = {k: v for k, v in old.items() if k not in done} | kept  # a partial rebuild keeps the other runs
    path.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n")
    print("\n" + summary(results, families, labels))
    rejected = [x for x in results if not x["ok"]]
    retried = sum(len(x["failed_seeds"]) for x in results)
    print(f"\n{len(kept)} runs kept ({len(merged)} in labels.json), {retried} retries, "
          f"{len(rejected)} left out, {time.perf_counter() - start:.0f} s")
    for x in rejected:
        print(f"  left out: {x['key']} ({x['entry']['label']}: {x['entry']['recipe']})")
    slow = sorted(results, key=lambda x: -x["secs"])[:5]
    print("slowest: " + ", ".join(f"{x['key']} {x['secs']:.1f}s" for x in slow))


if __name__ == "__main__":
    main()
