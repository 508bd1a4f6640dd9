"""The gradient and training checks of preflight on planted bugs and on healthy setups.

Each planted bug is caught by the check that should catch it; healthy setups (MLP, CNN with
BatchNorm, dropout, regression, label smoothing) pass every check with no failure. The checks
leave the user's model, RNG and global torch settings as they were.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from savegame.preflight.checks_grad import (FROZEN_FIX, check_batch_independence, check_gradcheck,
                                            check_gradients, check_parameters_change)
from savegame.preflight.checks_train import (check_determinism, check_input_independent_baseline,
                                             check_overfit_one_batch)
from savegame.preflight.setup import Setup

ALL = [check_gradients, check_parameters_change, check_batch_independence, check_overfit_one_batch,
       check_input_independent_baseline, check_determinism]
CLASSES, FEATURES = 4, 20


# -- data and models ----------------------------------------------------------------------------

def clusters(n: int = 64, *, seed: int = 0, shuffle_labels: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two batches of 32 points around 4 well-separated class centers."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(CLASSES, FEATURES, generator=g) * 3
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = centers[y] + torch.randn(n, FEATURES, generator=g)
    if shuffle_labels:  # the labels shuffled separately from the inputs
        y = y[torch.randperm(n, generator=g)]
    return [(x[:32], y[:32]), (x[32:], y[32:])]


def images(n: int = 64, *, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """1x8x8 images whose bright quadrant is the class."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.3
    for i, label in enumerate(y.tolist()):
        r, c = divmod(label, 2)
        x[i, 0, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 1.0
    return [(x[:32], y[:32]), (x[32:], y[32:])]


def regression(n: int = 64, *, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, FEATURES, generator=g)
    y = x @ torch.randn(FEATURES, 1, generator=g) + 0.05 * torch.randn(n, 1, generator=g)
    return [(x[:32], y[:32]), (x[32:], y[32:])]


def mlp(out: int = CLASSES, *, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(FEATURES, 64), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(64, out))


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Dropout(0.2), nn.Linear(8 * 16, CLASSES))


def build(model: nn.Module, loss_fn=None, data=None, **kw) -> Setup:
    kw.setdefault("optimizer", lambda params: torch.optim.Adam(params, lr=1e-2))
    return Setup.build(model, loss_fn or nn.CrossEntropyLoss(), data or clusters(), **kw)


class Net(nn.Module):
    """An MLP whose forward can plant a bug."""

    def __init__(self, bug: str = "") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.bug = bug
        self.hidden = nn.Linear(FEATURES, 32)
        self.head = nn.Linear(32, CLASSES)
        self.extra = nn.Linear(32, 32)  # used unless bug == "unused"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bug == "mean over batch":
            x = x - x.mean(0)
        h = torch.relu(self.hidden(x))
        if self.bug != "unused":
            h = h + torch.relu(self.extra(h))
        if self.bug == "view over batch":  # meant h.view(B, 2, 16).sum(1): a view that splits the batch
            h = h.view(2, h.shape[0], 16).sum(0).repeat(1, 2)
        out = self.head(h)
        return out.detach() if self.bug == "detached" else out


# -- planted bugs -------------------------------------------------------------------------------

def test_softmax_before_cross_entropy_fails_overfit_and_says_return_logits():
    model = nn.Sequential(mlp(), nn.Softmax(dim=1))
    result = check_overfit_one_batch(build(model))
    assert result.status == "fail", result
    assert "Softmax" in result.fix and "log-softmax again" in result.fix and "return logits" in result.fix
    assert result.numbers["lowest_loss"] > 0.7  # the floor of softmax + cross-entropy
    assert "cannot fall below" in result.message


def test_labels_misaligned_with_inputs_fail_the_input_independent_baseline():
    result = check_input_independent_baseline(build(mlp(), data=clusters(shuffle_labels=True)))
    assert result.status == "fail", result
    assert "does not use its inputs" in result.fix and "labels misaligned" in result.fix
    assert result.numbers["real_held_out_loss"] >= result.numbers["zeroed_held_out_loss"]


