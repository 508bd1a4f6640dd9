"""The corpus's families: for each, a synthetic data set, a model builder and the tags it logs.

A family is one kind of model on one kind of data (a regression MLP, a conv net on drawn bars, a
GRU on a recall task ...). Each is deliberately unlike the project's demo (an MLP on sklearn's 8x8
digits) and unlike each other, so a doctor tuned on one kind of curve is judged on others.

Everything is generated from a seeded ``torch.Generator`` (no download, no file): the same seed
gives the same data and, with ``torch.manual_seed`` set by the caller, the same initial weights.

``make_data(g, r)`` returns ``(x_train, y_train, x_val, y_val)`` and ``make_model(r)`` a module;
``r`` is the run's flat recipe dict (recipes.py), from which each builder reads only its own keys
(``n_train``, ``width``, ``depth``, ``dropout`` ...). The tags are the spellings real users write
(and that TensorBoard, Lightning or Hugging Face produce), different in every family on purpose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU}


@dataclass
class Family:
    name: str
    what: str  # one line for the README and labels.json
    loss: str  # "ce" (classification) or "mse"
    num_classes: int | None
    # role -> tag; roles: train_loss, train_loss_epoch, val_loss, train_acc, val_acc, lr, grad_norm
    tags: dict[str, str]
    make_data: Callable[[torch.Generator, dict], tuple]
    make_model: Callable[[dict], nn.Module]
    lr_every_step: bool = False  # log the lr at every logged step (else at each validation)
    eval_at_start: bool = False  # a validation at step 0, before any update
    # Acceptance thresholds (accept.py) where the family's own loss scale needs them: a loss still
    # above high * its first value counts as "high"; a healthy run must end below healthy * first.
    accept: dict = field(default_factory=dict)


def mlp(n_in: int, n_out: int, width: int, depth: int, act: str = "relu", dropout: float = 0.0) -> nn.Sequential:
    """depth hidden layers of ``width`` (depth 0: a linear model)."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(n_in if i == 0 else width, width), ACTS[act]()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width if depth else n_in, n_out))
    return nn.Sequential(*layers)


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g)


def _flip(g: torch.Generator, y: torch.Tensor, frac: float, classes: int) -> torch.Tensor:
    """Replace a fraction of the labels by a *different* random class (label noise)."""
    if not frac:
        return y
    flip = torch.rand(len(y), generator=g) < frac
    shift = torch.randint(1, classes, (len(y),), generator=g)
    return torch.where(flip, (y + shift) % classes, y)


# -- 1. regression MLP on a smooth synthetic function --------------------------------------------
def regress_data(g, r):
    n = r.get("n_train", 1024) + r.get("n_val", 512)
    x = _randn(g, n, 6)
    y = torch.sin(2 * x[:, 0]) + 0.5 * x[:, 1] ** 2 - 0.5 + 0.6 * x[:, 2] * x[:, 3] + 0.4 * x[:, 4]
    y = (y / y.std() + r.get("noise", 0.1) * _randn(g, n)).unsqueeze(1)
    k = r.get("n_train", 1024)
    return x[:k], y[:k], x[k:], y[k:]


# -- 2. memorizing a small data set: few samples in clusters, a big net ---------------------------
def memorize_data(g, r):
    k, m, classes = r.get("n_train", 96), r.get("n_val", 512), 4
    centers = 1.3 * _randn(g, classes * 3, 16)  # three clusters per class, overlapping a little
    cluster = torch.randint(0, classes * 3, (k + m,), generator=g)
    x = centers[cluster] + _randn(g, k + m, 16)
    y = cluster % classes
    if r.get("random_labels"):  # nothing to learn: the net can only memorize
        y = torch.randint(0, classes, (k + m,), generator=g)
    return x[:k], y[:k], x[k:], y[k:]


# -- 3. a small conv net on drawn oriented bars, 1x16x16 -----------------------------------------
def bars_data(g, r):
    k, m, size = r.get("n_train", 1024), r.get("n_val", 512), 16
    n = k + m
    y = torch.randint(0, 4, (n,), generator=g)
    angle = y * (math.pi / 4) + 0.15 * _randn(g, n)  # four orientations, jittered
    cx, cy = 4 + 8 * torch.rand(n, generator=g), 4 + 8 * torch.rand(n, generator=g)
    half = 3 + 3 * torch.rand(n, generator=g)  # half length of the bar
    grid = torch.arange(size, dtype=torch.float32)
    px, py = grid.view(1, 1, size) - cx.view(n, 1, 1), grid.view(1, size, 1) - cy.view(n, 1, 1)
    c, s = torch.cos(angle).view(n, 1, 1), torch.sin(angle).view(n, 1, 1)
    along, across = px * c + py * s, -px * s + py * c  # pixel coordinates in the bar's frame
    img = torch.exp(-across ** 2 / 1.5) * torch.sigmoid(3 * (half.view(n, 1, 1) - along.abs()))
    img = img + r.get("noise", 0.25) * _randn(g, n, size, size)
    y = torch.cat([_flip(g, y[:k], r.get("label_noise", 0.0), 4), y[k:]])
    return img[:k, None], y[:k], img[k:, None], y[k:]


