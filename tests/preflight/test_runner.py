"""preflight(): the registry, bad input turned into failed checks, and the user's objects untouched."""

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

import savegame
from savegame.preflight import runner
from savegame.preflight.report import CheckResult

DATA_AND_LOSS = ["data", "input scale", "label range", "class balance", "loss/target shapes", "loss at init"]


def mlp(classes=5):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, classes))


def batches(n=2, size=64, classes=5):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(size, 8, generator=g), torch.randint(0, classes, (size,), generator=g)) for _ in range(n)]


@pytest.fixture
def fake_registry(monkeypatch):
    """Only the data and loss checks, plus whatever a test appends: keeps these tests fast and
    independent of the gradient and training checks."""
    registry = [entry for entry in runner.REGISTRY if entry[0] in ("data", "loss/target shapes", "loss at init")]
    monkeypatch.setattr(runner, "REGISTRY", registry)
    return registry


def statuses(report):
    return {c.name: c.status for c in report.checks}


def test_healthy_mlp_passes_in_registry_order():
    report = savegame.preflight(mlp(), nn.CrossEntropyLoss(), batches(), quick=True)
    names = [c.name for c in report.checks]
    assert names[:7] == ["setup"] + DATA_AND_LOSS
    assert all(c.status == "pass" for c in report.checks[:7]), str(report)
    assert all(c.seconds >= 0 for c in report.checks) and report.checks[1].seconds > 0
    assert json.loads(report.to_json())["checks"][0]["name"] == "setup"


def test_quick_and_gradcheck_select_entries(monkeypatch):
    seen = []

    def check(name):
        return lambda setup: seen.append(name) or CheckResult(name, "pass", "ok")

    monkeypatch.setattr(runner, "REGISTRY", [("cheap", check("cheap"), True), ("slow", check("slow"), False)])
    monkeypatch.setattr(runner, "GRADCHECK", ("gradcheck", check("gradcheck"), True))
    savegame.preflight(mlp(), nn.CrossEntropyLoss(), batches(), quick=True)
    assert seen == ["cheap"]
    seen.clear()
    report = savegame.preflight(mlp(), nn.CrossEntropyLoss(), batches(), gradcheck=True)
    assert seen == ["cheap", "slow", "gradcheck"] and report.passed


def test_missing_module_is_skipped_and_a_crash_is_a_failure(fake_registry):
    def crashes(setup):
        return [1, 2][5]

    fake_registry += [("later", "savegame.preflight.checks_not_written_yet:check_later", True),
                      ("crashy", crashes, True), ("garbage", lambda setup: 42, True)]
    report = savegame.preflight(mlp(), nn.CrossEntropyLoss(), batches())
    assert report["later"].status == "skip" and "not available" in report["later"].message
    assert report["crashy"].status == "fail"
    assert report["crashy"].message.startswith("the check crashed: IndexError: list index out of range")
    assert "test_runner.py" in report["crashy"].numbers["where"]
    assert report["garbage"].status == "fail"


def test_nan_in_data_fails(fake_registry):
    x, y = batches(n=1)[0]
    x[0, 0] = float("nan")
    report = savegame.preflight(mlp(), nn.CrossEntropyLoss(), [(x, y)])
    assert not report.passed and report["data"].status == "fail"


def test_labels_out_of_range_never_raise():
    x, y = batches(n=1)[0]
    y[5] = 9
    report = savegame.preflight(mlp(), nn.CrossEntropyLoss(), [(x, y)])
    assert statuses(report)["label range"] == "fail"
    assert "IndexError" in report["loss/target shapes"].message
    # The rest cannot run without a loss: skipped with the reason, not crashed.
    assert report["loss at init"].status == "skip" and "loss/target shapes" in report["loss at init"].message


def test_planted_bugs_each_caught(fake_registry):
    raw = [(x * 80 + 128, y) for x, y in batches()]
    assert statuses(savegame.preflight(mlp(), nn.CrossEntropyLoss(), raw))["input scale"] == "warn"
    biased = mlp()
    with torch.no_grad():
        biased[2].bias.fill_(0).index_fill_(0, torch.tensor([0]), 15.0)
    report = savegame.preflight(biased, nn.CrossEntropyLoss(), batches())
    assert report["loss at init"].status == "fail" and "bias" in report["loss at init"].fix  # ~7x chance
    assert not report.passed
    regression = [(x, x[:, 0]) for x, _ in batches()]                      # (B,) targets, (B, 1) outputs
    report = savegame.preflight(mlp(classes=1), nn.MSELoss(), regression)
    assert report["loss/target shapes"].status == "fail" and not report.passed


