"""The golden checkpoints: files written once by savegame 0.1.0 must load, verify and resume forever.

``tests/golden/`` holds a ``savegame.Run`` folder (``run-v1``) and a ``savegame.save()`` folder
(``save-v1``) in checkpoint format version 1 and run file version 1, plus the values they must
give back (``expected.safetensors``, ``expected.json``), taken from the live objects when the
files were written, never read back through savegame. See ``tests/golden/README.md``.

A failure here means the on-disk format changed: users' checkpoints written by that version no
longer load. Fix the reader; never regenerate the golden files to make this pass.

Every test works on a copy in ``tmp_path``: the committed files are never touched.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import savegame

GOLDEN = Path(__file__).resolve().parent / "golden"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())
TENSORS = load_file(GOLDEN / "expected.safetensors")  # the safetensors library, not savegame
WRITTEN_BY = EXPECTED["savegame_version"]  # "0.1.0"
CONFIG = EXPECTED["config"]
KEEP = EXPECTED["keep"]
STOP_AT = EXPECTED["stop_at"]  # 15: the newest checkpoint, mid-epoch (epoch 2, 3 of 6 batches done)
BEST_STEP = 12  # loss/val at 6 was 1.3651, at 12 1.3553: step 6 was dropped by Keep(last=2, best=1)
FINAL_STEP = EXPECTED["final"]["step"]  # 18: three epochs of six batches


def golden(test):
    """Any failure of a golden test says what it means: a format break, not a flaky test."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        try:
            return test(*args, **kwargs)
        except Exception as error:
            pytest.fail(
                f"the on-disk format changed: checkpoints written by savegame {WRITTEN_BY} no longer load "
                f"(tests/golden/, checkpoint format version {EXPECTED['checkpoint_format']['version']}, run "
                f"file version {EXPECTED['run_format']['version']}; do NOT regenerate them, fix the reader). "
                f"{test.__name__}: {type(error).__name__}: {error}", pytrace=True)

    return wrapper


# -- the objects, built exactly as tests/golden/make_golden.py built them ---------------------
class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def build(seed: int = 99):
    """Fresh objects; ``seed`` differs from the golden run's, so nothing matches unless restored."""
    torch.manual_seed(seed)
    model = Net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=CONFIG["lr"], weight_decay=CONFIG["weight_decay"])
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=CONFIG["step_size"], gamma=CONFIG["gamma"])
    g = torch.Generator().manual_seed(7)  # the data: the same as the golden run's
    x, y = torch.randn(24, 1, 6, 6, generator=g), torch.randint(0, 3, (24,), generator=g)
    val = torch.randn(8, 1, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=CONFIG["batch_size"], shuffle=True)
    return model, optimizer, schedule, loader, val


def train_step(model, optimizer, schedule, x, y) -> torch.Tensor:
    model.train()
    x = x + CONFIG["noise"] * torch.randn_like(x)
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    schedule.step()
    return loss.detach()


def validate(model, val) -> float:
    model.eval()
    with torch.no_grad():
        return float(F.cross_entropy(model(val[0]), val[1]))


# -- comparing with the recorded values --------------------------------------------------------
def expect_tensors(prefix: str, model, optimizer) -> None:
    """``model`` and ``optimizer`` hold the tensors recorded under ``prefix`` (bit for bit)."""
    recorded = {k[len(prefix) + 1:]: v for k, v in TENSORS.items() if k.startswith(prefix + "/")}
    assert recorded, prefix
    found = {f"model/{k}": v for k, v in model.state_dict().items()}
    for index, state in optimizer.state_dict()["state"].items():
        found.update({f"optimizer/{index}/{k}": v for k, v in state.items()})
    assert sorted(found) == sorted(recorded), f"{prefix}: tensors {sorted(found)} != recorded {sorted(recorded)}"
    for key, want in recorded.items():
        got = found[key]
        assert got.dtype == want.dtype and got.shape == want.shape, f"{prefix}/{key}: {got.dtype}{tuple(got.shape)}"
        assert torch.equal(got, want), f"{prefix}/{key} differs from the value recorded at generation"


def plain_continuation():
    """The end an uninterrupted plain PyTorch loop reaches from the golden step-15 state, computed
    on this machine: the loop of make_golden.py with the golden run's seeds, whose first 15 steps
    only bring the generators (batch order, augmentation noise: they depend on no float) to step
    15; there the recorded step-15 tensors replace its own, and it trains the last 3 steps.

    Why not the end recorded at generation: another CPU (AVX-512 or not) picks other conv and
    batch-norm kernels that sum in another order, and this net's conv bias sits before a batch
    norm, so its gradient is rounding noise that Adam turns into full-size steps: two Xeons ended
    2.7e-4 apart. Here the same machine does the same arithmetic, so the resumed run must match
    bit for bit."""
    _, _, _, loader, val = build()  # the same data; the loader shuffles from the global generator
    random.seed(CONFIG["seed"])
    np.random.seed(CONFIG["seed"])
    torch.manual_seed(CONFIG["seed"])
    model = Net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=CONFIG["lr"], weight_decay=CONFIG["weight_decay"])
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=CONFIG["step_size"], gamma=CONFIG["gamma"])
    step = 0
    for epoch in range(EXPECTED["epochs"]):
        for x, y in loader:
            step += 1
            if step == STOP_AT + 1:
                load_recorded(f"step{STOP_AT}", model, optimizer)
            train_step(model, optimizer, schedule, x, y)
    return model, optimizer, validate(model, val)


