"""The data and loss checks, each on a healthy setup and on the planted bug it should catch."""

import pytest
import torch
from torch import nn

from savegame.preflight.checks_data import check_data, image_grid
from savegame.preflight.checks_loss import FAIL_RATIO, WARN_RATIO, check_loss_at_init, check_loss_target_shapes
from savegame.preflight.setup import Setup


def mlp(inputs=8, classes=5):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(inputs, 32), nn.ReLU(), nn.Linear(32, classes))


def batches(n=2, size=64, inputs=8, classes=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, inputs, generator=g), torch.randint(0, classes, (size,), generator=g))
            for _ in range(n)]


def by_name(results):
    return {r.name: r for r in results}


def test_healthy_classification_passes():
    setup = Setup.build(mlp(), nn.CrossEntropyLoss(), batches())
    data = by_name(check_data(setup))
    assert [r.status for r in data.values()] == ["pass"] * 4
    assert data["label range"].numbers == {"classes": 5, "label_min": 0, "label_max": 4}
    assert data["data"].numbers["input_shape"] == [[64, 8]]
    assert check_loss_target_shapes(setup).status == "pass"
    init = check_loss_at_init(setup)
    assert init.status == "pass", init.message
    assert init.numbers["formula"] == "ln(5)" and abs(init.numbers["expected"] - 1.609) < 1e-3


def test_nan_in_inputs_and_targets_fails():
    x, y = batches(n=1)[0]
    x[3, 2] = float("nan")
    results = check_data(Setup.build(mlp(), nn.CrossEntropyLoss(), [(x, y)]))
    assert results[0].status == "fail" and "1 NaN/inf values in the inputs" in results[0].message
    assert results[0].fix
    y = torch.randn(64, 1)
    y[0] = float("inf")
    results = check_data(Setup.build(mlp(classes=1), nn.MSELoss(), [(torch.randn(64, 8), y)]))
    assert results[0].status == "fail" and "targets" in results[0].message


def test_labels_out_of_range_fail_in_data_and_loss():
    x, y = batches(n=1)[0]
    y[0] = 7                                              # the model has 5 outputs
    setup = Setup.build(mlp(), nn.CrossEntropyLoss(), [(x, y)])
    labels = by_name(check_data(setup))["label range"]
    assert labels.status == "fail" and "0..4" in labels.message and "8 classes" in labels.fix
    shapes = check_loss_target_shapes(setup)              # torch's IndexError, in words
    assert shapes.status == "fail" and "IndexError" in shapes.message and "out of range" in shapes.fix
    one_based = Setup.build(mlp(), nn.CrossEntropyLoss(), [(x, torch.arange(64) % 5 + 1)])
    assert "subtract 1" in by_name(check_data(one_based))["label range"].fix


def test_ignore_index_is_not_out_of_range():
    x, y = batches(n=1)[0]
    y[:4] = -100
    assert by_name(check_data(Setup.build(mlp(), nn.CrossEntropyLoss(), [(x, y)])))["label range"].status == "pass"


def test_unnormalized_inputs_warn():
    raw = torch.randint(0, 256, (64, 8)).float()          # raw 0-255 pixels
    scale = by_name(check_data(Setup.build(mlp(), nn.CrossEntropyLoss(), [(raw, torch.randint(0, 5, (64,)))])))
    assert scale["input scale"].status == "warn" and "255" in scale["input scale"].fix
    far = torch.randn(64, 8) * 50 + 100
    scale = by_name(check_data(Setup.build(mlp(), nn.CrossEntropyLoss(), [(far, torch.randint(0, 5, (64,)))])))
    assert scale["input scale"].status == "warn" and "standardise" in scale["input scale"].fix
    mixed = torch.randn(64, 8) * torch.tensor([1.0] * 7 + [1000.0])
    scale = by_name(check_data(Setup.build(mlp(), nn.CrossEntropyLoss(), [(mixed, torch.randint(0, 5, (64,)))])))
    assert scale["input scale"].status == "warn" and "different scales" in scale["input scale"].message


def test_one_class_batches_warn():
    x, _ = batches(n=1)[0]
    balance = by_name(check_data(Setup.build(mlp(), nn.CrossEntropyLoss(), [(x, torch.full((64,), 2))])))
    assert balance["class balance"].status == "warn" and "shuffle=True" in balance["class balance"].fix


def test_image_grid_only_for_images():
    x = torch.rand(20, 1, 8, 8) * 255
    setup = Setup.build(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), nn.CrossEntropyLoss(),
                        [(x, torch.randint(0, 10, (20,)))])
    grid = image_grid(setup)
    assert grid.shape == (16, 1, 8, 8) and grid.dtype == torch.float32
    assert float(grid.min()) >= 0 and float(grid.max()) <= 1
    assert image_grid(Setup.build(mlp(), nn.CrossEntropyLoss(), batches(n=1))) is None