def test_output_detached_from_graph(fake_registry):
    report = savegame.preflight(mlp(), None, batches(),
                                forward=lambda m, b: nn.functional.cross_entropy(m(b[0]).detach(), b[1]))
    assert report["loss/target shapes"].status == "fail"
    assert "not connected to the graph" in report["loss/target shapes"].message


@pytest.mark.parametrize("data, words", [
    ([], "no batch"),
    (["a string batch", "another"], "not (inputs, targets)"),
    ([{"pixels": torch.zeros(2, 8), "answer": torch.zeros(2)}], "keys="),
])
def test_unusable_data_is_a_failed_setup(data, words):
    report = savegame.preflight(mlp(), nn.CrossEntropyLoss(), data)
    assert report.checks[0].name == "setup" and report.checks[0].status == "fail"
    assert words in report.checks[0].message and report.checks[0].fix
    assert all(c.status == "skip" for c in report.checks[1:])


def test_loader_that_raises_and_bad_device_are_failed_setups():
    def loader():
        raise OSError("disk gone")
        yield

    assert "OSError: disk gone" in savegame.preflight(mlp(), nn.CrossEntropyLoss(), loader()).checks[0].message
    report = savegame.preflight(mlp(), nn.CrossEntropyLoss(), batches(), device="no-such-device")
    assert report.checks[0].status == "fail" and not report.passed


def test_loss_that_raises(fake_registry):
    def loss(out, y):
        raise RuntimeError("my loss is broken")

    report = savegame.preflight(mlp(), loss, batches())
    assert report["loss/target shapes"].status == "fail"
    assert "RuntimeError: my loss is broken" in report["loss/target shapes"].message


def test_data_on_another_device_than_the_model(fake_registry):
    # Without a GPU, the meta device stands in: the user's forward moves the inputs elsewhere.
    report = savegame.preflight(mlp(), None, batches(),
                                forward=lambda m, b: nn.functional.cross_entropy(m(b[0].to("meta")), b[1]))
    assert report.checks[0].status == "fail" and "different devices" in report.checks[0].message


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_model_on_gpu_data_on_cpu():
    report = savegame.preflight(mlp().cuda(), nn.CrossEntropyLoss(), batches(), quick=True)
    assert report["loss at init"].status == "pass"            # the data follows the model
    report = savegame.preflight(mlp(), None, batches(),
                                forward=lambda m, b: nn.functional.cross_entropy(m(b[0].cuda()), b[1]))
    assert report.checks[0].status == "fail" and "different devices" in report.checks[0].message


def test_user_objects_and_rng_untouched():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 5))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    data = batches()
    nn.functional.cross_entropy(model(data[0][0]), data[0][1]).backward()
    optimizer.step()                                            # momentum buffers exist
    model.eval()
    grads = [p.grad for p in model.parameters()]
    params = {k: v.clone() for k, v in model.state_dict().items()}
    opt_state = {k: v["momentum_buffer"].clone() for k, v in optimizer.state_dict()["state"].items()}
    random.seed(5)
    np.random.seed(5)
    rng = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())

    report = savegame.preflight(model, nn.CrossEntropyLoss(), data, optimizer=optimizer, quick=True)

    assert "untouched" not in statuses(report)
    assert all(torch.equal(params[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(opt_state[k], v["momentum_buffer"]) for k, v in optimizer.state_dict()["state"].items())
    assert all(a is b for a, b in zip(grads, (p.grad for p in model.parameters())))
    assert not model.training
    assert torch.equal(rng[0], torch.get_rng_state()) and rng[1] == random.getstate()
    assert np.array_equal(rng[2], np.random.get_state()[1])
    assert report["setup"].message.count("SGD") == 1


def test_a_check_that_touches_the_model_is_reported(fake_registry):
    model = mlp()

    def vandal(setup):
        with torch.no_grad():
            setup.model[0].weight.add_(1.0)
        return CheckResult("vandal", "pass", "")

    fake_registry.append(("vandal", vandal, True))
    assert savegame.preflight(model, nn.CrossEntropyLoss(), batches())["untouched"].status == "fail"


def test_runs_inside_no_grad(fake_registry):
    with torch.no_grad():
        report = savegame.preflight(mlp(), nn.CrossEntropyLoss(), batches())
    assert report.passed, str(report)


def test_report_carries_an_image_grid_for_image_inputs(fake_registry):
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    report = savegame.preflight(model, nn.CrossEntropyLoss(), [(torch.rand(10, 3, 8, 8), torch.arange(10) % 4)])
    assert report.images.shape == (10, 3, 8, 8)
    assert savegame.preflight(mlp(), nn.CrossEntropyLoss(), batches()).images is None
