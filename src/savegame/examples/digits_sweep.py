"""The demo's sweep: tune the digits CNN's learning rate and width (``savegame demo --sweep``).

``train(config, run)`` is the demo's loop (:mod:`savegame.examples.digits`) written as a sweep's
training function: the data and model of the demo, ``config`` from the sweep, the objective
``acc/val`` logged and a checkpoint saved after each epoch, so a killed sweep resumes each trial
where it stopped. :data:`SPEC` is the sweep: 8 trials of 4 epochs, TPE sampling, ASHA pruning.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from . import digits

SPEC: dict[str, Any] = {
    "name": "demo",
    "train": "savegame.examples.digits_sweep:train",
    "objective": {"metric": "acc/val", "direction": "maximize"},
    "n_trials": 8,
    "sampler": "tpe",
    "pruner": "asha",
    "seed": 0,
    "space": {
        "lr": {"type": "float", "low": 1.0e-4, "high": 3.0e-2, "log": True},
        "width": {"type": "categorical", "choices": [16, 32, 64]},
        "epochs": 4, "batch_size": 32, "val_fraction": 0.2, "seed": 0,
    },
}


def train(config: dict[str, Any], run: Any) -> None:
    """One trial: the demo's CNN with ``config``'s lr and width, for ``config["epochs"]`` epochs."""
    train_set, (val_images, val_labels) = digits.load_digits(config["val_fraction"], config["seed"])
    torch.manual_seed(config["seed"])
    loader = torch.utils.data.DataLoader(train_set, batch_size=config["batch_size"], shuffle=True)
    net = digits.make_model(config["width"])
    optimizer = torch.optim.Adam(net.parameters(), lr=config["lr"])
    run.track(model=net, optimizer=optimizer)
    for _ in run.epochs(config["epochs"]):
        for images, labels in run.iterate(loader):
            loss = F.cross_entropy(net(digits.shift(images)), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            run.log("loss/train", loss.detach())
        val_loss, val_acc, _ = digits.evaluate(net, val_images, val_labels)
        run.log({"loss/val": val_loss, "acc/val": val_acc})  # acc/val feeds the pruner
        run.save(metrics={"loss/val": val_loss, "acc/val": val_acc})