class ConvNet(nn.Module):
    def __init__(self, channels: int, head: str, dropout: float):
        super().__init__()
        c = channels
        # conv-BN-ReLU, as CNNs are usually written (without BN this net sits ~150 steps at chance)
        self.features = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(),
                                      nn.MaxPool2d(2))
        # "pool": global average (few weights); "flat": a dense head on all 4x4 positions (many)
        self.pool = nn.AdaptiveAvgPool2d(1) if head == "pool" else nn.Identity()
        n = 2 * c if head == "pool" else 2 * c * 16
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(n, 4))

    def forward(self, x):
        return self.head(self.pool(self.features(x)))


# -- 4. a GRU/LSTM summing digits: the sum of 8 digits 0-3, in 4 bins of about equal size ----------
def digitsum_data(g, r):
    k, m, length, vocab = r.get("n_train", 2048), r.get("n_val", 512), 8, 4
    tokens = torch.randint(0, vocab, (k + m, length), generator=g)
    x = nn.functional.one_hot(tokens, vocab).float() + r.get("noise", 0.1) * _randn(g, k + m, length, vocab)
    total = tokens.sum(1)  # 0..24, mean 12: bins <= 10, 11-12, 13-14, >= 15
    y = torch.bucketize(total, torch.tensor([10, 12, 14]), right=False)
    return x[:k], _flip(g, y[:k], r.get("label_noise", 0.0), 4), x[k:], y[k:]


class Recurrent(nn.Module):
    def __init__(self, hidden: int, cell: str, dropout: float):
        super().__init__()
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(4, hidden, batch_first=True)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, 4))

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


# -- 5. a tiny transformer encoder on majority vote over tokens ---------------------------------
def majority_data(g, r):
    k, m, length, vocab = r.get("n_train", 2048), r.get("n_val", 512), 11, 3
    tokens = torch.randint(0, vocab, (3 * (k + m), length), generator=g)
    counts = nn.functional.one_hot(tokens, vocab).sum(1)
    top = counts.topk(2, dim=1).values
    tokens, counts = tokens[top[:, 0] > top[:, 1]][: k + m], counts[top[:, 0] > top[:, 1]][: k + m]  # no ties
    y = _flip(g, counts.argmax(1), r.get("label_noise", 0.1), vocab)  # 10% wrong votes, train and val alike
    return tokens[:k], y[:k], tokens[k:], y[k:]


class TinyTransformer(nn.Module):
    def __init__(self, d: int, layers: int, dropout: float):
        super().__init__()
        self.embed, self.pos = nn.Embedding(3, d), nn.Parameter(0.1 * torch.randn(11, d))
        layer = nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=2 * d, dropout=dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, 3)

    def forward(self, tokens):
        return self.head(self.encoder(self.embed(tokens) + self.pos).mean(1))


# -- 6. classification with label noise (sklearn's make_classification) ---------------------------
def noisy_data(g, r):
    from sklearn.datasets import make_classification
    k, m = r.get("n_train", 2000), r.get("n_val", 512)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    x, y = make_classification(k + m, n_features=20, n_informative=10, n_redundant=4, n_classes=4,
                               n_clusters_per_class=2, class_sep=2.0, flip_y=0.0, random_state=seed)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    y = _flip(g, y, r.get("label_noise", 0.3), 4)  # train and validation alike: a noisy source
    return x[:k], y[:k], x[k:], y[k:]


# -- 7. a linear (softmax) model on gaussian blobs, plain SGD with a schedule ----------------------
def blobs_data(g, r):
    k, m, d = r.get("n_train", 1024), r.get("n_val", 512), r.get("dim", 10)
    centers = r.get("sep", 0.8) * _randn(g, 3, d) * math.sqrt(10 / d)  # same class distances at any d
    y = torch.randint(0, 3, (k + m,), generator=g)
    x = centers[y] + _randn(g, k + m, d)
    return x[:k], y[:k], x[k:], y[k:]


# -- 8. an MLP with AdamW, weight decay and dropout on rings, small or large batches --------------
def rings_data(g, r):
    k, m = r.get("n_train", 2048), r.get("n_val", 512)
    y = torch.randint(0, 5, (k + m,), generator=g)
    radius = 1 + y + 0.25 * _randn(g, k + m)
    theta = 2 * math.pi * torch.rand(k + m, generator=g)
    plane = torch.stack([radius * torch.cos(theta), radius * torch.sin(theta)], 1) / 3
    rot, _ = torch.linalg.qr(_randn(g, 12, 12))  # the rings sit in a random plane of 12-d space
    x = torch.cat([plane, 0.5 * _randn(g, k + m, 10)], 1) @ rot
    return x[:k], _flip(g, y[:k], r.get("label_noise", 0.0), 5), x[k:], y[k:]


