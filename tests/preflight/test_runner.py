"""preflight(): the registry, the user's checks, bad input turned into failed checks, and the user's
objects untouched."""

import json
import random
import re

import numpy as np
import pytest
import torch
from torch import nn

import savegame
from savegame.preflight import Check, CheckNotAvailable, FunctionCheck, runner
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
    registry = [check for check in runner.REGISTRY if check.name in ("data", "loss/target shapes", "loss at init")]
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

    monkeypatch.setattr(runner, "REGISTRY", [FunctionCheck("cheap", check("cheap")),
                                             FunctionCheck("slow", check("slow"), cheap=False)])
    monkeypatch.setattr(runner, "GRADCHECK", FunctionCheck("gradcheck", check("gradcheck")))
    savegame.preflight(mlp(), nn.CrossEntropyLoss(), batches(), quick=True)
    assert seen == ["cheap"]
    seen.clear()
    report = savegame.preflight(mlp(), nn.CrossEntropyLoss(), batches(), gradcheck=True)
    assert seen == ["cheap", "slow", "gradcheck"] and report.passed


def test_missing_module_is_skipped_and_a_crash_is_a_failure(fake_registry):
    def crashes(setup):
        return [1, 2][5]

    fake_registry += [FunctionCheck("later", "savegame.preflight.checks_not_written_yet:check_later"),
                      FunctionCheck("crashy", crashes), FunctionCheck("garbage", lambda setup: 42)]
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

    fake_registry.append(FunctionCheck("vandal", vandal))
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


# -- checks of the user's own: preflight(..., checks=[...]) ------------------------------------

class TargetsVary(Check):
    """A user's check: fails when every target is the same."""

    name, needs_loss = "targets vary", False

    def __init__(self, seen=None):
        self.seen = seen

    def run(self, setup):
        y = torch.cat([setup.split(batch)[1].float() for batch in setup.batches])
        if self.seen is not None:
            self.seen.append(self.name)
        if y.min() == y.max():
            return CheckResult(self.name, "fail", f"every target is {float(y[0]):g}", fix="check the labels")
        return CheckResult(self.name, "pass", f"{len(y.unique())} distinct targets")


class Slow(Check):
    name, cheap = "slow user check", False

    def run(self, setup):
        return [CheckResult("slow a", "pass", "ok"), CheckResult("slow b", "warn", "hm", fix="look")]


def test_user_checks_run_after_the_builtin_ones_in_their_order(fake_registry):
    report = savegame.preflight(mlp(), nn.CrossEntropyLoss(), batches(), checks=[TargetsVary(), Slow()])
    names = [c.name for c in report.checks]
    assert names[:7] == ["setup"] + DATA_AND_LOSS
    assert names[7:] == ["targets vary", "slow a", "slow b"]
    assert report["targets vary"].status == "pass" and report["slow b"].status == "warn" and report.passed
    assert report["targets vary"].seconds > 0
    constant = [(x, torch.zeros_like(y)) for x, y in batches()]
    report = savegame.preflight(mlp(), nn.CrossEntropyLoss(), constant, checks=[TargetsVary()])
    assert not report.passed and report["targets vary"].message == "every target is 0"


def test_quick_leaves_out_the_user_checks_that_are_not_cheap(fake_registry):
    report = savegame.preflight(mlp(), nn.CrossEntropyLoss(), batches(), quick=True, checks=[Slow(), TargetsVary()])
    assert [c.name for c in report.checks][-1] == "targets vary"
    assert "slow a" not in [c.name for c in report.checks]