def load_recorded(prefix: str, model, optimizer) -> None:
    """Put the tensors recorded under ``prefix`` into ``model`` and ``optimizer``'s state."""
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            tensor.copy_(TENSORS[f"{prefix}/model/{key}"])
        for index, param in enumerate(p for g in optimizer.param_groups for p in g["params"]):
            for key, tensor in optimizer.state[param].items():
                tensor.copy_(TENSORS[f"{prefix}/optimizer/{index}/{key}"])


def expect_scalars(record: dict, optimizer, schedule) -> None:
    """The optimizer's hyperparameters and the schedule's position, as recorded (the fields any
    torch version has; private keys of the day are not compared)."""
    for got, want in zip(optimizer.param_groups, record["param_groups"], strict=True):
        for key in ("lr", "initial_lr", "weight_decay", "eps", "amsgrad"):
            assert got[key] == want[key], f"optimizer param_groups {key}: {got[key]!r} != {want[key]!r}"
        assert list(got["betas"]) == want["betas"]
    state = schedule.state_dict()
    for key in ("last_epoch", "_last_lr", "base_lrs", "step_size", "gamma", "_step_count"):
        assert state[key] == record["schedule"][key], f"lr_schedule {key}: {state[key]!r} != {record['schedule'][key]!r}"


def cli(*args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    """The venv's ``savegame`` command (the same interpreter's, so PYTHONPATH reaches it)."""
    script = Path(sys.executable).parent / "savegame"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "savegame.cli"]
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert done.returncode in ok, f"savegame {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-2000:]}"
    return done