# -- 9. a denoising autoencoder on data near a 3-d manifold in 24-d -------------------------------
def manifold_data(g, r):
    k, m = r.get("n_train", 1024), r.get("n_val", 512)
    z = _randn(g, k + m, 3)
    a, b = _randn(g, 3, 24), 0.5 * _randn(g, 24)
    clean = torch.tanh(z @ a + b)
    clean = (clean - clean.mean(0)) / clean.std(0)
    noisy = clean + r.get("noise", 0.3) * _randn(g, k + m, 24)  # fixed per sample: memorizable
    return noisy[:k], clean[:k], noisy[k:], clean[k:]


def autoencoder(r):
    w, z, act = r.get("width", 64), r.get("bottleneck", 4), r.get("act", "relu")
    return nn.Sequential(nn.Linear(24, w), ACTS[act](), nn.Linear(w, z), ACTS[act](),
                         nn.Linear(z, w), ACTS[act](), nn.Linear(w, 24))


FAMILIES = {f.name: f for f in [
    Family("regress_mlp", "MLP regression (MSE) of a smooth 6-d function", "mse", None,
           {"train_loss": "mse/train", "val_loss": "mse/val", "lr": "lr"},
           regress_data, lambda r: mlp(6, 1, r.get("width", 64), r.get("depth", 2), r.get("act", "relu"),
                                       r.get("dropout", 0.0)), accept={"high": 0.35}),
    Family("memorize", "big MLP on a few hundred clustered 16-d points, 4 classes", "ce", 4,
           {"train_loss": "train_loss", "val_loss": "val_loss", "train_acc": "train_acc",
            "val_acc": "val_acc", "lr": "learning_rate"},
           memorize_data, lambda r: mlp(16, 4, r.get("width", 256), r.get("depth", 2), r.get("act", "relu"),
                                        r.get("dropout", 0.0)), eval_at_start=True),
    Family("conv_bars", "small conv net on drawn oriented bars (1x16x16), 4 classes", "ce", 4,
           {"train_loss": "Loss/train", "val_loss": "Loss/valid", "train_acc": "Accuracy/train",
            "val_acc": "Accuracy/valid", "lr": "LR"},
           bars_data, lambda r: ConvNet(r.get("channels", 8), r.get("head", "pool"), r.get("dropout", 0.0))),
    Family("gru_digitsum", "GRU/LSTM binning the sum of 8 digits (0-3) into 4 classes", "ce", 4,
           {"train_loss": "loss/train", "val_loss": "loss/val", "val_acc": "acc/val", "lr": "lr"},
           digitsum_data, lambda r: Recurrent(r.get("width", 32), r.get("cell", "gru"), r.get("dropout", 0.0)),
           lr_every_step=True),
    Family("transformer_majority",
           "1-2 layer TransformerEncoder voting the majority of 11 tokens (10% wrong labels), 3 classes",
           "ce", 3, {"train_loss": "train/loss", "val_loss": "eval/loss", "val_acc": "eval/accuracy",
                     "lr": "train/learning_rate", "grad_norm": "train/grad_norm"},  # Hugging Face Trainer's tags
           majority_data, lambda r: TinyTransformer(r.get("width", 32), r.get("depth", 1), r.get("dropout", 0.0)),
           lr_every_step=True),
    Family("noisy_labels", "MLP on make_classification with 30% flipped labels, 4 classes", "ce", 4,
           {"train_loss": "loss/training", "val_loss": "loss/validation", "train_acc": "accuracy/training",
            "val_acc": "accuracy/validation", "lr": "learning_rate"},
           noisy_data, lambda r: mlp(20, 4, r.get("width", 64), r.get("depth", 2), r.get("act", "relu"),
                                     r.get("dropout", 0.0)), eval_at_start=True, accept={"high": 0.8, "healthy": 0.85}),
    Family("logistic_sgd", "softmax regression on gaussian blobs, plain SGD with StepLR/cosine, 3 classes",
           "ce", 3, {"train_loss": "nll/train", "val_loss": "nll/test", "val_acc": "acc/test", "lr": "lr-SGD"},
           blobs_data, lambda r: mlp(r.get("dim", 10), 3, 0, 0), eval_at_start=True, accept={"healthy": 0.6}),
    Family("adamw_rings", "MLP with AdamW, weight decay and dropout on 5 rings in 12-d, small or large batches",
           "ce", 5, {"train_loss": "train_loss_step", "train_loss_epoch": "train_loss_epoch", "val_loss": "val_loss",
                     "train_acc": "train_acc_epoch", "val_acc": "val_acc", "lr": "lr-AdamW"},  # Lightning's tags
           rings_data, lambda r: mlp(12, 5, r.get("width", 128), r.get("depth", 2), r.get("act", "relu"),
                                     r.get("dropout", 0.1))),
    Family("autoencoder", "denoising MLP autoencoder (MSE) of 24-d data near a 3-d manifold", "mse", None,
           {"train_loss": "recon_loss/train", "val_loss": "recon_loss/val", "lr": "learning_rate"},
           manifold_data, autoencoder, eval_at_start=True, accept={"high": 0.35}),
]}


def chance_loss(family: Family) -> float | None:
    """ln C for a classification family (the loss of a uniform guess), None for regression."""
    return math.log(family.num_classes) if family.num_classes else None
