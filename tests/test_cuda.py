"""GPU behaviours; skipped where no CUDA device is visible (CI), run on a lent GPU machine with
`PYTHONPATH=src python -m pytest -q tests/test_cuda.py`."""

import os
import random

import numpy as np
import pytest
import torch

import savegame
from savegame.checkpoint.store import read_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class Crash(Exception):
    pass


def train_on_gpu(run_dir, crash_at=None, **run_kwargs):
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    x = torch.randn(256, 32)
    y = torch.randn(256, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True)
    net = torch.nn.Sequential(torch.nn.Linear(32, 256), torch.nn.Dropout(0.5), torch.nn.Linear(256, 1)).cuda()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda")
    try:
        with savegame.Run(run_dir, save=savegame.EverySteps(5), handle_signals=False, **run_kwargs) as run:
            run.track(model=net, optimizer=opt, scaler=scaler)
            for _ in run.epochs(3):
                for xb, yb in run.iterate(loader):
                    xb, yb = xb.cuda(non_blocking=True), yb.cuda(non_blocking=True)
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        loss = torch.nn.functional.mse_loss(net(xb).float(), yb)
                    opt.zero_grad()
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                    run.save()
                    if run.step == crash_at:
                        raise Crash
                run.save()
    except Crash:
        return None
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


def test_a_gpu_run_with_dropout_on_the_gpu_resumes_bit_identical(tmp_path):
    reference = train_on_gpu(tmp_path / "ref")
    assert train_on_gpu(tmp_path / "run", crash_at=23) is None
    resumed = train_on_gpu(tmp_path / "run")
    for name in reference:
        assert torch.equal(reference[name], resumed[name]), name


def test_checkpoints_hold_every_cuda_device_rng_state_and_the_tensor_devices(tmp_path):
    train_on_gpu(tmp_path, crash_at=5)
    state, _ = read_checkpoint(tmp_path / "checkpoints" / "step-000005")
    cuda_states = state["_savegame"]["rng"]["cuda"]
    assert len(cuda_states) == torch.cuda.device_count()
    assert torch.equal(cuda_states[0], state["_savegame"]["rng"]["cuda"][0])
    exp_avg = state["optimizer"]["state"][0]["exp_avg"]
    assert exp_avg.device.type == "cpu"  # loaded on the CPU; load_state_dict moves it to the GPU
    assert state["scaler"]["scale"] > 0


def test_logging_cuda_values_every_step_adds_no_device_synchronization(tmp_path):
    from tb_read import read_scalars

    net = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 1)).cuda()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    x = torch.randn(256, 512, device="cuda")
    losses = []
    with savegame.Run(tmp_path, handle_signals=False) as run:
        run.log("warmup", torch.ones((), device="cuda"))  # pinned-memory pool and events created
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for step in range(1, 201):
                loss = net(x).square().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                run.log("loss", loss.detach(), step=step, reduce="mean")
                run.writer.add_scalar("loss_direct", loss.detach(), step)
                if step % 50 == 0:
                    run.writer.add_histogram("weight", net[0].weight, step)
                losses.append(loss.detach())
        finally:
            torch.cuda.set_sync_debug_mode(0)
    curves = read_scalars(tmp_path)
    expected = [(i + 1, v) for i, v in enumerate(torch.stack(losses).float().cpu().tolist())]
    assert [(p.step, p.value) for p in curves["loss"]] == pytest.approx(expected)
    assert [(p.step, p.value) for p in curves["loss_direct"]] == pytest.approx(expected)


def test_async_saves_of_a_cuda_state_resume_bit_identical_to_sync_ones(tmp_path):
    """Issue 14: pinned buffers and a side stream; the snapshot must hold the values the training
    stream had computed at run.save(), though training goes on at once."""
    reference = train_on_gpu(tmp_path / "sync")
    assert train_on_gpu(tmp_path / "async", crash_at=23, async_save=True) is None
    resumed = train_on_gpu(tmp_path / "async", async_save=True)
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name


def test_an_async_snapshot_is_the_state_at_the_call_even_as_the_gpu_keeps_writing(tmp_path):
    w = torch.zeros(64 << 20, device="cuda")  # 256 MiB: the copy takes long enough to race
    with savegame.Run(tmp_path, async_save=True, handle_signals=False) as run:
        run.track(model=torch.nn.ParameterList([torch.nn.Parameter(w)]))
        for step in range(1, 4):
            with torch.no_grad():
                w.fill_(float(step))  # queued on the training stream before the save
            run.step = step
            run.save()
            with torch.no_grad():
                w.fill_(-1.0)  # queued right after: must not reach the snapshot
        run.wait()
    for step in range(1, 4):
        saved = read_checkpoint(tmp_path / "checkpoints" / f"step-{step:06d}")[0]["model"]["0"]
        assert saved.min().item() == saved.max().item() == float(step), step


def test_incremental_saves_share_a_frozen_cuda_backbone(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 4)).cuda()
    net[0].requires_grad_(False)
    opt = torch.optim.AdamW(net[1].parameters())
    with savegame.Run(tmp_path, async_save=True, handle_signals=False) as run:
        run.track(model=net, optimizer=opt)
        for step in range(1, 4):
            net(torch.randn(8, 1024, device="cuda")).sum().backward()
            opt.step()
            run.step = step
            run.save()
    last = tmp_path / "checkpoints" / "step-000003"
    assert any(f.name.startswith("shared-") for f in last.iterdir())
    state = read_checkpoint(last)[0]["model"]
    assert torch.equal(state["0.weight"], net[0].weight.cpu()) and torch.equal(state["1.weight"], net[1].weight.cpu())
