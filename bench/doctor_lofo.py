"""Leave-one-family-out: the doctor judged on families of trainings it was not tuned on (issue 12).

For each family F of the corpus (``bench/doctor_corpus``): the definitions' thresholds
(``savegame.doctor.definitions.Thresholds``) are tuned on every other family by coordinate descent
over a grid of values per threshold (the score: right verdicts, an alarm on a healthy run costing
five), then the runs of F get their first look with those thresholds, untouched after. Printed:
each family's first-look accuracy, the mean, the alarms on healthy runs, the confusion table;
beside it the definitions with their default thresholds, ``diagnose`` as shipped, and a learned
model on the same quantities (a depth-4 decision tree, scikit-learn, trained on the other
families the same way) — the issue's "rules or a learned model, whichever measures better".

    python bench/doctor_corpus/generate.py /tmp/doctor_corpus --jobs 2
    python bench/doctor_lofo.py /tmp/doctor_corpus            # the savegame-written tree
    python bench/doctor_lofo.py /tmp/doctor_corpus --tree torch
    # beside another version's verdicts, e.g. savegame 0.1's threshold rules:
    git archive a1641c2 src | tar -x -C /tmp/v01
    PYTHONPATH=/tmp/v01/src python -m savegame.cli doctor /tmp/doctor_corpus/savegame --json > /tmp/v01.json
    python bench/doctor_lofo.py /tmp/doctor_corpus --compare /tmp/v01.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from collections import Counter, defaultdict
from pathlib import Path

ALARMS = {"overfitting", "underfitting", "diverged", "plateau", "lr_too_high", "lr_too_low"}
GRID_STEPS = (0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0)  # multiples of each default threshold tried
ROUNDS = 2


def load(corpus: Path, tree: str, *, with_classes: bool = False):
    """[(name, family, label, quantities, old verdict)] for every run of the corpus."""
    from savegame.doctor import diagnose, load_runs
    from savegame.doctor.quantities import quantities
    from savegame.doctor.rules import measure

    labels = json.loads((corpus / "labels.json").read_text())
    rows = []
    for run in load_runs(corpus / tree):
        record = labels.get(run.name)
        if record is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                # --with-classes: the class count a user would pass as --classes (from labels.json)
                q = quantities(measure(run), classes=record.get("num_classes") if with_classes else None)
            except ValueError:
                q = None
            old = diagnose(run).verdict
        rows.append((run.name, record["family"], record["label"], q, old))
    return rows


def verdict(q, thresholds) -> str | None:
    from savegame.doctor.definitions import decide

    return decide(q, thresholds).verdict if q is not None else None


def score(rows, thresholds) -> float:
    total = 0.0
    for _, _, label, q, _ in rows:
        got = verdict(q, thresholds)
        total += got == label
        total -= 5.0 * (label == "healthy" and got in ALARMS)
    return total


def tune(rows, start):
    """Coordinate descent over GRID_STEPS x each default threshold, ROUNDS times."""
    best, best_score = start, score(rows, start)
    for _ in range(ROUNDS):
        for name, default in dataclasses.asdict(start).items():
            for factor in GRID_STEPS:
                trial = dataclasses.replace(best, **{name: default * factor})
                trial_score = score(rows, trial)
                if trial_score > best_score:
                    best, best_score = trial, trial_score
    return best


FEATURES = ("progress", "val_progress", "tail_drop", "tail_share", "tail_gain", "noise", "swing", "val_rise",
            "gap_share", "gap_ratio", "final_over_chance", "best_before_peak")


def vector(q) -> list[float]:
    """The quantities as numbers for the tree (None: -1; ratios clipped so one explosion is no outlier)."""
    import math

    out = []
    for name in FEATURES:
        value = getattr(q, name) if q is not None else None
        value = -1.0 if value is None or not math.isfinite(value) else max(-10.0, min(10.0, float(value)))
        out.append(value)
    growth = q.peak / q.start if q is not None and q.start and math.isfinite(q.peak) else 1.0
    final = (q.train_final if q.train_final is not None else q.val_final) if q is not None else None
    out += [min(10.0, max(-10.0, math.log10(max(growth, 1e-10)))),
            float(q.ends_nonfinite) if q is not None else 0.0,
            min(10.0, final / q.start) if q is not None and final is not None and q.start > 0 else -1.0]
    return out


def tree_lofo(rows, family: str) -> list[str | None]:
    from sklearn.tree import DecisionTreeClassifier

    train = [r for r in rows if r[1] != family and r[3] is not None]
    model = DecisionTreeClassifier(max_depth=4, min_samples_leaf=3, random_state=0,
                                   class_weight="balanced").fit([vector(r[3]) for r in train], [r[2] for r in train])
    return [model.predict([vector(r[3])])[0] if r[3] is not None else None for r in rows if r[1] == family]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--tree", default="savegame", choices=("savegame", "torch"))
    parser.add_argument("--with-classes", action="store_true",
                        help="give each classification run its class count, as a user's --classes would")
    parser.add_argument("--compare", type=Path, default=None, metavar="JSON",
                        help="`savegame doctor --json` output of another version, scored beside")
    args = parser.parse_args()
    from savegame.doctor.definitions import DEFAULT

    rows = load(args.corpus, args.tree, with_classes=args.with_classes)
    families = sorted({family for _, family, _, _, _ in rows})
    print(f"{len(rows)} runs, {len(families)} families, written by {args.tree}'s writer"
          + (", the class count given" if args.with_classes else ", the class count not given"))
    confusion: Counter = Counter()
    shares, default_right, old_right, alarms = [], 0, 0, []
    by_family = defaultdict(list)
    for row in rows:
        by_family[row[1]].append(row)
    print(f"{'family (left out)':28s} {'left out':>10s} {'defaults':>9s} {'diagnose':>9s} {'tree':>9s}")
    tree_right, tree_alarms = 0, 0
    for family in families:
        train = [r for r in rows if r[1] != family]
        tuned = tune(train, DEFAULT)
        held = by_family[family]
        right = 0
        for name, _, label, q, old in held:
            got = verdict(q, tuned)
            confusion[label, got or "cannot judge"] += 1
            right += got == label
            if label == "healthy" and got in ALARMS:
                alarms.append(f"{name}: {got}")
        d = sum(verdict(q, DEFAULT) == label for _, _, label, q, _ in held)
        o = sum(old == label for _, _, label, _, old in held)
        tree = tree_lofo(rows, family)
        t = sum(got == r[2] for got, r in zip(tree, held))
        tree_alarms += sum(r[2] == "healthy" and got in ALARMS for got, r in zip(tree, held))
        default_right += d
        old_right += o
        tree_right += t
        shares.append(right / len(held))
        print(f"{family:28s} {right:4d}/{len(held):<5d} {d:4d}/{len(held):<4d} {o:4d}/{len(held):<4d} "
              f"{t:4d}/{len(held):<4d}")
    print(f"\nleft-out families, mean accuracy (the first look only at the first run of this script): {sum(shares) / len(shares):.1%} (goal >= 90%)")
    print(f"defaults on every run: {default_right}/{len(rows)}; diagnose as shipped: {old_right}/{len(rows)}; "
          f"decision tree, leave-one-family-out: {tree_right}/{len(rows)} ({tree_alarms} alarms on healthy runs)")
    if args.compare is not None:
        other = {d["run"]: d["verdict"] for d in json.loads(args.compare.read_text())}
        labels_of = {name: label for name, _, label, _, _ in rows}
        right = sum(other.get(name) == label for name, label in labels_of.items())
        false = sum(label == "healthy" and other.get(name) in ALARMS for name, label in labels_of.items())
        print(f"{args.compare}: {right}/{len(rows)} right, {false} alarms on healthy runs")
    print(f"alarms on healthy runs of the left-out families: {len(alarms)} (goal 0)" + "".join(f"\n  {a}" for a in alarms))
    labels = sorted({label for label, _ in confusion})
    verdicts = sorted({got for _, got in confusion})
    print("\nconfusion (rows: label, columns: the verdict with the family left out)")
    print(" " * 16 + "".join(f"{v[:10]:>11s}" for v in verdicts))
    for label in labels:
        print(f"{label:16s}" + "".join(f"{confusion[label, v] or '':>11}" for v in verdicts))


if __name__ == "__main__":
    sys.exit(main())