def cli_json(*args: str, ok: tuple[int, ...] = (0,)):
    return json.loads(cli(*args, "--json", ok=ok).stdout)


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The run's scalars read by tensorboard's own loader (not savegame's)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture
def golden_copy(tmp_path: Path) -> Path:
    """A private copy of tests/golden/ (run-v1, save-v1)."""
    for name in ("run-v1", "save-v1"):
        shutil.copytree(GOLDEN / name, tmp_path / name)
    return tmp_path


def checkpoint(root: Path, step: int) -> Path:
    return root / "run-v1" / "checkpoints" / f"step-{step:06d}"


# -- the tests ---------------------------------------------------------------------------------
@golden
def test_golden_files_are_what_the_readme_says():
    """The committed files themselves (a guard against someone regenerating them)."""
    run = json.loads((GOLDEN / "run-v1" / "run.json").read_text())
    assert (run["format"], run["version"], run["savegame_version"]) == ("savegame.run", 1, "0.1.0")
    for path in [GOLDEN / "save-v1", *sorted((GOLDEN / "run-v1" / "checkpoints").iterdir())]:
        manifest = json.loads((path / "manifest.json").read_text())
        assert (manifest["format"], manifest["version"], manifest["savegame_version"]) == \
               ("savegame.checkpoint", 1, "0.1.0"), path
    assert sorted(p.name for p in (GOLDEN / "run-v1" / "checkpoints").iterdir()) == ["step-000012", "step-000015"]


@golden
def test_every_checkpoint_verifies(golden_copy):
    from savegame.checkpoint.store import verify_checkpoint

    for path in (checkpoint(golden_copy, BEST_STEP), checkpoint(golden_copy, STOP_AT), golden_copy / "save-v1"):
        problems = verify_checkpoint(path)
        assert problems == [], f"{path}: {problems}"
    report = cli_json("verify", str(golden_copy / "save-v1"))
    assert report["ok"] and report["checkpoints"][0]["problems"] == [], report
    report = cli_json("verify", str(golden_copy / "run-v1"))
    assert report["ok"] and [c["name"] for c in report["checkpoints"]] == ["step-000012", "step-000015"], report


@pytest.mark.parametrize("step", [BEST_STEP, STOP_AT])
@golden
def test_load_restores_exact_tensors(golden_copy, step):
    model, optimizer, schedule, _, _ = build()
    state = savegame.load(checkpoint(golden_copy, step),
                          into={"model": model, "optimizer": optimizer, "lr_schedule": schedule})
    record = EXPECTED["saves"][str(step)]
    expect_tensors(f"step{step}", model, optimizer)
    expect_scalars(record, optimizer, schedule)
    assert state["extras"] == record["extras"]
    assert (state["_savegame"]["step"], state["_savegame"]["epoch"]) == (step, record["epoch"])
    assert state["_savegame"]["config"] == CONFIG


@golden
def test_load_explicit_save(golden_copy):
    model, optimizer, schedule, _, _ = build()
    state = savegame.load(golden_copy / "save-v1",
                          into={"model": model, "optimizer": optimizer, "lr_schedule": schedule})
    expect_tensors(f"step{STOP_AT}", model, optimizer)
    expect_scalars(EXPECTED["saves"][str(STOP_AT)], optimizer, schedule)
    # the plain values make_golden.py saved beside the objects, spelled out
    assert state["step"] == 15 and type(state["step"]) is int
    assert (state["epoch"], state["name"], state["note"], state["flag"]) == (2, "golden-v1", None, True)
    assert state["ratio"] == 0.1 and state["big"] == 2**62
    assert state["neg_inf"] == float("-inf") and math.isnan(state["nan"])
    assert state["betas"] == (0.9, 0.999) and type(state["betas"]) is tuple
    assert state["nested"] == {"list": [1, 2.5, "three", [None]], "empty": {}, "tuple": ()}
    assert type(state["nested"]["tuple"]) is tuple and type(state["nested"]["list"]) is list
    assert state["int_keys"] == {0: "zero", 3: "three"}
    assert state["raw"] == b"\x00\x01savegame\xff"
    assert state["shape"] == torch.Size([2, 3]) and type(state["shape"]) is torch.Size
    assert state["dtype"] is torch.bfloat16 and state["device"] == torch.device("cpu")
    assert isinstance(state["np_array"], np.ndarray) and state["np_array"].dtype == np.int16
    assert state["np_array"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert type(state["np_float"]) is np.float32 and state["np_float"] == 1.5
    assert type(state["np_int"]) is np.int64 and state["np_int"] == -7
    tensors = state["tensors"]
    recorded = {k.removeprefix("save/tensors/"): v for k, v in TENSORS.items() if k.startswith("save/tensors/")}
    assert sorted(tensors) == sorted(recorded)
    for key, want in recorded.items():
        got = tensors[key]
        assert got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want), key


@golden
def test_event_files_hold_the_logged_scalars():
    run = GOLDEN / "run-v1"
    events = sorted(run.glob("events.out.tfevents.*"))
    assert len(events) == 1, events
    found = scalars(run)
    losses = [(int(step), value) for step, value in EXPECTED["losses"].items() if int(step) <= STOP_AT]
    assert [s for s, _ in found["loss/train"]] == sorted(s for s, _ in losses)
    for (step, got), (_, want) in zip(found["loss/train"], sorted(losses)):
        assert got == pytest.approx(want, rel=1e-6), f"loss/train at step {step}"
    assert [s for s, _ in found["loss/val"]] == [6, 12]
    assert [s for s, _ in found["loss/train/epoch_mean"]] == [6, 12]
    assert [s for s, _ in found["lr"]] == list(range(1, STOP_AT + 1))


@golden
def test_cli_reads_the_golden_run(golden_copy):
    best = {"metric": "loss/val", "mode": "min", "value": EXPECTED["vals"][str(BEST_STEP)], "step": BEST_STEP,
            "checkpoint": f"step-{BEST_STEP:06d}"}
    [row] = cli_json("ls", str(golden_copy))
    assert (row["name"], row["status"], row["epoch"], row["step"], row["checkpoints"]) == \
           ("run-v1", "preempted", 2, STOP_AT, 2), f"savegame ls --json: {row}"
    assert row["best"] == best
    show = cli_json("show", str(golden_copy / "run-v1"))
    assert show["best"] == best and show["config"] == CONFIG
    assert [(c["step"], c["epoch"], c["best"], c["newest"]) for c in show["checkpoints"]] == \
           [(BEST_STEP, 1, True, False), (STOP_AT, 2, False, True)]
    assert show["checkpoints"][0]["metrics"] == EXPECTED["saves"][str(BEST_STEP)]["metrics"]
    [diagnosis] = cli_json("doctor", str(golden_copy / "run-v1"), ok=(0, 1))
    assert diagnosis["run"] == "run-v1"
    assert diagnosis["tags"].get("train_loss") == "loss/train" and diagnosis["tags"].get("val_loss") == "loss/val"
    assert diagnosis["best_checkpoint"] == {k: best[k] for k in diagnosis["best_checkpoint"]}


@golden
def test_export_best(golden_copy, tmp_path):
    out = tmp_path / "best.safetensors"
    cli("export", str(golden_copy / "run-v1"), "--best", "-o", str(out))
    weights = load_file(out)
    recorded = {k.removeprefix(f"step{BEST_STEP}/model/"): v for k, v in TENSORS.items()
                if k.startswith(f"step{BEST_STEP}/model/")}
    assert sorted(weights) == sorted(recorded)
    for key, want in recorded.items():
        assert torch.equal(weights[key], want), key


@golden
def test_run_resumes_and_trains_on(golden_copy, tmp_path):
    run_dir = golden_copy / "run-v1"
    model, optimizer, schedule, loader, val = build()
    run = savegame.Run(run_dir, config=CONFIG, save=savegame.Always(), keep=savegame.Keep(**KEEP))
    with run:
        assert run.resumed_from is not None, f"savegame.Run({run_dir}) found no checkpoint to resume from"
        assert run.resumed_from.step == STOP_AT, f"resumed from step {run.resumed_from.step}, not {STOP_AT}"
        assert (run.step, run.epoch) == (STOP_AT, 2)
        run.track(model=model, optimizer=optimizer, lr_schedule=schedule)
        expect_tensors(f"step{STOP_AT}", model, optimizer)
        expect_scalars(EXPECTED["saves"][str(STOP_AT)], optimizer, schedule)
        assert run.extras == EXPECTED["saves"][str(STOP_AT)]["extras"]
        assert run.best is not None and run.best.step == BEST_STEP
        epochs, first = [], None
        for epoch in run.epochs(EXPECTED["epochs"]):
            epochs.append(epoch)
            for x, y in run.iterate(loader):
                if first is None:
                    first = run.step
                    assert run.step == STOP_AT + 1 and run.batch == 3, (run.step, run.batch)
                    assert torch.equal(x, TENSORS["next_batch/x"]) and torch.equal(y, TENSORS["next_batch/y"]), \
                        "the loader did not continue at the saved position"
                loss = train_step(model, optimizer, schedule, x, y)
                run.extras["samples_seen"] += len(y)
                run.log("loss/train", loss, reduce="mean")
                run.log("lr", schedule.get_last_lr()[0])
            value = validate(model, val)
            run.log("loss/val", value)
            run.save(metrics={"loss/val": value, "loss/train": float(loss)})
        assert epochs == [2] and first == STOP_AT + 1
    assert run.step == FINAL_STEP and run.extras == EXPECTED["final"]["extras"]
    # the same end as an uninterrupted plain PyTorch loop from the golden state, on this machine
    plain_model, plain_optimizer, plain_value = plain_continuation()
    for (key, got), want in zip(model.state_dict().items(), plain_model.state_dict().values(), strict=True):
        assert torch.equal(got, want), f"model {key} differs from the plain loop's after the resume"
    for got, want in zip(optimizer.state_dict()["state"].values(), plain_optimizer.state_dict()["state"].values(),
                         strict=True):
        assert all(torch.equal(got[k], want[k]) for k in want), "the optimizer state differs from the plain loop's"
    assert value == plain_value
    expect_scalars(EXPECTED["final"], optimizer, schedule)

    # a new checkpoint beside the one it resumed from; the keep policy ranks the new one best
    steps = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert steps == ["step-000015", "step-000018"], steps
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["saved_steps"] == [6, 12, 15, 18]
    assert [(r["from_step"], r["from_checkpoint"]) for r in info["resumes"]] == [(STOP_AT, "step-000015")]
    assert info["best"]["step"] == FINAL_STEP
    model2, optimizer2, schedule2, _, _ = build()
    savegame.load(checkpoint(golden_copy, FINAL_STEP), into={"model": model2, "optimizer": optimizer2,
                                                           "lr_schedule": schedule2})
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k

    # the logs: cut back to step 15, then continued, one point per step
    found = scalars(run_dir)
    assert [s for s, _ in found["loss/train"]] == list(range(1, FINAL_STEP + 1))
    assert [s for s, _ in found["loss/val"]] == [6, 12, 18]
    assert [s for s, _ in found["loss/train/epoch_mean"]] == [6, 12, 18]

    [row] = cli_json("ls", str(golden_copy))
    assert (row["status"], row["step"], row["checkpoints"]) == ("finished", FINAL_STEP, 2)
    assert row["best"]["step"] == FINAL_STEP
    show = cli_json("show", str(run_dir))
    assert [c["step"] for c in show["checkpoints"]] == [STOP_AT, FINAL_STEP] and len(show["resumes"]) == 1
    [diagnosis] = cli_json("doctor", str(run_dir), ok=(0, 1))
    assert diagnosis["tags"].get("val_loss") == "loss/val" and diagnosis["best_checkpoint"]["step"] == FINAL_STEP
    out = tmp_path / "final.safetensors"
    cli("export", str(run_dir), "--best", "-o", str(out))
    for key, tensor in load_file(out).items():
        assert torch.equal(tensor, model.state_dict()[key]), key
