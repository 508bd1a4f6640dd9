"""Which of a run's scalar tags is the training loss, the validation loss, accuracy, the lr.

Users spell them every way: ``loss/train``, ``train_loss``, ``Loss/valid``, ``val/loss``,
``mse/val``, Lightning's ``train_loss_step`` / ``train_loss_epoch``, the HF Trainer's
``train/loss`` / ``eval/loss`` / ``train/learning_rate``, savegame's ``loss/train/epoch_mean``. A
tag is split into words; a split word (train / val ...) and a metric word (loss / mse / acc ...)
decide its role, and among candidates the plainest tag (fewest other words, per-step over
per-epoch, then the most points) wins.

>>> pick_tags({"Loss/train": 900, "Loss/valid": 30, "acc/val": 30, "lr": 30, "grad/norm": 90})
{'train_loss': 'Loss/train', 'val_loss': 'Loss/valid', 'val_acc': 'acc/val', 'lr': 'lr'}
>>> pick_tags({"train_loss_step": 900, "train_loss_epoch": 30, "val_loss": 30})["train_loss"]
'train_loss_step'
>>> pick_tags({"train/loss": 50, "train/learning_rate": 50, "train/grad_norm": 50, "train/epoch": 60,
...            "eval/loss": 10, "eval/runtime": 10, "train/train_loss": 1})
{'train_loss': 'train/loss', 'val_loss': 'eval/loss', 'lr': 'train/learning_rate'}
"""

from __future__ import annotations

import re
from typing import Mapping

ROLES = ("train_loss", "val_loss", "train_acc", "val_acc", "lr")

_TRAIN = {"train", "training", "trn", "tr"}
_VAL = {"val", "valid", "validation", "eval", "evaluation", "test", "dev", "holdout", "heldout", "vl"}
_LOSS = {"loss", "losses", "mse", "mae", "rmse", "nll", "ce", "xent", "crossentropy", "bce", "objective",
         "cost", "perplexity", "ppl", "l1", "l2", "huber"}
_ACC = {"acc", "accuracy", "top1", "top1acc"}
_LR = {"lr", "learningrate"}
_MILD = {"step", "steps", "total", "avg", "average", "mean", "value", "epoch", "batch", "iter", "metrics",
         "metric", "main", "overall", "all", "running"}  # words that do not change the meaning
_SIGNAL_PREFIX = "doctor/"  # our own signals: never a loss


def words(tag: str) -> list[str]:
    """``"Loss/trainLoss_epoch"`` -> ``["loss", "train", "loss", "epoch"]``."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", tag)
    joined = spaced.lower().replace("learning_rate", "learningrate").replace("learning rate", "learningrate")
    joined = joined.replace("cross_entropy", "crossentropy").replace("top-1", "top1").replace("top_1", "top1")
    return [w for w in re.split(r"[^a-z0-9]+", joined) if w]


def pick_tags(counts: Mapping[str, int], *, train_tag: str | None = None,
              val_tag: str | None = None) -> dict[str, str]:
    """{role: tag} for the roles found; ``counts`` maps each scalar tag to its number of points.
    An explicit ``train_tag`` / ``val_tag`` is taken as given (the caller checks it exists)."""
    best: dict[str, tuple[tuple, str]] = {}
    for tag, count in counts.items():
        if tag.startswith(_SIGNAL_PREFIX) or not count:
            continue
        role, extra, per_epoch = _role(words(tag))
        if role is None:
            continue
        rank = (extra, per_epoch, -count, len(tag), tag)  # smaller is better
        if role not in best or rank < best[role][0]:
            best[role] = (rank, tag)
    picked = {role: tag for role, (_, tag) in best.items()}
    if train_tag is not None:
        picked["train_loss"] = train_tag
    if val_tag is not None:
        picked["val_loss"] = val_tag
    if picked.get("train_loss") is not None and picked.get("train_loss") == picked.get("val_loss"):
        del picked["train_loss"]
    return {role: picked[role] for role in ROLES if role in picked}


def _role(ws: list[str]) -> tuple[str | None, int, int]:
    """(role, number of unexplained words, 1 if per-epoch) for one tag's words."""
    split = "val" if any(w in _VAL for w in ws) else "train" if any(w in _TRAIN for w in ws) else None
    per_epoch = int("epoch" in ws)
    # A learning rate belongs to training: the HF Trainer writes ``train/learning_rate`` (but
    # ``loss/train_lr_0.1`` stays a loss).
    metric = any(w in _LOSS or w in _ACC for w in ws)
    if any(w in _LR for w in ws) and (split is None or split == "train" and not metric):
        return "lr", _unexplained(ws, _LR | _TRAIN), per_epoch
    if any(w in _ACC for w in ws):
        kind = "acc"
    elif any(w in _LOSS for w in ws):
        kind = "loss"
    else:
        return None, 0, 0
    # A loss with no split word ("loss", "epoch_loss") is the training loss by convention.
    role = f"{split or 'train'}_{kind}"
    return role, _unexplained(ws, _TRAIN | _VAL | _LOSS | _ACC) + (split is None), per_epoch


def plain_loss(tag: str) -> bool:
    """A loss with no split word (``loss``, ``epoch_loss``): one such tag in both a ``train/`` and
    a ``validation/`` folder is how Keras (or two writers) log the two losses under one name.

    >>> plain_loss("epoch_loss"), plain_loss("loss/train"), plain_loss("epoch_accuracy")
    (True, False, False)
    """
    ws = words(tag)
    return any(w in _LOSS for w in ws) and not any(w in _TRAIN or w in _VAL for w in ws)


def _unexplained(ws: list[str], known: set[str]) -> int:
    return sum(1 for w in ws if w not in known and w not in _MILD)
