"""Train a small CNN on the 8x8 handwritten digits that scikit-learn ships, with save slots: the
training loop of ``savegame demo``.

About two minutes on two CPU cores. Press Ctrl-C at any time: the current step finishes, a
checkpoint is written and the process exits; run the same command again and it resumes where it
stopped (mid-epoch included). :func:`train` is the whole integration: ``Run``, ``track``,
``epochs``, ``iterate``, ``save``, ``run.preflight`` (checks the setup first), and ``run.log`` /
``run.writer`` for TensorBoard (losses, accuracy, learning rate, weight histograms, a batch of
images, the model graph, PR curves, an embedding of validation features, and the config as
hparams); everything else is an ordinary PyTorch loop. ``savegame board runs`` shows it all.
It uses only the public API: ``import savegame`` and the names of ``savegame.__all__``.

It needs scikit-learn (the digits), matplotlib (the HTML report) and Pillow (the images logged
for TensorBoard): ``pip install 'savegame[demo]'``. They are checked before anything is trained
or deleted; a missing one stops the demo with that command, not a traceback three minutes in.

    savegame demo                 # or: python -m savegame.demo --epochs 3 --dir /tmp/digits

The command around it (its options, the summary, the doctor's verdict and the HTML report at the
end) is :mod:`savegame.cli.demo`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.nn import functional as F

import savegame

CONFIG: dict[str, Any] = {
    "epochs": 50, "batch_size": 32, "lr": 2e-3, "width": 64, "val_fraction": 0.2, "seed": 0,
}

# What the demo imports on its way (module, the package to install, what it is for): checked first.
REQUIREMENTS = (("sklearn.datasets", "scikit-learn", "the digits data"),
                ("matplotlib", "matplotlib", "the HTML report's figures"),
                ("matplotlib.figure", "matplotlib", "the HTML report's figures"),
                ("matplotlib.backends.backend_agg", "matplotlib", "the HTML report's figures"),
                ("PIL.Image", "Pillow", "the images logged for TensorBoard"))


def check_requirements() -> None:
    """Import everything the demo needs later (training, TensorBoard images, the report), or raise
    :class:`~savegame.MissingDependencyError` naming what is missing and the extra to install."""
    missing: dict[str, str] = {}
    for module, package, purpose in REQUIREMENTS:
        if package in missing:
            continue
        try:
            importlib.import_module(module)
        except ImportError as error:
            missing[package] = f"{package} (for {purpose}: {error})"
    if missing:
        raise savegame.MissingDependencyError(
            f"the demo needs {', '.join(missing.values())}; install what it needs with: "
            "pip install 'savegame[demo]'")


def load_digits(val_fraction: float, seed: int) -> tuple[torch.utils.data.Dataset, tuple]:
    """(train set, (val images, val labels)): 1797 images of 1x8x8 in [0, 1], labels 0-9."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise savegame.MissingDependencyError(
            "the demo trains on the digits that scikit-learn ships, but scikit-learn is not "
            "installed; install it with: pip install 'savegame[demo]'"
        ) from None
    digits = sklearn_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    n_val = int(len(images) * val_fraction)
    val, train = order[:n_val], order[n_val:]
    return torch.utils.data.TensorDataset(images[train], labels[train]), (images[val], labels[val])


def make_model(width: int) -> nn.Module:
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(
        *block(1, width), *block(width, 2 * width), nn.MaxPool2d(2),        # 8x8 -> 4x4
        *block(2 * width, 4 * width), nn.MaxPool2d(2),                      # 4x4 -> 2x2
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * width * 4, 10),
    )


def preflight_setup() -> dict[str, Any]:
    """The demo's model, loss and training data, for ``savegame preflight`` and the demo itself."""
    train_set, _ = load_digits(CONFIG["val_fraction"], CONFIG["seed"])
    loader = torch.utils.data.DataLoader(train_set, batch_size=CONFIG["batch_size"], shuffle=True,
                                         generator=torch.Generator().manual_seed(CONFIG["seed"]))
    return {"model": make_model(CONFIG["width"]), "loss_fn": nn.CrossEntropyLoss(), "data": loader,
            "optimizer": lambda params: torch.optim.Adam(params, lr=CONFIG["lr"])}


def shift(images: torch.Tensor) -> torch.Tensor:
    """Move the batch by up to one pixel: a random augmentation, so the RNG state matters on resume."""
    i, j = torch.randint(0, 3, (2,)).tolist()
    return F.pad(images, (1, 1, 1, 1))[:, :, i:i + 8, j:j + 8]


