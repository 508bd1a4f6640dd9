"""How the golden checkpoints in this folder were made. DO NOT RERUN IT TO "FIX" A FAILING TEST.

``tests/test_golden.py`` loads and resumes the files next to this script, written once by
savegame 0.1.0 (checkpoint format ``savegame.checkpoint`` version 1, run file ``savegame.run``
version 1). They are the promise that a checkpoint written today still loads after every later
change of the code. If that test fails, the on-disk format changed: fix the code so that it reads
these files again (or, for a deliberate new format version, add a reader for version 1 and a new
golden folder beside this one, e.g. ``run-v2``, made by a copy of this script). Regenerating these
files would only hide the break from the users whose checkpoints no longer load. The script
refuses to overwrite them for that reason.

It is kept to show exactly how the files were made. It was run against the committed code, not a
working tree in the middle of an edit::

    rm -rf /tmp/golden_src && mkdir -p /tmp/golden_src && git archive HEAD src | tar -x -C /tmp/golden_src
    PYTHONPATH=/tmp/golden_src/src .venv/bin/python tests/golden/make_golden.py

What it writes (all small; see README.md):

* ``run-v1/``: a ``savegame.Run`` folder. A 24-sample map-style dataset in a shuffled
  ``DataLoader`` (batch 4, so 6 batches an epoch); a Conv2d + BatchNorm2d + Linear model; AdamW;
  a StepLR stepped every batch; ``run.extras``; ``run.log`` scalars (``loss/train`` with
  ``reduce="mean"``, ``lr``, ``loss/val``); ``Keep(last=2, best=1, metric="loss/val")``. It saves
  at the end of epochs 0 and 1 (steps 6 and 12, with ``loss/val``), then gets a SIGTERM in epoch 2
  and saves mid-epoch at step 15 (3 of 6 batches done; ``preempted``).
* ``save-v1/``: one ``savegame.save()`` checkpoint folder (the explicit-style API) of the same
  objects at step 15 plus plain values of every kind the codec has a marker for.
* ``expected.safetensors`` and ``expected.json``: the values the test compares with, taken from
  the live objects (never read back through savegame): every tensor of the model and the AdamW
  state at each save, the batch that comes next after step 15, and, from an uninterrupted plain
  PyTorch loop with the same seeds (no savegame at all), the state after all 3 epochs.

Every seed is fixed, so the tensors come out the same on every run of this script; timestamps,
the host name and pids in the files do not.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

HERE = Path(__file__).resolve().parent
RUN_DIR = HERE / "run-v1"
SAVE_DIR = HERE / "save-v1"
EXPECTED_TENSORS = HERE / "expected.safetensors"
EXPECTED_JSON = HERE / "expected.json"

SEED = 20240611
DATA_SEED = 7
N_TRAIN, N_VAL, BATCH, EPOCHS = 24, 8, 4, 3
BATCHES_PER_EPOCH = N_TRAIN // BATCH  # 6
STOP_AT = 15  # the SIGTERM arrives at step 15: epoch 2, after 3 of its 6 batches
CONFIG = {"lr": 0.01, "weight_decay": 0.01, "batch_size": BATCH, "epochs": EPOCHS, "step_size": 4,
          "gamma": 0.5, "noise": 0.05, "seed": SEED}
KEEP = {"last": 2, "best": 1, "metric": "loss/val"}

# The plain values saved with savegame.save() beside the objects: one of each kind the codec
# encodes (tests/test_golden.py spells out the same values literally).
def plain_values() -> dict:
    return {
        "step": STOP_AT, "epoch": 2, "name": "golden-v1", "note": None, "flag": True,
        "ratio": 0.1, "big": 2**62, "neg_inf": float("-inf"), "nan": float("nan"),
        "betas": (0.9, 0.999), "nested": {"list": [1, 2.5, "three", [None]], "empty": {}, "tuple": ()},
        "int_keys": {0: "zero", 3: "three"}, "raw": b"\x00\x01savegame\xff",
        "shape": torch.Size([2, 3]), "dtype": torch.bfloat16, "device": torch.device("cpu"),
        "np_array": np.arange(6, dtype=np.int16).reshape(2, 3), "np_float": np.float32(1.5),
        "np_int": np.int64(-7),
    }


def special_tensors() -> dict[str, torch.Tensor]:
    """Tensors of other dtypes and shapes (the run's tensors are all float32/int64)."""
    g = torch.Generator().manual_seed(3)
    return {
        "f16": torch.randn(5, generator=g).half(), "bf16": torch.randn(2, 3, generator=g).bfloat16(),
        "f64": torch.randn(3, generator=g, dtype=torch.float64), "i32": torch.arange(-3, 3, dtype=torch.int32),
        "u8": torch.arange(250, 256, dtype=torch.uint8), "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.25), "empty": torch.zeros(0, 4),
        "strided": torch.arange(12.0).reshape(3, 4).t(),  # not contiguous
    }


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def data() -> tuple[TensorDataset, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(DATA_SEED)
    x, y = torch.randn(N_TRAIN, 1, 6, 6, generator=g), torch.randint(0, 3, (N_TRAIN,), generator=g)
    vx, vy = torch.randn(N_VAL, 1, 6, 6, generator=g), torch.randint(0, 3, (N_VAL,), generator=g)
    return TensorDataset(x, y), (vx, vy)


def build():
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    model = Net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=CONFIG["lr"], weight_decay=CONFIG["weight_decay"])
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=CONFIG["step_size"], gamma=CONFIG["gamma"])
    train, val = data()
    loader = DataLoader(train, batch_size=BATCH, shuffle=True)  # shuffles from torch's global generator
    return model, optimizer, schedule, loader, val


