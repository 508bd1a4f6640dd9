"""The doctor's labeled set: real small trainings with known pathologies, logged with torch's own
``SummaryWriter`` the way users log (minibatch training loss every step; validation loss, accuracy
and learning rate once per epoch; tag spellings differ from run to run).

Every case trains for real on the CPU in a few seconds (seeded, one thread), on sklearn's
``load_digits`` (classification, 64 standardized features, 10 classes) or on a synthetic
regression (``y = sin(3 x1) + x2**2 + 0.5 x1 x3 + x4 + noise``, standardized). The label is what a
practitioner reading the curves would say, and the setup is what makes it so:

- ``healthy_*``: a fitting MLP, Adam with weight decay, long enough to converge: validation
  tracks training and both are flat at the end.
- ``healthy_dropout_*``: heavy dropout (and input noise); the training loss is measured in train
  mode, so the validation loss sits *below* it. Still healthy: converged, no rising validation.
- ``overfit_*``: a big unregularized MLP on 100 samples with 30% wrong labels (classification) /
  60 very noisy samples (regression), many epochs: the net learns the signal first, then memorizes
  the noise, so validation loss has a clear minimum then rises while training loss goes to ~0.
- ``underfit_*``: a model too small for the task (a 2-unit bottleneck; a linear model on a
  nonlinear target), converged: train and validation both high, close together, flat.
- ``diverged_*``: the learning rate warms up to a value far too high: after normal steps the
  loss explodes to huge values / NaN, and logging goes on until the epochs end.
- ``lr_too_high_*``: a learning rate high enough to make the loss bounce (spikes, large swings)
  at a clearly worse level than the healthy run, without blowing up: Adam at 0.05 with batches of
  16 (classification), plain SGD at 0.45 (regression).
- ``lr_too_low_*``: SGD with a tiny learning rate: the loss falls slowly, almost linearly, far
  from converged at the end.
- ``plateau_*``: training stuck near the starting loss: a deep sigmoid net (vanishing gradients)
  for classification, ReLUs killed by a large negative bias for regression (dead_relu = 1).
- ``still_improving_*``: a healthy setup stopped too early: both losses still clearly falling.

Held-out recipes (``HELDOUT``, written with ``--heldout``): other architectures, widths, depths,
optimizers, learning rates, batch sizes, data sizes, epochs and activations, to measure how rules
tuned on ``CASES`` generalize; each label was checked by eye on the raw curves:

- ``healthy_cnn_h1``: a small CNN (8, 16 channels), AdamW with weight decay and a cosine decay:
  validation tracks training down to ~0.15 (97% accuracy) and both are flat for the last third.
- ``healthy_dropout_h2``: one wide leaky-ReLU layer with 40% dropout, Nesterov SGD with a cosine
  decay: validation sits below the (train-mode) training loss all along; both flat at the end.
- ``overfit_h3``: a 512-wide tanh net, SGD with momentum, on 200 digits with 30% wrong labels:
  validation is lowest at epoch 3 and then more than doubles while training goes to ~0.02.
- ``overfit_h4``: a 3x256 ELU net, RMSprop, 50 very noisy samples: validation is lowest at epoch 5
  and climbs steadily (1.1 to 1.8) while training keeps falling.
- ``underfit_h5``: SGD with a huge weight decay (0.2): train and validation flat at ~1.0 (84%
  accuracy) from epoch 4 on, close together.
- ``underfit_h6``: a 1-unit ELU bottleneck: after a short initial stall, train and validation are
  flat at ~0.6, close together.
- ``diverged_h7``: Nesterov SGD warmed up to lr 3: four good epochs (95% accuracy), then the loss
  grows exponentially to ~1e35 and turns NaN, logged to the end.
- ``plateau_h8``: six tanh layers with weights shrunk 20x (vanishing signal), SGD: training and
  validation never leave the starting loss.
- ``lr_too_high_h9``: RMSprop warmed up to 0.03: the training loss spikes and the validation loss
  jumps between ~0.04 and ~0.7 from epoch to epoch, never settling at the level a sane lr reaches.
- ``lr_too_low_h10``: RMSprop at 2e-5: the loss falls almost linearly from 2.3 to only 1.8.
- ``still_improving_h11``: RMSprop at 1e-4 stopped after 8 epochs: both losses fall steeply to
  the last epoch.
- ``still_improving_h12``: a 3x128 SiLU net, AdamW at 1e-4, stopped after 15 epochs: both losses
  still clearly falling, together.

Second held-out set (``HELDOUT2``, written with ``--heldout2``): ten more recipes, fresh after the
rules had seen both sets above, to measure generalization honestly; labeled by the setup and by eye
on the raw curves (not by running the doctor):

- ``healthy_k1``: a 96-48 SiLU net, SGD with momentum, light weight decay and a cosine decay:
  validation falls with training to ~0.11 (96% accuracy), both flat for the last third.
- ``healthy_k2``: a 3x48 GELU regression net, Adam with a cosine decay, 1500 samples: after a short
  shoulder both losses drop to ~0.027 together and stay flat for the last two thirds.
- ``overfit_k3``: a CNN (16, 32 channels), AdamW, on 120 digits with 40% wrong labels: validation is
  lowest at epoch 7 (~0.83) and then climbs steadily to ~2 while training goes to ~1e-3.
- ``underfit_k4``: a 2-2 GELU bottleneck, RMSprop: after one epoch train and validation are flat at
  ~0.55 (standardized target), close together.
- ``diverged_k5``: plain SGD (no momentum) on a 3x32 ELU net warmed up to lr 0.6: five good epochs,
  then the loss swings, blows up to ~1e16 in epoch 10 and is NaN to the end.
- ``plateau_k6``: SiLUs switched off by a -12 bias, SGD with momentum: training and validation sit
  at the starting ln(10) ~ 2.30 (chance accuracy) the whole run.
- ``lr_too_high_k7``: AdamW at 0.06 with batches of 24: the training loss spikes (to ~18) and the
  validation loss jumps between ~1.7 and ~6.6 (accuracy 72-88%), far above a sane lr's ~0.1.
- ``lr_too_low_k8``: AdamW at 1e-5: both losses fall in a straight line, by only ~10%.
- ``still_improving_k9``: a tiny CNN (4, 8 channels), Adam, stopped after 5 epochs: both losses
  fall steeply to the last epoch (2.2 to 0.4, accuracy still rising).
- ``still_improving_k10``: a 256-wide tanh net, Nesterov SGD at 0.005, stopped after 12 epochs:
  both losses still falling, steepest at the end.

Third held-out set (``HELDOUT3``, written with ``--heldout3``): eight more recipes, fresh after the
rules had seen the three sets above; labeled by the setup and by eye on the raw curves only:

- ``healthy_m1``: a 192-wide leaky-ReLU net, RMSprop with light weight decay and a cosine decay:
  validation falls with training to ~0.18 (96% accuracy), both flat for the last third.
- ``healthy_m2``: an 80-40 ELU regression net, Nesterov SGD with a cosine decay, 1200 samples: both
  losses drop to ~0.017 together (after a shoulder at ~0.3) and stay flat for the last 40%.
- ``overfit_m3``: a 3x128 SiLU net, AdamW, 40 very noisy samples: validation is lowest at epoch 4
  (~1.35) and then climbs to ~2.9 while training keeps falling.
- ``underfit_m4``: a 3-unit sigmoid bottleneck, AdamW with a heavy weight decay (0.3): train and
  validation level off at ~1.1 (~60% accuracy), close together.
- ``lr_too_low_m5``: a CNN (8, 16 channels), SGD at 3e-4 with momentum 0.5: both losses fall in a
  straight line from 2.3 to only ~2.25.
- ``lr_too_high_m6``: a 64-64 tanh regression net, Adam at 0.06 with batches of 8: the training loss
  spikes and the validation loss jumps between ~0.3 and ~1.0, far above a sane lr's ~0.02.
- ``plateau_m7``: ten sigmoid layers (vanishing gradients), SGD with momentum: training and
  validation stay at the starting loss (~1, the target's variance) the whole run.
- ``still_improving_m8``: a 160-wide sigmoid net, SGD at 0.05 stopped after 12 epochs: both losses
  fall steadily (2.3 to ~0.65) to the last epoch.

Run ``python tests/doctor/cases.py OUT_DIR [--only NAME ...] [--heldout | --heldout2 | --heldout3]`` to write the
runs and ``OUT_DIR/labels.json``.

>>> sorted({case.label for case in CASES})[:3]
['diverged', 'healthy', 'lr_too_high']
>>> len(CASES) >= 12 and all(case.task in ("classification", "regression") for case in CASES)
True
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

CLS, REG = "classification", "regression"


@dataclass(frozen=True)
class Case:
    """One training: ``label`` is the true verdict; the rest is its setup."""

    name: str
    label: str
    task: str
    hidden: tuple[int, ...] = (64,)
    act: str = "relu"                  # relu | tanh | sigmoid | gelu | elu | leaky_relu | silu
    arch: str = "mlp"                  # mlp | cnn (classification: ``hidden`` are 3x3 conv channels)
    dropout: float = 0.0
    input_noise: float = 0.0           # std of Gaussian noise added to training inputs
    optimizer: str = "adam"            # adam | adamw | sgd | rmsprop
    lr: float = 1e-3
    momentum: float = 0.0
    nesterov: bool = False             # sgd only
    weight_decay: float = 0.0
    warmup_to: float | None = None     # lr goes linearly from ``lr`` to this over ``warmup_epochs``
    warmup_epochs: int = 1
    cosine: bool = False               # lr decays from ``lr`` to 0 over the run (cosine; no warmup)
    bias_init: float | None = None     # constant for every hidden bias (a negative one kills ReLUs)
    init_gain: float | None = None     # multiplies every hidden weight after the default init
    epochs: int = 30
    batch: int = 64
    n_train: int = 1000
    noise: float = 0.1                 # regression target noise (std, before standardizing)
    label_noise: float = 0.0           # classification: fraction of training labels made random
    seed: int = 0
    tags: dict[str, str] = field(default_factory=dict)  # train, val, acc (val accuracy), lr


def _tags(train: str, val: str, lr: str, acc: str | None = None) -> dict[str, str]:
    return {"train": train, "val": val, "lr": lr, **({"acc": acc} if acc else {})}


CASES: list[Case] = [
    Case("healthy_cls", "healthy", CLS, hidden=(128,), optimizer="adamw", lr=1e-3, weight_decay=0.05,
         epochs=40, tags=_tags("loss/train", "loss/val", "lr", "acc/val")),
    Case("healthy_dropout_cls", "healthy", CLS, hidden=(256, 256), dropout=0.5, input_noise=0.5, lr=1e-3,
         epochs=40, tags=_tags("train_loss", "val_loss", "learning_rate", "val_acc")),
    Case("healthy_reg", "healthy", REG, hidden=(64, 64), act="tanh", optimizer="adamw", lr=3e-3,
         weight_decay=0.01, epochs=60, tags=_tags("mse/train", "mse/val", "lr")),
    Case("healthy_dropout_reg", "healthy", REG, hidden=(128, 128), dropout=0.3, lr=2e-3, epochs=60,
         tags=_tags("train/loss", "val/loss", "train/lr")),
    Case("overfit_cls", "overfitting", CLS, hidden=(256, 256), lr=3e-3, n_train=100, label_noise=0.3,
         batch=32, epochs=150, tags=_tags("Loss/train", "Loss/valid", "LR", "Accuracy/valid")),
    Case("overfit_reg", "overfitting", REG, hidden=(256, 256), lr=3e-4, n_train=60, batch=30, noise=1.0,
         epochs=500, tags=_tags("loss/train", "loss/validation", "lr")),
    Case("underfit_cls", "underfitting", CLS, hidden=(2,), act="tanh", lr=2e-2, epochs=80,
         tags=_tags("train/loss", "val/loss", "lr", "val/accuracy")),
    Case("underfit_reg", "underfitting", REG, hidden=(), lr=1e-2, epochs=40,
         tags=_tags("train_loss", "val_loss", "lr")),
    Case("diverged_cls", "diverged", CLS, hidden=(128,), optimizer="sgd", lr=0.05, momentum=0.9,
         warmup_to=2.0, warmup_epochs=20, epochs=30, tags=_tags("loss/train", "loss/val", "lr", "accuracy/val")),
    Case("diverged_reg", "diverged", REG, hidden=(64, 64), optimizer="sgd", lr=0.01, momentum=0.9,
         warmup_to=0.5, warmup_epochs=20, epochs=30, tags=_tags("Loss/train", "Loss/val", "learning_rate")),
    Case("lr_too_high_cls", "lr_too_high", CLS, hidden=(128,), lr=0.05, batch=16, epochs=12,
         tags=_tags("train_loss", "valid_loss", "lr", "valid_acc")),
    Case("lr_too_high_reg", "lr_too_high", REG, hidden=(64, 64), optimizer="sgd", lr=0.45, epochs=60,
         tags=_tags("loss/train", "loss/val", "lr")),
    Case("lr_too_low_cls", "lr_too_low", CLS, hidden=(128,), optimizer="sgd", lr=1e-3, epochs=40,
         tags=_tags("Loss/train", "Loss/val", "lr", "Accuracy/val")),
    Case("lr_too_low_reg", "lr_too_low", REG, hidden=(64, 64), optimizer="sgd", lr=6e-4, epochs=40,
         tags=_tags("mse/train", "mse/val", "lr")),
    Case("plateau_cls", "plateau", CLS, hidden=(64,) * 8, act="sigmoid", optimizer="sgd", lr=0.05, epochs=40,
         tags=_tags("loss/train", "loss/val", "lr", "acc/val")),
    Case("plateau_reg", "plateau", REG, hidden=(64, 64), bias_init=-20.0, lr=1e-3, epochs=40,
         tags=_tags("train/loss", "valid/loss", "lr")),
    Case("still_improving_cls", "still_improving", CLS, hidden=(128,), optimizer="sgd", lr=0.03, batch=32,
         epochs=10, tags=_tags("train_loss", "val_loss", "lr", "val_accuracy")),
    Case("still_improving_reg", "still_improving", REG, hidden=(64, 64), lr=1e-3, epochs=15,
         tags=_tags("loss/train", "loss/val", "lr")),
]

# Held out: other recipes (architectures, widths, depths, optimizers, learning rates, batch sizes,
# data sizes, epochs, activations) to measure how rules tuned on ``CASES`` generalize.
HELDOUT: list[Case] = [
    Case("healthy_cnn_h1", "healthy", CLS, arch="cnn", hidden=(8, 16), optimizer="adamw", lr=3e-3,
         weight_decay=0.05, cosine=True, batch=128, n_train=1297, epochs=25,
         tags=_tags("Train/Loss", "Val/Loss", "LR", "Val/Acc")),
    Case("healthy_dropout_h2", "healthy", REG, hidden=(256,), act="leaky_relu", dropout=0.4, optimizer="sgd",
         lr=0.02, momentum=0.9, nesterov=True, cosine=True, batch=32, n_train=2000, epochs=40,
         tags=_tags("loss_train", "loss_val", "lr")),
    Case("overfit_h3", "overfitting", CLS, hidden=(512,), act="tanh", optimizer="sgd", lr=0.01, momentum=0.9,
         n_train=200, label_noise=0.3, batch=16, epochs=120,
         tags=_tags("training/loss", "validation/loss", "training/lr", "validation/accuracy")),
    Case("overfit_h4", "overfitting", REG, hidden=(256, 256, 256), act="elu", optimizer="rmsprop", lr=3e-4,
         n_train=50, noise=1.0, batch=10, epochs=150, tags=_tags("Loss/Train", "Loss/Val", "lr")),
    Case("underfit_h5", "underfitting", CLS, hidden=(32,), optimizer="sgd", lr=0.05, momentum=0.9,
         weight_decay=0.2, epochs=40, tags=_tags("loss", "val_loss", "lr", "val_acc")),
    Case("underfit_h6", "underfitting", REG, hidden=(1,), act="elu", lr=1e-2, batch=128, n_train=2000,
         epochs=60, tags=_tags("train/mse", "val/mse", "lr")),
    Case("diverged_h7", "diverged", CLS, hidden=(128,), act="gelu", optimizer="sgd", lr=0.01, momentum=0.9,
         nesterov=True, warmup_to=3.0, warmup_epochs=15, batch=128, n_train=1297, epochs=25,
         tags=_tags("loss/training", "loss/validation", "lr", "acc")),
    Case("plateau_h8", "plateau", REG, hidden=(32,) * 6, act="tanh", optimizer="sgd", lr=0.01, init_gain=0.05,
         epochs=40, tags=_tags("Train Loss", "Val Loss", "Learning Rate")),
    Case("lr_too_high_h9", "lr_too_high", REG, hidden=(128, 128), optimizer="rmsprop", lr=1e-3, warmup_to=0.03,
         warmup_epochs=2, batch=32, epochs=30, tags=_tags("train/loss", "eval/loss", "train/lr")),
    Case("lr_too_low_h10", "lr_too_low", CLS, hidden=(128, 128), act="gelu", optimizer="rmsprop", lr=2e-5,
         batch=32, epochs=25, tags=_tags("loss/train", "loss/eval", "lr", "acc/eval")),
    Case("still_improving_h11", "still_improving", CLS, hidden=(256,), act="elu", optimizer="rmsprop", lr=1e-4,
         batch=32, epochs=8, tags=_tags("Loss/train", "Loss/test", "lr", "Accuracy/test")),
    Case("still_improving_h12", "still_improving", REG, hidden=(128, 128, 128), act="silu", optimizer="adamw",
         lr=1e-4, batch=32, n_train=1500, epochs=15, tags=_tags("train_mse", "val_mse", "lr")),
]

# A second held-out set, fresh after the rules had seen ``CASES`` and ``HELDOUT``: ten more recipes.
HELDOUT2: list[Case] = [
    Case("healthy_k1", "healthy", CLS, hidden=(96, 48), act="silu", optimizer="sgd", lr=0.02, momentum=0.9,
         weight_decay=1e-3, cosine=True, batch=48, epochs=30,
         tags=_tags("Loss/Train", "Loss/Validation", "lr", "Accuracy/Validation")),
    Case("healthy_k2", "healthy", REG, hidden=(48, 48, 48), act="gelu", lr=5e-3, cosine=True, batch=100,
         n_train=1500, noise=0.2, epochs=50, tags=_tags("train/mse_loss", "val/mse_loss", "lr")),
    Case("overfit_k3", "overfitting", CLS, arch="cnn", hidden=(16, 32), optimizer="adamw", lr=3e-3,
         weight_decay=1e-4, n_train=120, label_noise=0.4, batch=20, epochs=80,
         tags=_tags("Train/Loss", "Valid/Loss", "LR", "Valid/Acc")),
    Case("underfit_k4", "underfitting", REG, hidden=(2, 2), act="gelu", optimizer="rmsprop", lr=1e-2, batch=50,
         epochs=50, tags=_tags("loss/train", "loss/val", "lr")),
    Case("diverged_k5", "diverged", REG, hidden=(32, 32, 32), act="elu", optimizer="sgd", lr=0.01, warmup_to=0.6,
         warmup_epochs=12, batch=25, epochs=20, tags=_tags("train_loss", "val_loss", "lr")),
    Case("plateau_k6", "plateau", CLS, hidden=(128, 128), act="silu", optimizer="sgd", lr=0.05, momentum=0.9,
         bias_init=-12.0, epochs=30, tags=_tags("loss", "val_loss", "lr", "val_accuracy")),
    Case("lr_too_high_k7", "lr_too_high", CLS, hidden=(64, 64), act="elu", optimizer="adamw", lr=0.06,
         weight_decay=1e-2, batch=24, epochs=15, tags=_tags("train/loss", "val/loss", "lr", "val/acc")),
    Case("lr_too_low_k8", "lr_too_low", REG, hidden=(128,), act="gelu", optimizer="adamw", lr=1e-5,
         weight_decay=1e-2, batch=50, epochs=30, tags=_tags("Loss/train", "Loss/val", "lr")),
    Case("still_improving_k9", "still_improving", CLS, arch="cnn", hidden=(4, 8), lr=2e-3, batch=64, epochs=5,
         tags=_tags("loss_train", "loss_val", "lr", "acc_val")),
    Case("still_improving_k10", "still_improving", REG, hidden=(256,), act="tanh", optimizer="sgd", lr=0.005,
         momentum=0.9, nesterov=True, batch=16, epochs=12, tags=_tags("mse/train", "mse/valid", "lr")),
]


# A third held-out set, fresh after the rules had seen ``CASES``, ``HELDOUT`` and ``HELDOUT2``.
HELDOUT3: list[Case] = [
    Case("healthy_m1", "healthy", CLS, hidden=(192,), act="leaky_relu", optimizer="rmsprop", lr=5e-4,
         weight_decay=1e-3, cosine=True, batch=96, epochs=30,
         tags=_tags("train/ce", "valid/ce", "optim/lr", "valid/accuracy")),
    Case("healthy_m2", "healthy", REG, hidden=(80, 40), act="elu", optimizer="sgd", lr=0.01, momentum=0.9,
         nesterov=True, cosine=True, batch=40, n_train=1200, epochs=40,
         tags=_tags("Train/MSE", "Validation/MSE", "Train/LR")),
    Case("overfit_m3", "overfitting", REG, hidden=(128, 128, 128), act="silu", optimizer="adamw", lr=1e-3,
         n_train=40, noise=1.2, batch=8, epochs=120, tags=_tags("loss/trn", "loss/dev", "lr")),
    Case("underfit_m4", "underfitting", CLS, hidden=(3,), act="sigmoid", optimizer="adamw", lr=3e-2,
         weight_decay=0.3, n_train=1297, batch=128, epochs=40,
         tags=_tags("train_ce", "val_ce", "lr", "val_top1")),
    Case("lr_too_low_m5", "lr_too_low", CLS, arch="cnn", hidden=(8, 16), optimizer="sgd", lr=3e-4, momentum=0.5,
         batch=32, epochs=20, tags=_tags("Loss/train_step", "Loss/val_epoch", "lr-SGD", "Acc/val_epoch")),
    Case("lr_too_high_m6", "lr_too_high", REG, hidden=(64, 64), act="tanh", lr=0.06, batch=8, epochs=15,
         tags=_tags("train/loss_step", "val/loss", "lr-Adam")),
    Case("plateau_m7", "plateau", REG, hidden=(48,) * 10, act="sigmoid", optimizer="sgd", lr=0.01, momentum=0.9,
         epochs=30, tags=_tags("Training Loss", "Validation Loss", "LR")),
    Case("still_improving_m8", "still_improving", CLS, hidden=(160,), act="sigmoid", optimizer="sgd", lr=0.05,
         momentum=0.5, batch=64, epochs=12, tags=_tags("loss/training", "loss/held_out", "lr", "accuracy/held_out")),
]


# -- data -------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    return x, torch.tensor(y)


def _data(case: Case) -> tuple[torch.Tensor, ...]:
    """``(x_train, y_train, x_val, y_val)``; the validation set is the same for every case of a task."""
    g = torch.Generator().manual_seed(1234)
    if case.task == CLS:
        x, y = _digits()
        order = torch.randperm(len(x), generator=g)
        val, train = order[:500], order[500:500 + case.n_train]
        y_train = y[train].clone()
        flip = torch.rand(len(train), generator=g) < case.label_noise
        y_train[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=g)
        return x[train], y_train, x[val], y[val]
    n = 500 + case.n_train
    x = torch.rand(n, 4, generator=g) * 3 - 1.5
    clean = torch.sin(3 * x[:, 0]) + x[:, 1] ** 2 + 0.5 * x[:, 0] * x[:, 2] + x[:, 3]
    y = clean + case.noise * torch.randn(n, generator=torch.Generator().manual_seed(case.seed))
    y = ((y - clean.mean()) / clean.std()).unsqueeze(1)
    return x[500:], y[500:], x[:500], y[:500]


# -- one training ----------------------------------------------------------------------------

ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "elu": nn.ELU,
        "leaky_relu": nn.LeakyReLU, "silu": nn.SiLU}


def _cnn(case: Case, n_out: int) -> nn.Module:
    """The 8x8 digit images through 3x3 convolutions (``hidden`` channels), a 2x2 max-pool and a linear head."""
    layers: list[nn.Module] = [nn.Unflatten(1, (1, 8, 8))]
    width = 1
    for c in case.hidden:
        conv = nn.Conv2d(width, c, 3, padding=1)
        if case.init_gain is not None:
            with torch.no_grad():
                conv.weight.mul_(case.init_gain)
        layers += [conv, ACTS[case.act]()]
        width = c
    layers += [nn.MaxPool2d(2), nn.Flatten()]
    if case.dropout:
        layers.append(nn.Dropout(case.dropout))
    layers.append(nn.Linear(width * 16, n_out))
    return nn.Sequential(*layers)


def _model(case: Case, n_in: int, n_out: int) -> nn.Module:
    if case.arch == "cnn":
        return _cnn(case, n_out)
    layers: list[nn.Module] = []
    width = n_in
    for h in case.hidden:
        linear = nn.Linear(width, h)
        if case.bias_init is not None:
            nn.init.constant_(linear.bias, case.bias_init)
        if case.init_gain is not None:
            with torch.no_grad():
                linear.weight.mul_(case.init_gain)
        layers += [linear, ACTS[case.act]()]
        if case.dropout:
            layers.append(nn.Dropout(case.dropout))
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def _optimizer(case: Case, model: nn.Module) -> torch.optim.Optimizer:
    if case.optimizer == "sgd":
        if case.nesterov:
            return torch.optim.SGD(model.parameters(), lr=case.lr, momentum=case.momentum,
                                   weight_decay=case.weight_decay, nesterov=True)
        return torch.optim.SGD(model.parameters(), lr=case.lr, momentum=case.momentum,
                               weight_decay=case.weight_decay)
    if case.optimizer == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=case.lr, momentum=case.momentum,
                                   weight_decay=case.weight_decay)
    kind = torch.optim.AdamW if case.optimizer == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=case.lr, weight_decay=case.weight_decay)


def run_case(case: Case, out_dir: Path, *, signals: bool = True) -> None:
    """Train ``case`` and log it into ``out_dir/case.name`` with torch's ``SummaryWriter``."""
    from torch.utils.tensorboard import SummaryWriter

    from savegame.doctor.signals import Signals

    torch.manual_seed(case.seed)
    x_train, y_train, x_val, y_val = _data(case)
    classify = case.task == CLS
    model = _model(case, x_train.shape[1], 10 if classify else 1)
    opt = _optimizer(case, model)
    loss_fn = nn.CrossEntropyLoss() if classify else nn.MSELoss()
    steps_per_epoch = -(-len(x_train) // case.batch)
    warmup_steps = case.warmup_epochs * steps_per_epoch
    total_steps = case.epochs * steps_per_epoch
    tags = case.tags
    with SummaryWriter(str(out_dir / case.name)) as writer:
        watcher = None
        if signals:
            watcher = Signals(model, opt, every=20, log=lambda values, step: [
                writer.add_scalar(k, v, step) for k, v in values.items()])
        step = 0
        for epoch in range(case.epochs):
            model.train()
            order = torch.randperm(len(x_train))
            for i in range(0, len(x_train), case.batch):
                if case.warmup_to is not None:
                    lr = case.lr + (case.warmup_to - case.lr) * min(1.0, step / warmup_steps)
                    for group in opt.param_groups:
                        group["lr"] = lr
                elif case.cosine:
                    for group in opt.param_groups:
                        group["lr"] = case.lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))
                xb, yb = x_train[order[i:i + case.batch]], y_train[order[i:i + case.batch]]
                if case.input_noise:
                    xb = xb + case.input_noise * torch.randn_like(xb)
                loss = loss_fn(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                writer.add_scalar(tags["train"], loss.item(), step)
            model.eval()
            with torch.no_grad():
                out = model(x_val)
                writer.add_scalar(tags["val"], loss_fn(out, y_val).item(), step)
                if classify and "acc" in tags:
                    writer.add_scalar(tags["acc"], (out.argmax(1) == y_val).float().mean().item(), step)
            writer.add_scalar(tags["lr"], opt.param_groups[0]["lr"], step)
        if watcher is not None:
            watcher.close()


def generate(out_dir: Path, names: list[str] | None = None, *, signals: bool = True,
             seed: int = 0, heldout: bool | int = False) -> dict[str, str]:
    """Write the runs named in ``names`` (all by default) under ``out_dir`` and ``labels.json``;
    return ``{run name: label}``. ``seed`` is added to every case's seed (initialization, batch
    order, regression noise): the rules were tuned on seed 0, other seeds are held out.
    ``heldout=True`` (or 1) takes the cases (and looks ``names`` up) in ``HELDOUT`` instead of
    ``CASES``; ``heldout=2`` in ``HELDOUT2``; ``heldout=3`` in ``HELDOUT3``."""
    if heldout is False or heldout is None or heldout == 0:
        cases = CASES
    elif heldout is True or heldout == 1:
        cases = HELDOUT
    elif heldout == 2:
        cases = HELDOUT2
    elif heldout == 3:
        cases = HELDOUT3
    else:
        raise ValueError(f"heldout must be False, True (HELDOUT), 2 (HELDOUT2) or 3 (HELDOUT3), not {heldout!r}.")
    by_name = {case.name: case for case in cases}
    unknown = sorted(set(names or ()) - set(by_name))
    if unknown:
        raise ValueError(f"unknown case names {unknown}; expected some of {sorted(by_name)}.")
    chosen = [by_name[n] for n in names] if names else cases
    chosen = [replace(case, seed=case.seed + seed) for case in chosen]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: one thread is fastest and keeps runs reproducible
    try:
        for case in chosen:
            run_case(case, out_dir, signals=signals)
    finally:
        torch.set_num_threads(threads)
    labels = {case.name: case.label for case in chosen}
    (out_dir / "labels.json").write_text(json.dumps(labels, indent=2) + "\n")
    return labels


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the doctor's labeled training runs.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these cases")
    parser.add_argument("--no-signals", action="store_true", help="do not log the Signals")
    parser.add_argument("--seed", type=int, default=0, help="added to every case's seed (0: the tuning set)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--heldout", action="store_true",
                       help="write the held-out recipes (HELDOUT) instead of the tuning set (CASES)")
    which.add_argument("--heldout2", action="store_true",
                       help="write the second held-out recipes (HELDOUT2) instead of the tuning set (CASES)")
    which.add_argument("--heldout3", action="store_true",
                       help="write the third held-out recipes (HELDOUT3) instead of the tuning set (CASES)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    labels = generate(args.out_dir, args.only, signals=not args.no_signals, seed=args.seed,
                      heldout=3 if args.heldout3 else 2 if args.heldout2 else args.heldout)
    print(f"wrote {len(labels)} runs to {args.out_dir} in {time.perf_counter() - start:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
