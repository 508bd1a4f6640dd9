"""Synthetic runs and hand-written diagnoses for the plot, HTML and browser tests.

Tests import it as ``from report_runs import ...`` (pytest puts this folder on ``sys.path``).
The curves are numpy functions of the step, so every test sees the same shapes: an overfitting
run (validation loss turns up after step 2,000), a run that diverged to NaN at step 1,500, and a
long 100k-point run for the downsampling test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from savegame.doctor.curves import RunData, Series
from savegame.doctor.diagnosis import Diagnosis, Finding, Marks


def overfitting_run(name: str = "cnn/overfit") -> tuple[RunData, Diagnosis]:
    rng = np.random.default_rng(0)
    steps = np.arange(10, 5001, 10)
    train = 2.0 * np.exp(-steps / 900) + 0.02 + rng.normal(0, 0.03, len(steps)).clip(-0.015)
    vsteps = np.arange(250, 5001, 250)
    val = 2.0 * np.exp(-vsteps / 900) + 0.25 + 1e-4 * np.clip(vsteps - 2000, 0, None)
    acc = np.clip(1 - train / 2.2, 0, 1)
    vacc = np.clip(1 - val / 2.2, 0, 1)
    ratio_layers = {f"doctor/update_ratio/layer{i}": Series(steps, 1e-3 * (1 + i) * np.exp(-steps / 3000))
                    for i in range(3)}
    scalars = {
        "loss/train": Series(steps, train), "loss/val": Series(vsteps, val),
        "acc/train": Series(steps, acc), "acc/val": Series(vsteps, vacc),
        "doctor/grad_norm/total": Series(steps, 5 * np.exp(-steps / 2000) + 0.3),
        "doctor/dead_relu/features.1": Series(steps, np.linspace(0.05, 0.4, len(steps))),
        **ratio_layers,
    }
    best = int(vsteps[np.argmin(val)])
    run = RunData(name, path=Path("/nonexistent") / name, scalars=scalars,
                  hparams={"lr": 0.01, "batch_size": 64, "model": "cnn"})
    diagnosis = Diagnosis(
        run=name, verdict="overfitting", confidence=0.85,
        evidence=[f"validation loss (smoothed) bottomed out at {val.min():.3f} at step {best:,} and rose to "
                  f"{val[-1]:.3f} while training loss kept falling"],
        suggestions=[f"lowest validation loss (smoothed) at step {best:,}; these logs have no checkpoints",
                     "add weight decay or dropout"],
        findings=[Finding("gap", "train/val gap of 0.53 at the last evaluation", step=5000)],
        marks=Marks(low_step=best, low_value=float(val.min()), gap_step=5000,
                    gap=float(val[-1] - train[-1])),
        tags={"train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "acc/train",
              "val_acc": "acc/val"})
    return run, diagnosis


def diverged_run(name: str = "mlp/lr=1.0") -> tuple[RunData, Diagnosis]:
    steps = np.arange(1, 2001)
    train = 1.5 * np.exp(-steps / 400) + 0.1
    train[1400:1500] *= np.exp(np.linspace(0, 12, 100))  # blows up ...
    train[1500:] = np.nan                                   # ... then NaN from step 1,501
    train[1700] = np.inf
    run = RunData(name, path=Path("/nonexistent") / "mlp", scalars={"train_loss": Series(steps, train)},
                  hparams={"lr": 1.0, "batch_size": 32, "optimizer": "sgd"},
                  notes=[Finding("nan", "train_loss is NaN from step 1,501", step=1501)])
    diagnosis = Diagnosis(
        run=name, verdict="diverged", confidence=0.95,
        evidence=["training loss grew 10,000x between steps 1,400 and 1,500, then became NaN"],
        suggestions=["lower the learning rate (try 0.1)", "clip gradients at 1.0"],
        marks=Marks(diverged_step=1401), tags={"train_loss": "train_loss"})
    return run, diagnosis


def unjudged_run(name: str = "<script>alert(1)</script>") -> tuple[RunData, Diagnosis]:
    steps = np.arange(5)
    run = RunData(name, path=Path("/nonexistent/x"), scalars={"weird<tag>": Series(steps, steps * 1.0)},
                  hparams={"note": "<b>bold</b>"})
    return run, Diagnosis(run=name, cannot_judge="no loss tag & too few points <5>")


def long_run(points: int = 100_000) -> tuple[RunData, Diagnosis]:
    steps = np.arange(1, points + 1)
    values = np.exp(-steps / 20_000) + 0.05 * np.random.default_rng(1).standard_normal(points) ** 2
    run = RunData("long", path=Path("/nonexistent/long"), scalars={"loss": Series(steps, values)})
    return run, Diagnosis("long", verdict="still_improving", confidence=0.7, tags={"train_loss": "loss"},
                          marks=Marks(plateau_start=80_000))


def savegame_overfit_run(folder: Path, *, epochs: int = 40, steps_per_epoch: int = 10) -> Path:
    """A real savegame run folder (``savegame.Run``, ``Keep(last=2, best=1)`` on ``loss/val``) whose
    validation loss is U-shaped (lowest around epoch 14) with one sharp dip at epoch 25.

    The smoothed minimum of the validation curve (where the rules say it bottomed out) and the
    run's best checkpoint (the lowest *logged* ``loss/val`` among the kept checkpoints: the dip)
    are at different steps, and the checkpoint of the smoothed minimum was deleted by the keep
    policy: the situation of the issue ("best at step 1,575: keep that checkpoint", yet deleted).
    """
    import savegame
    import torch

    def val_loss(epoch: int) -> float:
        return 0.05 if epoch == 25 else 0.3 + 0.002 * (epoch - 14) ** 2

    run = savegame.Run(folder, save=savegame.EveryEpochs(1),
                       keep=savegame.Keep(last=2, best=1, metric="loss/val"), doctor=False,
                       config={"lr": 0.01, "width": 8})
    with run:
        run.track(model=torch.nn.Linear(1, 1))
        for epoch in run.epochs(epochs):
            for _ in run.iterate(range(steps_per_epoch)):
                run.log("loss/train", 2.0 * float(np.exp(-run.step / 60)) + 0.01)
            run.log("loss/val", val_loss(epoch))
            run.save(metrics={"loss/val": val_loss(epoch)})
    return Path(folder)
