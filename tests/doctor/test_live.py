"""The live doctor inside a Run: judges at each validation, warns once, logs, stops and saves."""

import json
import math
import warnings

import pytest
import torch
from torch import nn

import savegame
from savegame.doctor import Doctor, DoctorWarning, read_run

torch.set_num_threads(1)


def data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    w = torch.linspace(-1, 1, 8).unsqueeze(1)
    y = x @ w + 0.5 * torch.sin(2 * x[:, :1]) + 0.1 * torch.randn(n, 1, generator=g)
    return x, y


def train_step(run, net, opt, xb, yb, *, through_writer=False):
    loss = nn.functional.mse_loss(net(xb), yb)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if through_writer:  # as a torch user already writes it
        run.writer.add_scalar("loss/train", loss.item(), run.step)
    else:
        run.log("loss/train", loss.detach())


def train(run_dir, *, epochs, lr_at=lambda epoch: 1e-2, doctor=True, keep=None, val_data=None, n=256,
          save=None, through_writer=False):
    """A small regression loop the way a user writes it, with savegame; returns the Run."""
    torch.manual_seed(0)
    x, y = data(n)
    xv, yv = val_data or data(128, seed=1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
    net = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 1))
    opt = torch.optim.SGD(net.parameters(), lr=lr_at(0), momentum=0.9)
    run = savegame.Run(run_dir, save=save or savegame.EveryEpochs(1),
                       keep=keep or savegame.Keep(last=1, best=1, metric="loss/val"), doctor=doctor)
    with run:
        run.track(model=net, optimizer=opt)
        for epoch in run.epochs(epochs):
            for group in opt.param_groups:
                group["lr"] = lr_at(epoch)
            for xb, yb in run.iterate(loader):
                train_step(run, net, opt, xb, yb, through_writer=through_writer)
            with torch.no_grad():
                val = nn.functional.mse_loss(net(xv), yv).item()
            if through_writer:
                run.writer.add_scalar("loss/val", val, run.step)
            else:
                run.log("loss/val", val)
            run.save(metrics={"loss/val": val})
    return run


def test_a_diverging_run_is_stopped_saved_and_keeps_its_best_checkpoint(tmp_path):
    with pytest.warns(DoctorWarning) as caught:  # the verdict, and the NaN / update-ratio findings with it
        run = train(tmp_path / "run", epochs=30, lr_at=lambda epoch: 1e-2 if epoch < 6 else 5.0)
    assert run.should_stop and "diverged" in run.should_stop
    assert {w.filename for w in caught} == {__file__}  # at the training loop's run.log/save line
    assert run.step < 30 * 8  # stopped early
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "stopped" and "diverged" in info["message"]
    assert info["best"]["step"] <= 6 * 8 and math.isfinite(info["best"]["value"])
    kept = {c.step for c in run.checkpoints}
    assert info["best"]["step"] in kept and run.step in kept  # the best and the stop's own save
    doctor = json.loads((tmp_path / "run" / "doctor.json").read_text())
    assert doctor["latest"]["verdict"] == "diverged" and doctor["latest"]["marks"]["diverged_step"] > 6 * 8
    assert sum("diverged" in str(w.message) for w in caught) == 1  # once, not at every validation
    texts = read_run(tmp_path / "run")  # the verdict is in TensorBoard too (TEXT, tag "doctor")
    from tensorboard.backend.event_processing import event_accumulator as ea
    acc = ea.EventAccumulator(str(tmp_path / "run"), size_guidance={ea.TENSORS: 0})
    acc.Reload()
    assert "doctor/text_summary" in acc.Tags()[ea.TENSORS]
    assert "doctor/grad_norm/total" in texts.scalars  # the signals, logged as scalars


def test_the_live_doctor_sees_values_logged_through_run_writer_add_scalar(tmp_path):
    with pytest.warns(DoctorWarning):
        run = train(tmp_path / "run", epochs=30, lr_at=lambda epoch: 1e-2 if epoch < 6 else 5.0, through_writer=True)
    assert run.should_stop and "diverged" in run.should_stop
    assert run.step < 30 * 8
    doctor = json.loads((tmp_path / "run" / "doctor.json").read_text())
    assert doctor["latest"]["verdict"] == "diverged" and doctor["latest"]["tags"]["train_loss"] == "loss/train"


def test_overfitting_stops_only_with_a_patience(tmp_path):
    x, y = data(24, seed=3)  # a tiny training set with noisy labels and a big net: it memorizes the noise
    y = y + 0.7 * torch.randn(y.shape, generator=torch.Generator().manual_seed(4))

    def overfit(run_dir, doctor):
        torch.manual_seed(0)
        xv, yv = data(256, seed=1)
        net = nn.Sequential(nn.Linear(8, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1))
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        run = savegame.Run(run_dir, save=savegame.Never(), doctor=doctor)
        with run:
            run.track(model=net, optimizer=opt)
            for epoch in run.epochs(300):
                for _ in run.iterate([(x, y)]):
                    loss = nn.functional.mse_loss(net(x), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    run.log("loss/train", loss.detach())
                with torch.no_grad():
                    run.log("loss/val", nn.functional.mse_loss(net(xv), yv).item())
        return run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DoctorWarning)
        patient = overfit(tmp_path / "patient", Doctor(overfit_patience=10, every=0))
        never = overfit(tmp_path / "never", Doctor(every=0))
    assert patient.should_stop and "overfit_patience=10" in patient.should_stop
    assert patient.doctor.verdict == "overfitting"
    assert patient.step < 300 and any(c.step == patient.step for c in patient.checkpoints)  # saved at the stop
    assert never.should_stop is None and never.step == 300