def train_step(model, optimizer, schedule, x, y) -> torch.Tensor:
    model.train()
    x = x + CONFIG["noise"] * torch.randn_like(x)  # an augmentation drawn from the global generator
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


def live_tensors(prefix: str, model, optimizer) -> dict[str, torch.Tensor]:
    """Copies of the live objects' tensors, named ``<prefix>/model/...``, ``<prefix>/optimizer/<i>/...``."""
    out = {f"{prefix}/model/{k}": v.detach().clone() for k, v in model.state_dict().items()}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            out[f"{prefix}/optimizer/{index}/{key}"] = value.detach().clone()
    return out


def live_scalars(optimizer, schedule, extras) -> dict:
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items() if k != "params"}
              for g in optimizer.state_dict()["param_groups"]]
    sched = {k: v for k, v in schedule.state_dict().items()}
    return {"param_groups": groups, "schedule": sched, "extras": dict(extras)}


def reference() -> dict:
    """An uninterrupted plain PyTorch loop (no savegame): every batch, every loss, the end state."""
    model, optimizer, schedule, loader, val = build()
    batches, losses, vals, step = {}, {}, {}, 0
    for epoch in range(EPOCHS):
        for x, y in loader:
            step += 1
            batches[step] = (x.clone(), y.clone())
            losses[step] = float(train_step(model, optimizer, schedule, x, y))
        vals[step] = validate(model, val)
    return {"batches": batches, "losses": losses, "vals": vals, "step": step,
            "tensors": live_tensors("final", model, optimizer), "scalars": live_scalars(optimizer, schedule, {})}


def golden_run(ref: dict, expected: dict) -> None:
    """The run folder: two epochs, then a SIGTERM inside the third, as a preempted job. Fills
    ``expected`` with the live objects' values at each save."""
    import savegame

    model, optimizer, schedule, loader, val = build()
    run = savegame.Run(RUN_DIR, config=CONFIG, save=savegame.Always(), keep=savegame.Keep(**KEEP))
    with run:
        run.track(model=model, optimizer=optimizer, lr_schedule=schedule)
        run.extras["samples_seen"] = 0
        for epoch in run.epochs(EPOCHS):
            for x, y in run.iterate(loader):
                rx, ry = ref["batches"][run.step]
                assert torch.equal(x, rx) and torch.equal(y, ry), f"batch of step {run.step} differs from the plain loop"
                loss = train_step(model, optimizer, schedule, x, y)
                assert float(loss) == ref["losses"][run.step], f"loss of step {run.step} differs from the plain loop"
                run.extras["samples_seen"] += len(y)
                run.log("loss/train", loss, reduce="mean")
                run.log("lr", schedule.get_last_lr()[0])
                if run.step == STOP_AT:
                    metrics = {"loss/train": float(loss)}
                    expected["tensors"].update(live_tensors(f"step{run.step}", model, optimizer))
                    expected["saves"][run.step] = {"epoch": epoch, "batch": run.batch, "metrics": metrics,
                                                   **live_scalars(optimizer, schedule, run.extras)}
                    nx, ny = ref["batches"][run.step + 1]  # what an uninterrupted loop trains on next
                    expected["tensors"]["next_batch/x"], expected["tensors"]["next_batch/y"] = nx, ny
                    explicit_save(model, optimizer, schedule)
                    os.kill(os.getpid(), signal.SIGTERM)  # the job is preempted ...
                    run.save(metrics=metrics)  # ... so this save writes step 15 and exits (SystemExit 0)
                    raise AssertionError("run.save() under a SIGTERM should have exited")
            value = validate(model, val)
            assert value == ref["vals"][run.step]
            run.log("loss/val", value)
            metrics = {"loss/val": value, "loss/train": float(loss)}
            expected["tensors"].update(live_tensors(f"step{run.step}", model, optimizer))
            expected["saves"][run.step] = {"epoch": epoch, "batch": run.batch, "metrics": metrics,
                                           **live_scalars(optimizer, schedule, run.extras)}
            run.save(metrics=metrics)
    raise AssertionError("the run should have been preempted at step 15")