def test_a_user_check_that_crashes_is_its_own_failure_naming_it(fake_registry):
    class Broken(Check):
        name = "my broken check"

        def run(self, setup):
            return {}["missing"]

    def returns_nothing(setup):
        return None

    report = savegame.preflight(mlp(), nn.CrossEntropyLoss(), batches(),
                                checks=[Broken(), FunctionCheck("nothing", returns_nothing), TargetsVary()])
    broken = report["my broken check"]
    assert broken.status == "fail" and broken.message.startswith("the check crashed: KeyError")
    assert "fix the check 'my broken check'" in broken.fix and "test_runner.py" in broken.fix
    assert "savegame bug" not in broken.fix
    nothing = report["nothing"]
    assert nothing.status == "fail" and "returned NoneType" in nothing.message
    assert "FunctionCheck.run(setup) return a CheckResult" in nothing.fix
    assert report["targets vary"].status == "pass"  # the checks after it still ran


def test_a_user_check_can_say_it_is_not_available_and_is_skipped(fake_registry):
    class NeedsSklearn(Check):
        name = "sklearn probe"

        def run(self, setup):
            raise CheckNotAvailable("not available: pip install scikit-learn")

    report = savegame.preflight(mlp(), nn.CrossEntropyLoss(), batches(), checks=[NeedsSklearn()])
    assert report["sklearn probe"].status == "skip" and "scikit-learn" in report["sklearn probe"].message


def test_user_checks_are_skipped_like_builtin_ones_when_the_setup_or_the_loss_fails(fake_registry):
    seen = []
    report = savegame.preflight(mlp(), nn.CrossEntropyLoss(), [], checks=[TargetsVary(seen)])
    assert report["targets vary"].status == "skip" and "setup failed" in report["targets vary"].message
    x, y = batches(n=1)[0]
    y[5] = 9  # out of range: the loss cannot be computed

    class NeedsLoss(Check):
        name = "needs the loss"

        def run(self, setup):
            seen.append(self.name)
            return CheckResult(self.name, "pass", "ran")

    report = savegame.preflight(mlp(), nn.CrossEntropyLoss(), [(x, y)], checks=[TargetsVary(seen), NeedsLoss()])
    assert report["needs the loss"].status == "skip" and "loss cannot be computed" in report["needs the loss"].message
    assert report["targets vary"].status == "pass" and seen == ["targets vary"]


def test_a_user_check_that_touches_the_model_is_reported(fake_registry):
    class Vandal(Check):
        name = "vandal"

        def run(self, setup):
            with torch.no_grad():
                setup.model[0].bias.zero_()
            return CheckResult(self.name, "pass", "")

    assert savegame.preflight(mlp(), nn.CrossEntropyLoss(), batches(), checks=[Vandal()])["untouched"].status == "fail"


@pytest.mark.parametrize("checks, error, words", [
    (TargetsVary(), TypeError, "wrap one check in a list"),
    ([lambda setup: None], TypeError, "FunctionCheck('its name', function)"),
    (["data"], TypeError, "not a savegame.preflight.Check"),
    ([FunctionCheck("", lambda s: None)], ValueError, "needs a name"),
    ([FunctionCheck("loss at init", lambda s: None)], ValueError, "named 'loss at init', like another check"),
    ([FunctionCheck("setup", lambda s: None)], ValueError, "like another check"),
    ([TargetsVary(), TargetsVary()], ValueError, "entry 1 is named 'targets vary'"),
])
def test_a_malformed_checks_list_raises_before_anything_runs(checks, error, words):
    with pytest.raises(error, match=re.escape(words)):
        savegame.preflight(mlp(), nn.CrossEntropyLoss(), batches(), checks=checks)


def test_user_checks_go_through_run_preflight_too(tmp_path, fake_registry):
    with savegame.Run(tmp_path / "run") as run:
        report = run.preflight(mlp(), nn.CrossEntropyLoss(), batches(), checks=[TargetsVary()])
    assert report["targets vary"].status == "pass"
    saved = json.loads((tmp_path / "run" / "preflight.json").read_text())
    assert "targets vary" in [c["name"] for c in saved["checks"]]


def test_every_builtin_check_follows_the_check_protocol():
    for check in [*runner.REGISTRY, runner.GRADCHECK]:
        assert isinstance(check, Check) and check.name and callable(check.load())
    assert len({c.name for c in runner.REGISTRY}) == len(runner.REGISTRY)