@pytest.mark.parametrize("bug", ["mean over batch", "view over batch"])
def test_samples_mixed_across_the_batch_fail_batch_independence(bug):
    result = check_batch_independence(build(Net(bug)))
    assert result.status == "fail", result
    assert "samples mixed across the batch" in result.fix


def test_an_unused_layer_is_named_by_the_gradients_check():
    result = check_gradients(build(Net("unused")))
    assert result.status == "fail"
    assert "extra.weight" in result.message and "extra.bias" in result.message
    assert "hidden" not in result.message
    assert result.numbers["no_grad"] == ["extra.weight", "extra.bias"]
    assert "never used" in result.fix


def test_a_frozen_model_fails_the_gradients_check():
    model = mlp()
    model.requires_grad_(False)
    result = check_gradients(build(model))
    assert result.status == "fail" and result.fix == FROZEN_FIX
    for check in ALL[1:]:  # the other checks skip rather than crash
        assert check(build(model)).status in ("skip", "pass"), check


def test_an_output_detached_from_the_graph_fails_the_gradients_check():
    result = check_gradients(build(Net("detached")))
    assert result.status == "fail"
    assert "not connected to the graph" in result.message and ".detach()" in result.fix
    assert check_parameters_change(build(Net("detached"))).status == "skip"


def test_a_zero_learning_rate_fails_parameters_change():
    result = check_parameters_change(build(mlp(), optimizer=lambda p: torch.optim.SGD(p, lr=0.0)))
    assert result.status == "fail" and "learning rate" in result.fix
    assert len(result.numbers["unchanged"]) == 4


