"""Signals: the sampled gradient norms, update ratios, dead ReLUs and non-finite counts are right,
arrive only every N steps, reach torch's own SummaryWriter, and go away on close()."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from savegame.doctor.signals import Signals


class Recorder:
    """A ``log`` target that keeps every call as ``(step, {tag: float})``."""

    def __init__(self):
        self.calls = []

    def __call__(self, values, step):
        self.calls.append((step, {k: float(v) for k, v in values.items()}))


def train(model, opt, steps, *, batch=lambda: torch.randn(16, 4), loss=lambda out: out.pow(2).mean()):
    for _ in range(steps):
        opt.zero_grad()
        loss(model(batch())).backward()
        opt.step()


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))



def watched(every):
    """An MLP, its SGD optimizer (lr 0.1) and a Recorder fed by Signals every ``every`` steps."""
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = Recorder()
    Signals(model, opt, every=every, log=rec)
    return model, opt, rec

def test_grad_norm_of_a_linear_is_the_norm_of_weight_and_bias_grads_together():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = {}

    def log(values, step):
        # the grads are still those of this step when log runs (zero_grad comes later)
        seen.update({k: float(v) for k, v in values.items()})
        seen["expected0"] = float(torch.cat([model[0].weight.grad.flatten(), model[0].bias.grad]).norm())
        seen["expected_total"] = float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm())

    Signals(model, opt, every=1, log=log)
    train(model, opt, 1)
    assert seen["doctor/grad_norm/0"] == pytest.approx(seen["expected0"], rel=1e-5)
    assert seen["doctor/grad_norm/total"] == pytest.approx(seen["expected_total"], rel=1e-5)
    assert seen["doctor/nonfinite_grads"] == 0


def test_update_ratio_for_sgd_is_lr_times_grad_norm_over_weight_norm():
    model = mlp()
    lr = 0.01
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    before = torch.cat([model[2].weight.detach().flatten(), model[2].bias.detach()]).clone()
    rec = Recorder()
    Signals(model, opt, every=1, log=rec)
    train(model, opt, 1)
    grad = torch.cat([model[2].weight.grad.flatten(), model[2].bias.grad])
    values = rec.calls[0][1]
    expected = lr * float(grad.norm()) / float(before.norm())
    assert values["doctor/update_ratio/2"] == pytest.approx(expected, rel=1e-4)
    assert values["doctor/grad_norm/2"] == pytest.approx(float(grad.norm()), rel=1e-5)


def test_relu_net_with_huge_negative_bias_is_all_dead_and_a_healthy_one_is_not():
    model, opt, rec = watched(every=2)
    train(model, opt, 2)
    assert 0.0 <= rec.calls[0][1]["doctor/dead_relu/1"] < 0.5
    with torch.no_grad():
        model[0].bias.fill_(-100.0)
    train(model, opt, 2)
    assert rec.calls[1][1]["doctor/dead_relu/1"] == 1.0


def test_dead_relu_counts_channels_of_a_conv_output():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU6(), nn.Flatten(), nn.Linear(4 * 6 * 6, 1))
    with torch.no_grad():
        model[0].bias[:2] = -100.0  # two of four channels can never fire
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    rec = Recorder()
    Signals(model, opt, every=1, log=rec)
    train(model, opt, 1, batch=lambda: torch.randn(8, 1, 8, 8))
    assert rec.calls[0][1]["doctor/dead_relu/1"] == 0.5


def test_a_nan_gradient_is_counted_per_parameter():
    model, opt, rec = watched(every=1)
    opt.zero_grad()
    model(torch.randn(16, 4)).pow(2).mean().backward()
    model[0].weight.grad[0, 0] = float("nan")
    model[2].bias.grad[0] = float("inf")
    opt.step()
    values = rec.calls[0][1]
    assert values["doctor/nonfinite_grads"] == 2
    assert math.isnan(values["doctor/grad_norm/0"])


def test_samples_only_every_n_steps_and_uses_the_given_step():
    model, opt, rec = watched(every=3)
    train(model, opt, 10)
    assert [step for step, _ in rec.calls] == [3, 6, 9]

    model, global_step = mlp(), [1000]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = Recorder()
    Signals(model, opt, every=2, log=rec, step=lambda: global_step[0], prefix="sig")
    for _ in range(4):
        train(model, opt, 1)
        global_step[0] += 1
    assert [step for step, _ in rec.calls] == [1000, 1002]  # multiples of every, of the given step
    assert all(tag.startswith("sig/") for tag in rec.calls[0][1])


def test_close_removes_every_hook_and_is_idempotent():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = Recorder()
    signals = Signals(model, opt, every=1, log=rec)  # every=1 arms the ReLU hook at once
    assert model[1]._forward_hooks
    signals.close()
    signals.close()
    train(model, opt, 3)
    assert rec.calls == []
    assert not model._forward_hooks and not model[1]._forward_hooks
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks


def test_relu_hooks_are_installed_only_around_the_forward_before_a_sample_step():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    Signals(model, opt, every=5, log=Recorder())
    train(model, opt, 3)
    assert not model[1]._forward_hooks
    train(model, opt, 1)  # step 4: the next one samples
    assert model[1]._forward_hooks
    train(model, opt, 1)
    assert not model[1]._forward_hooks


def test_several_param_groups_and_a_frozen_parameter():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1))
    model[2].requires_grad_(False)
    opt = torch.optim.Adam([{"params": model[0].parameters(), "lr": 1e-3},
                            {"params": model[4].parameters(), "lr": 1e-2}])
    rec = Recorder()
    Signals(model, opt, every=1, log=rec)
    train(model, opt, 2)
    tags = set(rec.calls[-1][1])
    assert {"doctor/grad_norm/0", "doctor/grad_norm/4", "doctor/update_ratio/0", "doctor/update_ratio/4"} <= tags
    assert not any("/2" in tag for tag in tags)
    # Adam's first step moves every weight by ~lr: the larger lr gives the larger ratio
    assert rec.calls[-1][1]["doctor/update_ratio/4"] > rec.calls[-1][1]["doctor/update_ratio/0"]


def test_parameters_without_grad_are_skipped_on_a_sample_step():
    model, opt, rec = watched(every=1)
    opt.zero_grad()
    model[2](torch.randn(4, 8)).sum().backward()  # only the last layer gets grads
    opt.step()
    values = rec.calls[0][1]
    assert "doctor/grad_norm/2" in values and "doctor/grad_norm/0" not in values
    assert "doctor/update_ratio/0" not in values


def test_logs_into_torch_summary_writer(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with SummaryWriter(tmp_path) as writer:
        signals = Signals(model, opt, every=2, log=lambda values, step: [
            writer.add_scalar(k, v, step) for k, v in values.items()])
        train(model, opt, 6)
        signals.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"doctor/grad_norm/0", "doctor/grad_norm/total", "doctor/update_ratio/2",
            "doctor/dead_relu/1", "doctor/nonfinite_grads"} <= set(tags)
    assert [e.step for e in events.Scalars("doctor/grad_norm/total")] == [2, 4, 6]
    assert all(e.value > 0 for e in events.Scalars("doctor/grad_norm/total"))


@pytest.mark.parametrize("every", [0, -1, 2.5, True])
def test_every_below_one_or_not_an_int_is_refused(every):
    model = mlp()
    with pytest.raises(ValueError, match="every"):
        Signals(model, torch.optim.SGD(model.parameters(), lr=0.1), every=every, log=Recorder())


def test_an_optimizer_without_the_models_parameters_is_refused():
    other = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="optimizer"):
        Signals(nn.ReLU(), torch.optim.SGD(other.parameters(), lr=0.1), log=Recorder())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_works_on_cuda_without_host_copies_in_the_hooks():
    model = mlp().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    got = []
    Signals(model, opt, every=2, log=lambda values, step: got.append(values))
    train(model, opt, 4, batch=lambda: torch.randn(16, 4, device="cuda"))
    assert all(v.device.type == "cuda" for v in got[0].values())
    assert float(got[0]["doctor/grad_norm/total"]) > 0


class ExactUpdateRatio:
    """The old computation, as a reference: a full copy of every weight before the step, then
    ||before - after|| / ||before|| per layer (weight and bias of a module together)."""

    def __init__(self, model, opt):
        self.layers = {name: list(m.parameters(recurse=False)) for name, m in model.named_modules()
                       if list(m.parameters(recurse=False))}
        self.ratios = []
        opt.register_step_pre_hook(self.pre)
        opt.register_step_post_hook(self.post)

    def pre(self, *_):
        self.before = {name: [p.detach().clone() for p in ps] for name, ps in self.layers.items()}

    def post(self, *_):
        ratio = {}
        for name, ps in self.layers.items():
            update = torch.cat([(b - p.detach()).flatten() for b, p in zip(self.before[name], ps)]).norm()
            weight = torch.cat([b.flatten() for b in self.before[name]]).norm()
            ratio[name] = float(update / (weight + 1e-12))
        self.ratios.append(ratio)


@pytest.mark.parametrize("make_opt", [lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
                                      lambda ps: torch.optim.AdamW(ps, lr=1e-2)])
def test_update_ratios_are_the_exact_ones_on_a_small_model(make_opt):
    model = mlp()
    opt = make_opt(model.parameters())
    rec = Recorder()
    Signals(model, opt, every=1, log=rec)
    exact = ExactUpdateRatio(model, opt)
    train(model, opt, 5)
    for (_, values), reference in zip(rec.calls, exact.ratios, strict=True):
        for layer in ("0", "2"):
            assert values[f"doctor/update_ratio/{layer}"] == pytest.approx(reference[layer], rel=1e-6)


def held_bytes(obj, params, seen=None) -> int:
    """Bytes of every tensor reachable from ``obj`` (dicts, lists, tuples) that is not a parameter
    or a view of one: what a sample keeps alive between the optimizer's pre- and post-hook."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        storage = obj.untyped_storage().data_ptr()
        if storage in params or storage in seen:
            return 0
        seen.add(storage)
        return obj.untyped_storage().nbytes()
    if isinstance(obj, dict):
        return sum(held_bytes(v, params, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(held_bytes(v, params, seen) for v in obj)
    return 0


def big_model():
    torch.manual_seed(0)  # 2 x 1,048,576 weights: more than Signals.UPDATE_SAMPLE, and the budgets below
    return nn.Sequential(nn.Linear(64, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                         nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 4))


@pytest.mark.parametrize("budget", [None, 100_000])
def test_a_sample_holds_no_full_copy_of_the_weights_between_the_hooks(budget):
    model = big_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    kwargs = {} if budget is None else {"update_sample": budget}
    signals = Signals(model, opt, every=1, log=Recorder(), **kwargs)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    held = []
    opt.register_step_pre_hook(lambda *_: held.append(held_bytes(vars(signals), params)))  # after Signals' own
    train(model, opt, 2, batch=lambda: torch.randn(16, 64))
    limit = (budget or Signals.UPDATE_SAMPLE) * 4 + 64 * 1024  # the sample, plus a few small norms
    assert held and max(held) <= limit < total, (held, limit, total)


def test_the_sampled_update_ratio_of_a_large_layer_is_close_to_the_exact_one():
    model = big_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rec = Recorder()
    Signals(model, opt, every=1, log=rec, update_sample=50_000)  # about 1 in 40 of the big layers
    exact = ExactUpdateRatio(model, opt)
    train(model, opt, 3, batch=lambda: torch.randn(16, 64))
    for (_, values), reference in zip(rec.calls, exact.ratios, strict=True):
        for layer in ("0", "2", "4", "6"):
            assert values[f"doctor/update_ratio/{layer}"] == pytest.approx(reference[layer], rel=0.1)
        assert values["doctor/update_ratio/6"] == pytest.approx(reference["6"], rel=1e-6)  # small: exact


@pytest.mark.parametrize("bad", [0, -5, 1.5, True])
def test_update_sample_must_be_a_positive_int(bad):
    model = mlp()
    with pytest.raises(ValueError, match="update_sample"):
        Signals(model, torch.optim.SGD(model.parameters(), lr=0.1), log=Recorder(), update_sample=bad)