def test_bad_final_layer_bias_fails():
    model = mlp()
    with torch.no_grad():
        model[2].bias.copy_(torch.tensor([12.0, 0, 0, 0, 0]))
    init = check_loss_at_init(Setup.build(model, nn.CrossEntropyLoss(), batches()))
    assert init.status == "fail" and "bias is large" in init.message and "more than 3x" in init.message
    assert "initialise the final layer's bias to 0" in init.fix and init.numbers["ratio"] > FAIL_RATIO


def test_a_loss_at_init_far_above_chance_fails_and_a_mild_one_warns():
    # the case: a final-layer bias of 25 on a 10-class classifier, ~9x chance
    model = mlp(classes=10)
    with torch.no_grad():
        model[2].bias.zero_()[3] = 25.0
    far = check_loss_at_init(Setup.build(model, nn.CrossEntropyLoss(), batches(classes=10)))
    assert far.status == "fail", far
    assert far.numbers["ratio"] > 8 and far.numbers["formula"] == "ln(10)"
    assert far.fix == ("initialise the final layer's bias to 0, or to the log of the class priors "
                       "(log of each class's share of the labels)")  # the fix text the warning had
    with torch.no_grad():
        model[2].bias[3] = 5.0  # ~2.2x chance: worth a look, not a failure
    mild = check_loss_at_init(Setup.build(model, nn.CrossEntropyLoss(), batches(classes=10)))
    assert mild.status == "warn", mild
    assert WARN_RATIO < mild.numbers["ratio"] <= FAIL_RATIO and mild.fix == far.fix


def test_softmax_before_cross_entropy_warns():
    model = nn.Sequential(mlp(), nn.Softmax(dim=1))
    init = check_loss_at_init(Setup.build(model, nn.CrossEntropyLoss(), batches()))
    assert init.status == "warn" and "return logits" in init.fix


def test_regression_and_binary_chance_levels():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 8, generator=g)
    y = x[:, :1] * 2 + 0.1 * torch.randn(128, 1, generator=g)
    init = check_loss_at_init(Setup.build(mlp(classes=1), nn.MSELoss(), [(x, y)]))
    assert init.status == "pass" and init.numbers["formula"] == "the targets' variance"
    assert abs(init.numbers["expected"] - float(y.var(unbiased=False))) < 1e-3
    far = check_loss_at_init(Setup.build(mlp(classes=1), nn.MSELoss(), [(x, y + 50)]))
    assert far.status == "fail" and "targets' mean" in far.fix and far.numbers["ratio"] > FAIL_RATIO
    mild = check_loss_at_init(Setup.build(mlp(classes=1), nn.MSELoss(), [(x, y + 2.5)]))
    assert mild.status == "warn" and "targets' mean" in mild.fix, mild
    binary = Setup.build(mlp(classes=1), nn.BCEWithLogitsLoss(), [(x, (y > 0).float())])
    assert check_loss_at_init(binary).numbers["formula"] == "ln(2)"
    assert by_name(check_data(binary))["label range"].status == "pass"


def test_target_shape_broadcasting_fails():
    x = torch.randn(64, 8)
    setup = Setup.build(mlp(classes=1), nn.MSELoss(), [(x, torch.randn(64))])   # (64, 1) vs (64,)
    shapes = check_loss_target_shapes(setup)
    assert shapes.status == "fail" and "(64, 64)" in shapes.message and "squeeze(-1)" in shapes.fix


def test_output_detached_from_graph_fails():
    class Detached(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def forward(self, x):
            return self.net(x).detach()

    shapes = check_loss_target_shapes(Setup.build(Detached(), nn.CrossEntropyLoss(), batches()))
    assert shapes.status == "fail" and "not connected to the graph" in shapes.message
    assert ".detach()" in shapes.fix


def test_loss_that_raises_or_returns_a_float_fails():
    def broken(out, y):
        raise KeyError("weights")

    shapes = check_loss_target_shapes(Setup.build(mlp(), broken, batches()))
    assert shapes.status == "fail" and "KeyError" in shapes.message
    floats = check_loss_target_shapes(Setup.build(mlp(), lambda o, y: nn.functional.cross_entropy(o, y).item(),
                                                  batches()))
    assert floats.status == "fail" and ".item()" in floats.fix


def test_non_scalar_loss_and_frozen_model_fail():
    shapes = check_loss_target_shapes(Setup.build(mlp(), nn.CrossEntropyLoss(reduction="none"), batches()))
    assert shapes.status == "fail" and "not a single number" in shapes.message
    frozen = mlp().requires_grad_(False)
    assert "frozen" in check_loss_target_shapes(Setup.build(frozen, nn.CrossEntropyLoss(), batches())).message


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_label_smoothing_and_forward_still_pass(smoothing):
    loss_fn = nn.CrossEntropyLoss(label_smoothing=smoothing)
    setup = Setup.build(mlp(), loss_fn, batches(), forward=lambda m, b: loss_fn(m(b[0]), b[1]))
    assert check_loss_at_init(setup).status == "pass"
    assert check_loss_target_shapes(setup).status == "pass"
