"""Logs exactly as the popular tools write them: Lightning's TensorBoardLogger (a real run), the HF
Trainer's TensorBoardCallback, Keras's TensorBoard callback and tensorboardX."""

import json

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter as TorchWriter

from savegame.doctor import diagnose, load_runs
from savegame.doctor.tags import pick_tags


def picked(run):
    return pick_tags({tag: len(s) for tag, s in run.scalars.items()})


def decay(n, floor=0.1, rate=0.1, seed=0):
    rng = np.random.default_rng(seed)
    steps = np.arange(n)
    return (2.0 * np.exp(-rate * steps) + floor) * (1 + 0.02 * rng.standard_normal(n))


# Lightning writes warnings of its own (few dataloader workers, upstream deprecations): not ours
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning")
def test_a_real_lightning_run_is_one_run_with_its_hparams_yaml_and_its_tags(tmp_path):
    L = pytest.importorskip("lightning")
    import torch
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(L.LightningModule):
        def __init__(self, num_classes=3, lr=0.5, betas=(0.9, 0.99)):
            super().__init__()
            self.save_hyperparameters()  # Lightning writes these to hparams.yaml and the event file
            self.net = torch.nn.Linear(4, num_classes)

        def training_step(self, batch, _):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            out = self.net(x)
            self.log("val_loss", torch.nn.functional.cross_entropy(out, y))
            self.log("val_acc", (out.argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(160, 4, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    train = DataLoader(TensorDataset(x[:128], y[:128]), batch_size=16, shuffle=True, generator=g)
    val = DataLoader(TensorDataset(x[128:], y[128:]), batch_size=32)
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_epochs=6, logger=TensorBoardLogger(tmp_path), enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        log_every_n_steps=1)
    trainer.fit(Tiny(), train, val)

    [run] = load_runs(tmp_path)
    assert run.name == "lightning_logs/version_0" and (run.path / "hparams.yaml").is_file()
    # hparams.yaml's exact values (the event file has 3.0 and "(0.9, 0.99)"); its !!python/tuple read
    assert run.hparams["num_classes"] == 3 and isinstance(run.hparams["num_classes"], int)
    assert run.hparams["lr"] == 0.5 and run.hparams["betas"] == [0.9, 0.99]
    assert {"train_loss_step", "train_loss_epoch", "val_loss", "val_acc", "epoch"} <= set(run.scalars)
    assert len(run.scalars["train_loss_step"]) == 6 * 8  # per step: 8 batches an epoch
    assert picked(run) == {"train_loss": "train_loss_step", "val_loss": "val_loss", "val_acc": "val_acc"}
    assert run.notes == []  # Lightning logs `epoch` 2-3 times at each epoch's last step: not a resume
    d = diagnose(run)
    assert d.verdict is not None, d.cannot_judge
    assert "epoch" not in d.line()


def test_the_hf_trainers_tags_map_to_their_roles(tmp_path):
    # transformers' TensorBoardCallback: torch's SummaryWriter in args.logging_dir
    # (output_dir/runs/<date>_<host>), rewrite_logs() prefixes train/ and eval/, every value of the
    # logs dict at state.global_step; "epoch" is in every logs dict (training, evaluation, the end).
    logging_steps, eval_steps, max_steps = 10, 50, 400
    loss = decay(max_steps + 1, rate=0.02)
    with TorchWriter(str(tmp_path / "runs" / "May04_12-00-00_host")) as w:
        args = {"learning_rate": 5e-5, "logging_steps": logging_steps, "eval_steps": eval_steps}
        w.add_text("args", json.dumps(args))
        w.add_hparams(args, metric_dict={})  # older transformers: a timestamped sub-folder
        for step in range(1, max_steps + 1):
            epoch = step / 100
            if step % logging_steps == 0:
                for k, v in {"loss": loss[step], "grad_norm": 1.5, "learning_rate": 5e-5 * (1 - step / max_steps),
                             "epoch": epoch}.items():
                    w.add_scalar(f"train/{k}", v, step)
            if step % eval_steps == 0:
                for k, v in {"eval_loss": loss[step] + 0.1, "eval_accuracy": 1 - loss[step] / 3,
                             "eval_runtime": 1.25, "eval_samples_per_second": 800.0,
                             "eval_steps_per_second": 100.0}.items():
                    w.add_scalar("eval/" + k[len("eval_"):], v, step)
                w.add_scalar("train/epoch", epoch, step)
        for k, v in {"train_runtime": 60.0, "train_samples_per_second": 213.3, "train_steps_per_second": 6.7,
                     "total_flos": 1.2e15, "train_loss": float(loss.mean()), "epoch": 4.0}.items():
            w.add_scalar(f"train/{k}", v, max_steps)
    [run] = load_runs(tmp_path)
    assert run.name == "runs/May04_12-00-00_host" and run.hparams == args
    assert picked(run) == {"train_loss": "train/loss", "val_loss": "eval/loss", "val_acc": "eval/accuracy",
                           "lr": "train/learning_rate"}
    assert len(run.scalars["train/loss"]) == max_steps // logging_steps
    assert run.notes == []  # train/epoch logged twice at evaluation steps: not a resume
    d = diagnose(run)
    assert d.verdict is not None, d.cannot_judge


def write_keras(logdir, epochs=20, per_batch=0, val="validation"):
    """What keras.callbacks.TensorBoard(logdir) writes: TF2 tensor scalars, train/ and validation/,
    epoch_* at step = epoch; evaluation_*_vs_iterations (validation/) at the optimizer's iteration;
    with update_freq="batch", batch_* (train/) at the iteration."""
    train_loss = decay(epochs, rate=0.3)
    val_loss = train_loss + 0.05
    with TorchWriter(str(logdir / "train")) as w:
        w.add_text("keras", "model config", 0)
        for epoch in range(epochs):
            for b in range(per_batch):
                it = epoch * per_batch + b + 1
                w.add_scalar("batch_loss", train_loss[epoch] * (1.1 - 0.2 * b / per_batch), it, new_style=True)
            w.add_scalar("epoch_loss", train_loss[epoch], epoch, new_style=True)
            w.add_scalar("epoch_accuracy", 1 - train_loss[epoch] / 3, epoch, new_style=True)
            w.add_scalar("epoch_learning_rate", 0.001, epoch, new_style=True)
    with TorchWriter(str(logdir / val)) as w:
        for epoch in range(epochs):
            it = (epoch + 1) * max(per_batch, 1)
            w.add_scalar("evaluation_loss_vs_iterations", val_loss[epoch], it, new_style=True)
            w.add_scalar("evaluation_accuracy_vs_iterations", 1 - val_loss[epoch] / 3, it, new_style=True)
            w.add_scalar("epoch_loss", val_loss[epoch], epoch, new_style=True)
            w.add_scalar("epoch_accuracy", 1 - val_loss[epoch] / 3, epoch, new_style=True)


def test_keras_train_and_validation_folders_are_one_run(tmp_path):
    from torch.utils.tensorboard.summary import hparams

    write_keras(tmp_path / "logs")
    with TorchWriter(str(tmp_path / "logs")) as w:  # hp.KerasCallback: hparams only, in the parent
        w.file_writer.add_summary(hparams({"units": 64, "optimizer": "adam"}, {})[1])
    [run] = load_runs(tmp_path)
    assert run.name == "logs" and run.path == tmp_path / "logs"
    assert run.hparams == {"units": 64, "optimizer": "adam"}
    assert picked(run) == {"train_loss": "train/epoch_loss", "val_loss": "validation/epoch_loss",
                           "train_acc": "train/epoch_accuracy", "val_acc": "validation/epoch_accuracy",
                           "lr": "train/epoch_learning_rate"}
    assert run.scalars["validation/epoch_loss"].steps.tolist() == list(range(20))
    d = diagnose(run)
    assert d.verdict is not None, d.cannot_judge
    assert [r.name for r in load_runs(tmp_path / "logs")] == ["logs"]  # the pair given as the root


def test_keras_per_batch_logs_pair_the_losses_on_the_iteration_axis(tmp_path):
    write_keras(tmp_path / "fit", epochs=10, per_batch=8)
    [run] = load_runs(tmp_path)
    tags = picked(run)
    assert tags["train_loss"] == "train/batch_loss" and tags["val_loss"] == "validation/evaluation_loss"
    assert run.scalars["train/batch_loss"].steps[-1] == run.scalars["validation/evaluation_loss"].steps[-1] == 80


def test_folders_called_train_and_val_that_are_two_experiments_stay_two_runs(tmp_path):
    for name in ("train", "val"):  # each its own experiment: the same tags with split words
        with TorchWriter(str(tmp_path / "a" / name)) as w:
            for step in range(10):
                w.add_scalar("loss/train", 1.0 / (step + 1), step)
                w.add_scalar("loss/val", 1.2 / (step + 1), step)
    with TorchWriter(str(tmp_path / "b" / "train")) as w:  # no tag in common
        w.add_scalar("loss", 1.0, 1)
    with TorchWriter(str(tmp_path / "b" / "val")) as w:
        w.add_scalar("mse", 1.0, 1)
    write_keras(tmp_path / "c")  # the parent logs curves of its own
    with TorchWriter(str(tmp_path / "c")) as w:
        w.add_scalar("loss", 1.0, 1)
    write_keras(tmp_path / "d")  # a third event folder beside them
    with TorchWriter(str(tmp_path / "d" / "other")) as w:
        w.add_scalar("loss", 1.0, 1)
    assert [r.name for r in load_runs(tmp_path)] == ["a/train", "a/val", "b/train", "b/val", "c", "c/train",
                                                     "c/validation", "d/other", "d/train", "d/validation"]


def test_two_writers_named_train_and_val_with_one_tag_are_paired_too(tmp_path):
    # the same signature by hand: SummaryWriter("runs/exp/train") and ("runs/exp/val"), each "loss"
    for name, scale in (("train", 1.0), ("val", 1.3)):
        with TorchWriter(str(tmp_path / "exp" / name)) as w:
            for step in range(1, 30):
                w.add_scalar("loss", scale / step, step)
    [run] = load_runs(tmp_path)
    assert run.name == "exp" and picked(run) == {"train_loss": "train/loss", "val_loss": "val/loss"}


def test_tensorboardx_is_read_and_diagnosed_like_torch(tmp_path):
    from tensorboardX import SummaryWriter as XWriter

    train, val = decay(200, rate=0.03), decay(200, rate=0.03, seed=1) + 0.1
    for name, make in (("torch", TorchWriter), ("tbx", XWriter)):
        with make(str(tmp_path / name)) as w:
            for step in range(200):
                w.add_scalar("loss/train", train[step], step)
                if step % 10 == 0:
                    w.add_scalar("loss/val", val[step], step)
                    w.add_scalars("acc", {"train": 1 - train[step] / 3, "val": 1 - val[step] / 3}, step)
            w.add_hparams({"lr": 0.1, "num_classes": 10}, {"hp/best": 1.0})
    by = {r.name: r for r in load_runs(tmp_path)}
    assert sorted(by) == ["tbx", "torch"]  # add_scalars and add_hparams folders folded into each
    ours, theirs = by["tbx"], by["torch"]
    assert sorted(ours.scalars) == sorted(theirs.scalars) == ["acc/train", "acc/val", "loss/train",
                                                               "loss/val"]
    for tag in ours.scalars:
        assert ours.scalars[tag].steps.tolist() == theirs.scalars[tag].steps.tolist()
        np.testing.assert_allclose(ours.scalars[tag].values, theirs.scalars[tag].values, rtol=1e-6)
    assert ours.hparams == theirs.hparams == {"lr": 0.1, "num_classes": 10.0}
    a, b = diagnose(ours), diagnose(theirs)
    assert a.verdict == b.verdict is not None and a.confidence == b.confidence
