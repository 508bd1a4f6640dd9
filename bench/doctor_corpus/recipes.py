"""Per family, the recipes that plant each label: a healthy base, and for each label its changes.

A recipe is a flat dict read by families.py (data and model keys) and train.py (optimizer,
schedule, steps, logging). ``BASE[family]`` is the family's well-tuned setup; ``RECIPES[family]``
maps each label to a list of variants ``(note, changes)``, each applied on top of the base; run ``i``
of a label uses variant ``i % len(variants)``, so seeds also vary optimizers, batch sizes and
schedules. How each label is planted:

- healthy: the base (or a sibling: another optimizer / batch size / schedule), trained to convergence;
- still_improving: a healthy setup (often with a lower lr) stopped while the loss still falls;
- overfitting: few samples (often with noisy or random labels), a big unregularized model, long;
- underfitting: a model far too small (a 1-2 unit bottleneck, a linear model) or far too strong weight decay;
- diverged: a learning rate so high the loss blows up (often after a warmup: good steps first);
- lr_too_high: a high learning rate that stays finite (sometimes with clipping): the loss swings;
- lr_too_low: a learning rate 100-1000x too small: a slow, almost straight decline;
- plateau: nothing learns: ReLUs killed by a -8 bias, every layer frozen, or ``step // warmup``
  (an integer division) making the lr 0 for the whole run.

Every recipe but healthy runs at a constant lr unless it names a schedule (a decaying lr would hide
a too-high lr, or make a run stopped early look converged). Step counts, log and validation
intervals vary, so runs have 150-400 training points and 10-30 validations. The table itself
(``BASE``, ``RECIPES``) is in recipe_table.py.
"""

from __future__ import annotations

from recipe_table import BASE, RECIPES  # noqa: F401 (re-exported)

LABELS = ("healthy", "still_improving", "overfitting", "underfitting", "diverged", "lr_too_high",
          "lr_too_low", "plateau")


def recipe(family: str, label: str, i: int) -> tuple[dict, str]:
    """The i-th run's recipe (base + the variant's changes) and its note."""
    variants = RECIPES[family][label]
    note, changes = variants[i % len(variants)]
    r = {**BASE[family], **changes}
    if label != "healthy" and "sched" not in changes:
        r["sched"] = "const"  # a decaying lr would hide the pathology (a too-high lr that anneals settles)
    return r, note


def describe(r: dict) -> str:
    """A short text of the recipe's main knobs, for labels.json."""
    keys = ("opt", "lr", "momentum", "wd", "sched", "batch", "steps", "n_train", "width", "depth", "channels",
            "bottleneck", "dropout", "label_noise", "random_labels", "clip", "dead_bias", "freeze", "stop_on_nan")
    return " ".join(f"{k}={r[k]}" for k in keys if k in r)