@torch.no_grad()
def evaluate(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    net.eval()
    logits = net(images)
    net.train()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return F.cross_entropy(logits, labels).item(), accuracy, logits.softmax(1)


def log_first_look(run: savegame.Run, net: nn.Module, images: torch.Tensor) -> None:
    """Once, at the start of a fresh run: a batch as TensorBoard sees it and the model graph."""
    run.writer.add_images("data/train_batch", images[:64], 0)  # NCHW; a grid of 64 digits
    net.eval()  # trace without dropout or BatchNorm updates: the run's random state stays untouched
    run.writer.add_graph(net, images[:2])
    net.train()


def log_epoch(run: savegame.Run, net: nn.Module, probabilities: torch.Tensor, labels: torch.Tensor) -> None:
    """Each epoch: weight histograms and one precision-recall curve per digit."""
    for name, parameter in net.named_parameters():
        run.writer.add_histogram(f"weights/{name}", parameter, run.step)
    for digit in range(10):
        run.writer.add_pr_curve(f"pr/digit_{digit}", labels == digit, probabilities[:, digit], run.step)


@torch.no_grad()
def log_embedding(run: savegame.Run, net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
    """The validation digits in the features the classifier sees, for the PROJECTOR tab."""
    net.eval()
    features = net[:-1](images)  # everything but the last Linear layer
    run.writer.add_embedding(features, metadata=labels.tolist(), label_img=images, global_step=run.step,
                             tag="val_features")


def train(folder: Path, cfg: dict[str, Any], console: Console) -> savegame.Run:
    """Train (or resume) the run in ``folder`` with the config ``cfg`` (:data:`CONFIG`'s keys, and
    ``break_at``: the epoch from which the learning rate is 1000 times too high); the finished Run."""
    train_set, (val_images, val_labels) = load_digits(cfg["val_fraction"], cfg["seed"])
    torch.manual_seed(cfg["seed"])
    loader = torch.utils.data.DataLoader(train_set, batch_size=cfg["batch_size"], shuffle=True)
    net = make_model(cfg["width"])
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg["epochs"])

    run = savegame.Run(
        folder, config=cfg,
        save=savegame.EveryEpochs(1) | savegame.OnImprovement("loss/val"),  # when to save
        keep=savegame.Keep(last=2, best=2, metric="loss/val", mode="min"),  # what to keep
        resume="auto",
        doctor=savegame.Doctor(every=50),  # judges the curves at each validation; stops if it diverges
    )
    with run:
        run.track(model=net, optimizer=optimizer, lr_schedule=scheduler)  # restored on resume
        if run.resumed_from is None:  # a resume says where it resumed by itself (logger "savegame")
            console.print(f"training a CNN on {len(train_set)} digits, validating on "
                          f"{len(val_labels)}; Ctrl-C saves and stops, rerun to resume")
            # the double check before training (cs231n, Karpathy's recipe); a failure stops here
            console.print(run.preflight(net, nn.CrossEntropyLoss(), loader, optimizer=optimizer).table())
            log_first_look(run, net, next(iter(loader))[0])
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeRemainingColumn())
        val_acc = None
        with Progress(*columns, console=console) as progress:
            epochs_bar = progress.add_task("epochs", total=cfg["epochs"], info="")
            for epoch in run.epochs(cfg["epochs"]):
                progress.update(epochs_bar, completed=epoch)
                done = min(max(run.step - epoch * len(loader), 0), len(loader))  # mid-epoch resume
                batch_bar = progress.add_task(f"epoch {epoch + 1}", total=len(loader),
                                              completed=done, info="")
                total, correct, seen = 0.0, 0, 0
                for images, labels in run.iterate(loader):
                    logits = net(shift(images))
                    loss = F.cross_entropy(logits, labels)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    hits = (logits.argmax(1) == labels).sum().item()
                    total += loss.item() * len(labels)
                    correct += hits
                    seen += len(labels)
                    run.log({"loss/train": loss.detach(), "acc/train": hits / len(labels)}, reduce="mean")
                    progress.update(batch_bar, advance=1,
                                    info=f"loss {total / seen:.3f}  acc {correct / seen:.1%}")
                run.log("lr", optimizer.param_groups[0]["lr"])
                scheduler.step()
                if cfg.get("break_at") == epoch + 2:  # a deliberately broken schedule, for --break-at
                    for group in optimizer.param_groups:
                        group["lr"] *= 1000
                val_loss, val_acc, probabilities = evaluate(net, val_images, val_labels)
                run.log({"loss/val": val_loss, "acc/val": val_acc})
                log_epoch(run, net, probabilities, val_labels)
                run.save(metrics={"loss/val": val_loss, "acc/val": val_acc})  # policies decide
                progress.remove_task(batch_bar)
                progress.update(epochs_bar, completed=epoch + 1,
                                info=f"val loss {val_loss:.4f}  val acc {val_acc:.1%}")
                progress.console.print(
                    f"epoch {epoch + 1:>3}/{cfg['epochs']}  train loss "
                    f"{total / max(seen, 1):.4f}  val loss {val_loss:.4f}  val acc {val_acc:.1%}")
        if val_acc is not None:
            log_embedding(run, net, val_images, val_labels)
    if run.should_stop:
        console.print(f"\nstopped early: {run.should_stop}")
    elif val_acc is not None:
        console.print(f"\nfinished: validation accuracy {val_acc:.1%} after {cfg['epochs']} epochs")
    return run