def test_nan_gradients_are_named():
    class Sqrt(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(FEATURES, CLASSES)

        def forward(self, x):
            out = self.lin(x)
            return torch.sqrt(out - out.detach())  # sqrt(0): an infinite gradient

    result = check_gradients(build(Sqrt()))
    assert result.status == "fail" and "NaN/inf" in result.message and "lin.weight" in result.message


def test_a_model_using_unseeded_randomness_warns_on_determinism():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def forward(self, x):
            return self.net(x + torch.from_numpy(np.random.randn(*x.shape).astype("float32")))

    result = check_determinism(build(Noisy()))
    assert result.status == "warn" and "numpy" in result.fix
    assert result.numbers["losses_1"] != result.numbers["losses_2"]


def test_learning_rate_too_low_is_the_likely_cause_when_the_loss_barely_moves():
    result = check_overfit_one_batch(build(mlp(), optimizer=lambda p: torch.optim.SGD(p, lr=1e-6), steps=10))
    assert result.status == "fail" and "learning rate too low" in result.fix


# -- gradcheck ----------------------------------------------------------------------------------

class BadSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x  # wrong: should be 2 * x


class Square(nn.Module):
    def __init__(self, broken: bool):
        super().__init__()
        self.broken = broken

    def forward(self, x):
        return BadSquare.apply(x) if self.broken else x * x


def test_gradcheck_fails_a_custom_module_with_a_wrong_backward():
    model = nn.Sequential(nn.Linear(FEATURES, 8), Square(broken=True), nn.Linear(8, CLASSES))
    result = check_gradcheck(build(model))
    assert result.status == "fail" and "1 custom module" in result.message and "backward" in result.fix


def test_gradcheck_passes_correct_custom_modules_and_skips_plain_torch_models():
    model = nn.Sequential(nn.Linear(FEATURES, 8), Square(broken=False), nn.Linear(8, CLASSES))
    result = check_gradcheck(build(model))
    assert result.status == "pass", result
    assert result.numbers["passed"] == ["1"]
    assert check_gradcheck(build(mlp())).status == "skip"
    assert next(model.parameters()).dtype == torch.float32  # the user's model stays float32


# -- healthy setups -----------------------------------------------------------------------------

HEALTHY = {
    "mlp": lambda: build(mlp()),
    "cnn with batchnorm and dropout": lambda: build(cnn(), data=images()),
    "dropout": lambda: build(mlp(dropout=0.5)),
    "regression": lambda: build(mlp(out=1), nn.MSELoss(), regression()),
    "label smoothing": lambda: build(mlp(), nn.CrossEntropyLoss(label_smoothing=0.1)),
    "default adam at 1e-3": lambda: Setup.build(mlp(), nn.CrossEntropyLoss(), clusters()),
}


@pytest.mark.parametrize("kind", sorted(HEALTHY))
def test_healthy_setups_pass_every_check(kind):
    setup = HEALTHY[kind]()
    before = {k: v.clone() for k, v in setup.model.state_dict().items()}
    rng = torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    training = setup.model.training
    results = [check(setup) for check in ALL]
    assert all(r.status == "pass" for r in results), "\n".join(str(r) for r in results)
    assert all(r.seconds >= 0 for r in results)
    # the user's model, the RNG and global settings are as they were
    after = setup.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert setup.model.training == training
    assert torch.equal(rng[0], torch.random.get_rng_state())
    assert (rng[1] == np.random.get_state()[1]).all() and rng[2] == random.getstate()
    assert torch.is_grad_enabled() and not torch.are_deterministic_algorithms_enabled()


def test_label_smoothing_floor_is_reported():
    result = check_overfit_one_batch(HEALTHY["label smoothing"]())
    assert result.status == "pass"
    assert result.numbers["label_smoothing_floor"] == pytest.approx(0.3488, abs=1e-3)


def test_checks_run_under_no_grad_and_in_quick_mode():
    setup = build(mlp(), quick=True)
    with torch.no_grad():
        results = [check(setup) for check in ALL]
    assert all(r.status == "pass" for r in results), "\n".join(str(r) for r in results)
    assert torch.is_grad_enabled()


# -- shapes of data the checks cannot use -------------------------------------------------------

def test_dict_batches_work_and_forward_batches_skip_what_needs_inputs():
    data = [{"x": x, "label": y} for x, y in clusters()]
    results = {check.__name__: check(build(mlp(), data=data)) for check in ALL}
    assert all(r.status == "pass" for r in results.values()), results

    def forward(model, batch):
        return nn.functional.cross_entropy(model(batch[0]), batch[1])

    data = [[x, y, "extra"] for x, y in clusters()]
    objects = [type("Batch", (), {"x": x, "y": y})() for x, y in clusters()]
    setup = build(mlp(), data=objects, forward=lambda model, b: forward(model, (b.x, b.y)))
    assert check_batch_independence(setup).status == "skip"
    assert check_input_independent_baseline(setup).status == "skip"
    assert check_gradients(setup).status == "pass"
    assert check_overfit_one_batch(setup).status == "pass"
    assert check_determinism(setup).status == "pass"
    assert check_gradcheck(setup).status == "skip"


def test_batch_independence_skips_integer_inputs_and_single_samples():
    tokens = [(torch.randint(0, 10, (8, 5)), torch.randint(0, 2, (8,)))]
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(20, 2))
    assert check_batch_independence(build(model, data=tokens)).status == "skip"
    single = [(torch.randn(1, FEATURES), torch.tensor([1]))]
    assert check_batch_independence(build(mlp(), data=single)).status == "skip"


def test_probabilities_into_nll_loss_fail_overfit_instead_of_passing_on_a_negative_loss():
    model = nn.Sequential(mlp(), nn.Softmax(dim=1))
    result = check_overfit_one_batch(build(model, nn.NLLLoss()))
    assert result.status == "fail" and "never negative" in result.message
    assert "NLLLoss expects log-probabilities" in result.fix


def test_a_final_relu_is_named_when_overfit_fails():
    result = check_overfit_one_batch(build(nn.Sequential(mlp(), nn.ReLU()), steps=10))
    assert result.status == "fail" and "never negative" in result.fix and "return raw logits" in result.fix


def test_the_same_input_with_two_labels_points_at_misaligned_labels():
    x, y = clusters()[0]
    x = torch.cat([x[:4], x[:4]])
    y = torch.cat([y[:4], (y[:4] + 1) % CLASSES])
    result = check_overfit_one_batch(build(mlp(), data=[(x, y)], steps=10))
    assert result.status == "fail" and "labels misaligned with inputs" in result.fix
    assert result.numbers["conflicting_duplicates"] == [0, 4] or result.numbers["conflicting_duplicates"] == (0, 4)
