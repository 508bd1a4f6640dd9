"""Draw a blind, stratified sample of the corpus, to check the labels by eye.

    python bench/doctor_corpus/plot_sample.py OUT_DIR [--per-label 3] [--out sample_dir/] [--seed 0]

Picks ``--per-label`` runs of each label at random (seeded), shuffles them, and draws each run's
curves in PNG grids of ``--per-image`` panels (default 6): the training loss (thin), the
validation loss (dots), the accuracies (right axis, dashed) if the run has any, the first training
point circled. Each panel is titled only with an anonymous id (``sample-017``); under the linear
plot a second one on a log axis is drawn when the loss spans more than a decade (or blows up).
Non-finite points are marked with red crosses at the top. The answers go to ``key.json`` (id ->
run, family, label): open it only after looking.

The events are read with tensorboard's own ``EventAccumulator``, from the torch writer's tree (or
``--tree savegame``), so this script checks the files, not savegame's reader.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def read(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def pick(labels: dict, per_label: int, seed: int) -> list[str]:
    by_label = defaultdict(list)
    for key, entry in sorted(labels.items()):
        by_label[entry["label"]].append(key)
    rng = random.Random(seed)
    chosen = [k for label in sorted(by_label)
              for k in rng.sample(by_label[label], min(per_label, len(by_label[label])))]
    rng.shuffle(chosen)  # the order must not give the label away
    return chosen


def finite(points):
    return [(s, v) for s, v in points if math.isfinite(v)]


def draw(cell, scalars: dict, tags: dict, name: str) -> dict:
    """One run's panel in ``cell``; returns its legend entries (name -> handle)."""
    train, val = scalars.get(tags["train_loss"], []), scalars.get(tags["val_loss"], [])
    values = [v for _, v in finite(train + val)]
    bad = [(s, v) for s, v in train + val if not math.isfinite(v)]
    positive = [v for v in values if v > 0]
    spans = bool(positive) and (max(positive) / min(positive) > 10 or bool(bad))
    axes = cell.subgridspec(2 if spans else 1, 1, hspace=0.08).subplots(sharex=True)
    axes = list(axes) if spans else [axes]
    start = max(v for v in [train[0][1] if train else 0, val[0][1] if val else 0] if math.isfinite(v)) if values else 1
    for i, ax in enumerate(axes):
        log = i == 1
        tr, va = finite(train), finite(val)
        if log:
            tr, va = [(s, v) for s, v in tr if v > 0], [(s, v) for s, v in va if v > 0]
        if tr:
            ax.plot(*zip(*tr), lw=0.7, color="tab:blue", alpha=0.8, label="train loss")
            ax.plot(*tr[0], "o", ms=7, mfc="none", mec="black", label="first point")
        if va:
            ax.plot(*zip(*va), ".-", ms=5, lw=1.2, color="tab:orange", label="val loss")
        if log:
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())  # a narrow log range labels its minor ticks
        elif values:
            top = max(values)
            if top > 4 * start:  # blown up: keep the start readable, the log axis below shows the rest
                top = 4 * start
                ax.text(0.99, 0.97, "clipped (see log axis)", transform=ax.transAxes, ha="right", va="top",
                        fontsize=7, color="gray")
            ax.set_ylim(min(0.0, min(values)), top * 1.05)
        if bad:
            y = ax.get_ylim()[1]
            ax.plot([s for s, _ in bad], [y] * len(bad), "x", color="red", ms=4, clip_on=False,
                    label="NaN / inf")
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.set_ylabel("loss (log)" if log else "loss", fontsize=7)
    accs = [(scalars[tags[r]], r) for r in ("val_acc", "train_acc") if r in tags and tags[r] in scalars]
    handles, names = axes[0].get_legend_handles_labels()
    if accs:
        twin = axes[0].twinx()
        for points, role in accs:
            pts = finite(points)
            if pts:
                twin.plot(*zip(*pts), "--", lw=1, color="tab:green" if role == "val_acc" else "tab:olive",
                          label=role.replace("_", " "))
        twin.set_ylim(0, 1.02)
        twin.tick_params(labelsize=7)
        twin.set_ylabel("accuracy", fontsize=7)
        more = twin.get_legend_handles_labels()
        handles, names = handles + more[0], names + more[1]
    axes[0].set_title(name, fontsize=10)
    axes[-1].set_xlabel("step", fontsize=7)
    return dict(zip(names, handles))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path, help="the corpus (with labels.json)")
    ap.add_argument("--per-label", type=int, default=3)
    ap.add_argument("--per-image", type=int, default=6)
    ap.add_argument("--out", type=Path, default=Path("sample"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tree", choices=("torch", "savegame"), default="torch")
    args = ap.parse_args()
    labels = json.loads((args.out_dir / "labels.json").read_text())
    chosen = pick(labels, args.per_label, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    key = {}
    cols = 3
    for page in range(0, len(chosen), args.per_image):
        batch = chosen[page:page + args.per_image]
        rows = math.ceil(len(batch) / cols)
        fig = plt.figure(figsize=(5.2 * cols, 4.2 * rows))
        entries: dict = {}  # one legend per figure, so that no panel's curves are hidden under one
        grid = fig.add_gridspec(rows, cols, hspace=0.35, wspace=0.38)
        for j, run in enumerate(batch):
            name = f"sample-{page + j + 1:03d}"
            key[name] = {"run": run, "family": labels[run]["family"], "label": labels[run]["label"]}
            found = draw(grid[j // cols, j % cols], read(args.out_dir / args.tree / run), labels[run]["tags"], name)
            entries.update({k: v for k, v in found.items() if k not in entries})
        fig.legend(list(entries.values()), list(entries), loc="upper center", ncol=len(entries), fontsize=8,
                   bbox_to_anchor=(0.5, 1.0), frameon=False)
        path = args.out / f"sample_{page // args.per_image + 1:02d}.png"
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        print(path)
    (args.out / "key.json").write_text(json.dumps(key, indent=1) + "\n")
    print(f"{len(chosen)} runs in {math.ceil(len(chosen) / args.per_image)} images; answers in {args.out / 'key.json'}")


if __name__ == "__main__":
    main()
