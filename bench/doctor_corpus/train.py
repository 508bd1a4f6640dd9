"""The one training loop every corpus run goes through, logging to torch's writer and to ours.

A run is a family (families.py) and a flat recipe dict (recipes.py). The loop is the plain
hand-written loop users write: shuffled minibatches, ``loss.backward()``, an optional gradient
clip, ``optimizer.step()``, ``scheduler.step()`` every step; the training loss of the current batch
every ``log_every`` steps; a full pass over the validation set every ``eval_every`` steps (and at
the end), in eval mode (dropout off). A run whose loss turns NaN goes on to the end, as most loops
do, unless the recipe sets ``stop_on_nan`` (a loop that breaks out).

Every value goes, with the same step and wall time, to ``torch.utils.tensorboard.SummaryWriter``
(``OUT/torch/<family>/<run>``) and ``savegame.SummaryWriter`` (``OUT/savegame/<family>/<run>``).
The loop also returns the raw numbers it logged, for the acceptance checks (accept.py).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import nn

from families import Family

SCHEDULES = ("const", "step", "cosine", "warmup", "warmup_cosine", "int_bug")


class Mirror:
    """Both writers behind one ``scalar`` call, so the two trees get exactly the same points."""

    def __init__(self, torch_dir: Path, savegame_dir: Path):
        from torch.utils.tensorboard import SummaryWriter as TorchWriter
        from savegame import SummaryWriter as SavegameWriter
        self.writers = [TorchWriter(str(torch_dir)), SavegameWriter(str(savegame_dir))]

    def scalar(self, tag: str, value: float, step: int) -> None:
        walltime = time.time()
        for writer in self.writers:
            writer.add_scalar(tag, value, step, walltime=walltime)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def apply_knobs(model: nn.Module, r: dict) -> None:
    """The recipe's surgery on a fresh model: the plateau recipes' dead units, scaled init, freezing."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.BatchNorm2d))]
    with torch.no_grad():
        if "init_scale" in r:  # tiny: the signal vanishes through the layers; huge: units saturate
            for p in model.parameters():
                if p.dim() > 1:
                    p.mul_(r["init_scale"])
        if "dead_bias" in r:  # a large negative bias before every ReLU (BN's shift too): no unit ever fires
            for m in layers[:-1]:
                m.bias.fill_(r["dead_bias"])
    if r.get("freeze"):  # every layer frozen (e.g. a fine-tuning script that froze the head too)
        for p in model.parameters():
            p.requires_grad_(False)


def make_optimizer(model: nn.Module, r: dict) -> torch.optim.Optimizer:
    params, lr, wd = list(model.parameters()), r["lr"], r.get("wd", 0.0)
    if r["opt"] == "sgd":
        return torch.optim.SGD(params, lr, momentum=r.get("momentum", 0.0), nesterov=r.get("nesterov", False),
                               weight_decay=wd)
    if r["opt"] == "adam":
        return torch.optim.Adam(params, lr, weight_decay=wd)
    if r["opt"] == "adamw":
        return torch.optim.AdamW(params, lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer {r['opt']!r}")


def make_schedule(opt: torch.optim.Optimizer, r: dict) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per training step, so every length below is in steps."""
    kind, steps = r.get("sched", "const"), r["steps"]
    warm = r.get("warmup", max(1, steps // 10))
    lam = torch.optim.lr_scheduler.LambdaLR
    if kind == "const":
        return lam(opt, lambda s: 1.0)
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(opt, r.get("step_size", steps // 3), r.get("gamma", 0.3))
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    if kind == "warmup":  # linear warmup to the lr, then constant (diverged: a warmup to too high a lr)
        return lam(opt, lambda s: min(1.0, (s + 1) / warm))
    if kind == "warmup_cosine":
        return lam(opt, lambda s: (s + 1) / warm if s < warm
                   else 0.5 * (1 + math.cos(math.pi * (s - warm) / (steps - warm))))
    if kind == "int_bug":  # ``s // warmup`` where ``s / warmup`` was meant: the lr is 0 until step `warmup`
        return lam(opt, lambda s: min(1, s // warm))
    raise ValueError(f"unknown schedule {kind!r}")


def train(family: Family, r: dict, seed: int, torch_dir: Path, savegame_dir: Path) -> dict:
    """Train one run and log it to both trees; returns the raw logged numbers."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x_train, y_train, x_val, y_val = family.make_data(g, r)
    model = family.make_model(r)
    apply_knobs(model, r)
    opt, params = make_optimizer(model, r), [p for p in model.parameters()]
    sched = make_schedule(opt, r)
    loss_fn = nn.CrossEntropyLoss() if family.loss == "ce" else nn.MSELoss()
    tags, classify = family.tags, family.loss == "ce"
    steps, log_every, eval_every = r["steps"], r.get("log_every", 1), r["eval_every"]
    n, batch = len(x_train), min(r["batch"], len(x_train))
    out = {"train": [], "val": [], "val_acc": []}
    mirror = Mirror(torch_dir, savegame_dir)
    window = {"loss": 0.0, "correct": 0.0, "seen": 0, "steps": 0}  # training numbers since the last validation

    def validate(step: int) -> None:
        model.eval()
        with torch.no_grad():
            pred = model(x_val)
            val = loss_fn(pred, y_val).item()
        model.train()
        mirror.scalar(tags["val_loss"], val, step)
        out["val"].append((step, val))
        if classify:
            acc = (pred.argmax(1) == y_val).float().mean().item()
            mirror.scalar(tags["val_acc"], acc, step)
            out["val_acc"].append((step, acc))
            if "train_acc" in tags and window["seen"]:
                mirror.scalar(tags["train_acc"], window["correct"] / window["seen"], step)
        if "train_loss_epoch" in tags and window["steps"]:
            mirror.scalar(tags["train_loss_epoch"], window["loss"] / window["steps"], step)
        if not family.lr_every_step:
            mirror.scalar(tags["lr"], opt.param_groups[0]["lr"], step)
        window.update(loss=0.0, correct=0.0, seen=0, steps=0)

    if family.eval_at_start:
        validate(0)
    perm, pos = torch.randperm(n, generator=g), 0
    for step in range(steps):
        if pos + batch > n:  # a new epoch: reshuffle (the last short batch is dropped)
            perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos:pos + batch]
        pos += batch
        pred = model(x_train[idx])
        loss = loss_fn(pred, y_train[idx])
        opt.zero_grad(set_to_none=True)
        if loss.requires_grad:  # a fully frozen model has nothing to differentiate
            loss.backward()
        grad_norm = None
        if "clip" in r or "grad_norm" in tags:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, r.get("clip", math.inf)))
        lr = opt.param_groups[0]["lr"]  # the lr this step used
        opt.step()
        sched.step()
        value = loss.item()
        window["loss"] += value
        window["steps"] += 1
        if classify:
            window["correct"] += (pred.argmax(1) == y_train[idx]).sum().item()
            window["seen"] += len(idx)
        stop = r.get("stop_on_nan") and not math.isfinite(value)
        if step % log_every == 0 or stop:  # the NaN that stops the loop is logged
            mirror.scalar(tags["train_loss"], value, step)
            out["train"].append((step, value))
            if family.lr_every_step:
                mirror.scalar(tags["lr"], lr, step)
            if "grad_norm" in tags and grad_norm is not None:
                mirror.scalar(tags["grad_norm"], grad_norm, step)
        if (step + 1) % eval_every == 0 or step == steps - 1 or stop:
            validate(step + 1)
        if stop:
            break
    mirror.close()
    out["steps"] = step + 1
    return out