def explicit_save(model, optimizer, schedule) -> None:
    import savegame

    savegame.save(SAVE_DIR, {"model": model, "optimizer": optimizer, "lr_schedule": schedule,
                             **plain_values(), "tensors": special_tensors()})


def main() -> None:
    import savegame

    where = Path(savegame.__file__).resolve()
    if not str(where).startswith("/tmp/golden_src/"):
        sys.exit(f"savegame is imported from {where}; run with PYTHONPATH=/tmp/golden_src/src (HEAD's src)")
    existing = [p for p in (RUN_DIR, SAVE_DIR, EXPECTED_TENSORS, EXPECTED_JSON) if p.exists()]
    if existing:
        sys.exit(f"refusing to overwrite {', '.join(map(str, existing))}: the golden files are written once. "
                 "A failing tests/test_golden.py means the on-disk format changed; see this script's docstring.")
    ref = reference()
    expected: dict = {"tensors": {}, "saves": {}}
    try:
        golden_run(ref, expected)
    except SystemExit as stop:  # the preemption's exit, after the save
        assert stop.code in (0, None), stop.code
    else:
        raise AssertionError("the golden run was not preempted")
    tensors = dict(expected["tensors"])
    tensors.update(ref["tensors"])
    tensors.update({f"save/tensors/{k}": v.contiguous() for k, v in special_tensors().items()})
    save_file(tensors, EXPECTED_TENSORS, metadata={"made_by": "tests/golden/make_golden.py"})
    info = json.loads((RUN_DIR / "run.json").read_text())
    record = {
        "savegame_version": savegame.__version__,
        "checkpoint_format": {"format": "savegame.checkpoint", "version": 1},
        "run_format": {"format": info["format"], "version": info["version"]},
        "torch_version": torch.__version__,
        "config": CONFIG, "keep": KEEP, "stop_at": STOP_AT, "batches_per_epoch": BATCHES_PER_EPOCH,
        "epochs": EPOCHS,
        "saves": {str(k): v for k, v in expected["saves"].items()},
        "losses": {str(k): v for k, v in ref["losses"].items()},
        "vals": {str(k): v for k, v in ref["vals"].items()},
        "final": {"step": ref["step"], **ref["scalars"], "extras": {"samples_seen": ref["step"] * BATCH}},
    }
    EXPECTED_JSON.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    check_resumes(ref)
    sizes = sorted((p.stat().st_size, str(p.relative_to(HERE))) for p in HERE.rglob("*") if p.is_file())
    for size, name in sizes:
        print(f"{size:8d}  {name}")
    print(f"{sum(s for s, _ in sizes):8d}  total")


def check_resumes(ref: dict) -> None:
    """At generation: a copy of the golden run resumes and ends where the plain loop ended."""
    import savegame

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run-v1"
        shutil.copytree(RUN_DIR, copy)
        model, optimizer, schedule, loader, val = build()
        with savegame.Run(copy, config=CONFIG, save=savegame.Always(), keep=savegame.Keep(**KEEP)) as run:
            run.track(model=model, optimizer=optimizer, lr_schedule=schedule)
            assert run.step == STOP_AT
            for epoch in run.epochs(EPOCHS):
                for x, y in run.iterate(loader):
                    rx, ry = ref["batches"][run.step]
                    assert torch.equal(x, rx) and torch.equal(y, ry), run.step
                    loss = train_step(model, optimizer, schedule, x, y)
                    assert float(loss) == ref["losses"][run.step], run.step
                    run.extras["samples_seen"] += len(y)
                value = validate(model, val)
                assert value == ref["vals"][run.step]
                run.save(metrics={"loss/val": value, "loss/train": float(loss)})
        for key, tensor in live_tensors("final", model, optimizer).items():
            assert torch.equal(tensor, ref["tensors"][key]), key


if __name__ == "__main__":
    main()