def test_a_healthy_run_is_not_stopped_and_the_doctor_resumes_with_the_curves_so_far(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DoctorWarning)  # a healthy run raises no alarm
        run = train(tmp_path / "run", epochs=4)
        assert run.should_stop is None and run.step == 4 * 8
        resumed = train(tmp_path / "run", epochs=8)
    assert resumed.should_stop is None and resumed.step == 8 * 8
    series = read_run(tmp_path / "run").scalars["loss/val"]
    assert series.steps.tolist() == [8 * k for k in range(1, 9)]
    assert resumed.doctor is not None and resumed.doctor.judged
    assert resumed.doctor.tags["val_loss"] == "loss/val"


def test_signals_are_sampled_on_the_runs_steps(tmp_path):
    train(tmp_path / "run", epochs=3, doctor=Doctor(every=5))
    scalars = read_run(tmp_path / "run").scalars
    assert scalars["doctor/grad_norm/total"].steps.tolist() == [5, 10, 15, 20]
    assert {"doctor/update_ratio/0", "doctor/dead_relu/1", "doctor/nonfinite_grads"} <= set(scalars)


def test_bad_doctor_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="every"):
        Doctor(every=-1)
    with pytest.raises(ValueError, match="overfit_patience"):
        Doctor(overfit_patience=0)
    with pytest.raises(TypeError, match="savegame.Doctor"):
        savegame.Run(tmp_path / "r", doctor="yes")
    savegame.Run(tmp_path / "r").finish()  # the folder is not left locked


def test_validation_logged_batch_by_batch_is_one_point_per_epoch_for_the_doctor(tmp_path):
    torch.manual_seed(0)
    x, y = data(256)
    xv, yv = data(128, seed=1)
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DoctorWarning)  # no early alarm from per-batch points
        with savegame.Run(tmp_path / "run", save=savegame.Never(), doctor=Doctor(every=0)) as run:
            run.track(model=net, optimizer=opt)
            for _ in run.epochs(3):
                for xb, yb in run.iterate(list(zip(x.split(32), y.split(32)))):
                    train_step(run, net, opt, xb, yb)
                with torch.no_grad():
                    for xb, yb in zip(xv.split(16), yv.split(16)):  # 8 batches, mean per epoch
                        run.log("loss/val", nn.functional.mse_loss(net(xb), yb), reduce="mean", every_step=False)
    live = doctor_hook(run).live
    assert live._series["loss/val/epoch_mean"][0] == [8, 16, 24]
    assert run.doctor.tags["val_loss"] == "loss/val/epoch_mean"


def doctor_hook(run):
    """The live doctor is one of the run's hooks."""
    from savegame.doctor.hook import DoctorHook

    [hook] = [h for h in run.hooks if isinstance(h, DoctorHook)]
    return hook


def test_an_ema_tracked_first_does_not_break_the_signals(tmp_path):
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
    ema = torch.optim.swa_utils.AveragedModel(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with savegame.Run(tmp_path / "run", doctor=Doctor(every=1)) as run:
        run.track(ema=ema, model=net, optimizer=opt)
        signals = doctor_hook(run).signals
        assert signals is not None and signals._params[0] is net[0].weight
    with pytest.raises(ValueError, match="every"):
        Doctor(every=True)


def test_after_a_stop_a_loop_of_ones_own_gets_no_more_batches_and_the_stop_is_saved(tmp_path):
    net = nn.Linear(8, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    run = savegame.Run(tmp_path / "run", save=savegame.Never(), doctor=Doctor(every=0))
    run.track(model=net, optimizer=opt)
    batches = [torch.randn(4, 8) for _ in range(5)]
    seen = 0
    for epoch in range(4):  # the user's own epoch loop, no run.epochs(), no run.save()
        for xb in run.iterate(batches):
            seen += 1
            if run.step == 7:
                run.request_stop("test stop (overfitting)", save=True)
    run.finish()
    assert seen == 7 and run.step == 7
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "stopped" and [c.step for c in run.checkpoints] == [7]


def test_a_diverged_stop_does_not_force_a_save_and_a_rerun_names_the_best_checkpoint(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DoctorWarning)
        run = train(tmp_path / "run", epochs=30, lr_at=lambda epoch: 1e-2 if epoch < 6 else 5.0,
                    save=savegame.OnImprovement("loss/val"), keep=savegame.Keep(last=2, best=1, metric="loss/val"))
    assert run.should_stop and "diverged" in run.should_stop
    # only the policy's saves (improvements): the diverged state at the stop was not saved
    assert run.step not in {c.step for c in run.checkpoints}
    best = json.loads((tmp_path / "run" / "run.json").read_text())["best"]["step"]
    with pytest.warns(UserWarning, match=rf"stopped early.*resume={best}"):
        savegame.Run(tmp_path / "run", doctor=True).finish()


def test_relu_hooks_come_off_after_the_sample_even_if_a_relu_never_runs():
    from savegame.doctor.signals import Signals

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.act, self.unused = nn.Linear(4, 4), nn.ReLU(), nn.ReLU()

        def forward(self, x):
            return self.act(self.fc(x))

    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    signals = Signals(net, opt, every=5, log=lambda values, step: None)
    for _ in range(12):
        opt.zero_grad()
        net(torch.randn(2, 4)).sum().backward()
        opt.step()
        if signals._now() % 5 not in (4,):  # armed only for the forward right before a sample
            assert not net.act._forward_hooks
    signals.close()
