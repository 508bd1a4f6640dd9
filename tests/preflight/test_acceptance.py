"""Issue 4's acceptance: planted bugs, each caught by the check that should catch it, through the
whole ``savegame.preflight``; healthy setups pass with no failure."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import savegame

N, D, C = 96, 10, 3


def blobs(seed=0, scale=1.0, nan=False, labels_offset=0, shuffle_labels=False):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, C, (N,), generator=g)
    x = torch.randn(N, D, generator=g) * 0.5
    x[torch.arange(N), y] += 3.0  # separable: class k lights up feature k
    x = x * scale
    if nan:
        x[5, 2] = float("nan")
    if shuffle_labels:
        y = y[torch.randperm(N, generator=g)]
    return TensorDataset(x, y + labels_offset)


def mlp(out=C):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 32), nn.ReLU(), nn.Linear(32, out))


class Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.extra = mlp(), nn.Linear(D, C)

    def forward(self, x):
        return self.body(x)


class MixesSamples(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = mlp()

    def forward(self, x):
        return self.body(x - x.mean(0))  # normalises over the batch: samples leak into each other


class Detached(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = mlp()

    def forward(self, x):
        return self.body(x).detach()


def frozen():
    model = mlp()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def bad_bias():
    model = mlp()
    with torch.no_grad():
        model[-1].bias.copy_(torch.tensor([12.0, -6.0, -6.0]))
    return model


def regression_shapes():
    torch.manual_seed(0)
    x = torch.randn(N, D)
    y = x.sum(1)  # (B,): the model outputs (B, 1)
    return nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, 1)), nn.MSELoss(), TensorDataset(x, y)


def loader(dataset):
    return DataLoader(dataset, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))


CE = nn.CrossEntropyLoss()

PLANTED = {
    "softmax before CrossEntropyLoss": (lambda: (nn.Sequential(mlp(), nn.Softmax(dim=1)), CE, blobs()), "overfit one batch"),
    "labels misaligned with inputs": (lambda: (mlp(), CE, blobs(shuffle_labels=True)), "input-independent baseline"),
    "samples mixed across the batch": (lambda: (MixesSamples(), CE, blobs()), "batch independence"),
    "an unused layer": (lambda: (Unused(), CE, blobs()), "gradients"),
    "a frozen model": (lambda: (frozen(), CE, blobs()), "gradients"),
    "a bad final-layer bias": (lambda: (bad_bias(), CE, blobs()), "loss at init"),
    "unnormalized inputs": (lambda: (mlp(), CE, blobs(scale=255.0)), "input scale"),
    "labels out of range": (lambda: (mlp(), CE, blobs(labels_offset=1)), "label range"),
    "NaN in the data": (lambda: (mlp(), CE, blobs(nan=True)), "data"),
    "target-shape broadcasting": (regression_shapes, "loss/target shapes"),
    "an output detached from the graph": (lambda: (Detached(), CE, blobs()), "gradients"),
}


@pytest.mark.parametrize("bug", PLANTED, ids=list(PLANTED))
def test_a_planted_bug_is_caught_by_its_check(bug):
    make, check = PLANTED[bug]
    model, loss_fn, dataset = make()
    report = savegame.preflight(model, loss_fn, loader(dataset))
    found = report[check]
    assert found.status in ("fail", "warn"), f"{bug}: {check} said {found.status}: {found.message}"
    assert found.fix, f"{bug}: {check} gives no fix"
    if check != "input scale":  # unnormalized inputs are a warning, not a failure
        assert not report.passed


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(8 * 4 * 4, C))

    def forward(self, x):
        return self.head(self.features(x))


def images():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, C, (N,), generator=g)
    x = torch.rand(N, 1, 8, 8, generator=g) * 0.2
    for k in range(C):
        x[y == k, 0, 2 * k:2 * k + 2, :] += 0.8  # a bright band per class
    return TensorDataset(x, y)


def regression():
    torch.manual_seed(0)
    x = torch.randn(N, D)
    y = x[:, :3].sum(1, keepdim=True)
    return nn.Sequential(nn.Linear(D, 32), nn.ReLU(), nn.Linear(32, 1)), nn.MSELoss(), TensorDataset(x, y)


HEALTHY = {
    "MLP": lambda: (mlp(), CE, blobs()),
    "CNN with BatchNorm": lambda: (SmallCNN(), CE, images()),
    "dropout": lambda: (nn.Sequential(nn.Linear(D, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, C)), CE, blobs()),
    "regression": regression,
    "label smoothing": lambda: (mlp(), nn.CrossEntropyLoss(label_smoothing=0.1), blobs()),
}


@pytest.mark.parametrize("setup", HEALTHY, ids=list(HEALTHY))
def test_a_healthy_setup_passes_with_no_failure(setup):
    model, loss_fn, dataset = HEALTHY[setup]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = savegame.preflight(model, loss_fn, loader(dataset))
    assert report.passed, str(report)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched
