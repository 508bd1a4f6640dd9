"""Run's writer: curves stay clean across crashes and resumes (every series, sub-runs, hparams)."""

import math
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing import event_file_loader
from torch.utils.data import DataLoader, TensorDataset

import savegame
from tb_read import read_scalars
from savegame.log.resume import DISCARDED, event_files

pytestmark = pytest.mark.filterwarnings("ignore:resuming inside an epoch")

BATCHES_PER_EPOCH = 10
EPOCHS = 3


class Crash(Exception):
    pass


def train(run_dir, crash_at=None):
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(40, 4), torch.randn(40, 1)), batch_size=4, shuffle=True)
    net = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with savegame.Run(run_dir, config={"lr": 0.1, "model": {"depth": 2}}, save=savegame.EverySteps(4),
                      handle_signals=False) as run:
        run.track(model=net, optimizer=opt)
        for _ in run.epochs(EPOCHS):
            for x, y in run.iterate(data):
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(net(x), y)
                loss.backward()
                opt.step()
                run.log("loss/train", loss.detach(), reduce=("mean", "max"))
                run.writer.add_scalars("pair", {"a": loss.item(), "b": 2 * loss.item()}, run.step)
                if run.step == crash_at:
                    raise Crash
                run.save()
            run.log("lr", opt.param_groups[0]["lr"])
            run.save(force=True)  # the end of the epoch; its statistics are logged after this save


def series(run_dir):
    curves = read_scalars(run_dir)
    curves.update({f"pair_{k}": read_scalars(run_dir / f"pair_{k}")["pair"] for k in "ab"})
    return {tag: [(p.step, p.value) for p in points] for tag, points in curves.items()}


def hparams_records(run_dir):
    count = 0
    for path in event_files(run_dir):
        for event in event_file_loader.EventFileLoader(str(path)).Load():
            count += sum(v.tag == "_hparams_/session_start_info" for v in event.summary.value)
    return count


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    train(run_dir)
    return series(run_dir)


@pytest.mark.parametrize("crash_at", [14, 11, 2], ids=["mid-epoch", "after-epoch-end-save", "before-any-save"])
def test_a_resumed_run_shows_every_series_exactly_as_an_uninterrupted_one(tmp_path, uninterrupted, crash_at):
    with pytest.raises(Crash):
        train(tmp_path, crash_at=crash_at)
    train(tmp_path)
    resumed = series(tmp_path)
    assert resumed == uninterrupted  # same tags, steps, values: nothing twice, nothing missing
    steps = [s for s, _ in resumed["loss/train"]]
    assert steps == list(range(1, EPOCHS * BATCHES_PER_EPOCH + 1))
    assert [s for s, _ in resumed["loss/train/epoch_mean"]] == [10, 20, 30]
    assert hparams_records(tmp_path) == 1
    assert any((tmp_path / DISCARDED).rglob("*")), "what the dead process logged is kept aside"
    assert not any("tfevents" in p.name for p in (tmp_path / DISCARDED).rglob("*"))


def test_epoch_statistics_cover_the_whole_epoch_across_a_resume(uninterrupted):
    losses = [v for _, v in uninterrupted["loss/train"][:BATCHES_PER_EPOCH]]
    (_, mean), (_, high) = uninterrupted["loss/train/epoch_mean"][0], uninterrupted["loss/train/epoch_max"][0]
    assert mean == pytest.approx(sum(losses) / len(losses), rel=1e-6)
    assert high == max(losses)


def test_a_resume_right_after_an_epochs_last_batch_still_logs_the_epochs_statistics(tmp_path):
    """Saved at the last batch (still inside the epoch), killed before its end: the next process
    logs nothing else before the epoch ends, and must log the saved statistics all the same."""
    def train(crash_at=None):
        with savegame.Run(tmp_path / "run", handle_signals=False) as run:
            for _ in run.epochs(2):
                for x in run.iterate([1.0, 2.0, 3.0]):
                    run.log("loss", x, reduce="mean", every_step=False)
                    run.save()
                    if run.step == crash_at:
                        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(crash_at=3)
    train()
    assert [(p.step, p.value) for p in read_scalars(tmp_path / "run")["loss/epoch_mean"]] == [(3, 2.0), (6, 2.0)]


def test_a_run_config_becomes_hparams_in_the_runs_own_folder(tmp_path):
    from tensorboard.plugins.hparams import metadata

    with savegame.Run(tmp_path, config={"lr": 0.01, "opt": {"name": "adam"}, "layers": [2, 3]},
                      handle_signals=False) as run:
        run.log("loss", 1.0)
    [path] = event_files(tmp_path)
    infos = [metadata.parse_session_start_info_plugin_data(v.metadata.plugin_data.content)
             for e in event_file_loader.EventFileLoader(str(path)).Load() for v in e.summary.value
             if v.tag == metadata.SESSION_START_INFO_TAG]
    assert len(infos) == 1
    hparams = infos[0].hparams
    assert hparams["lr"].number_value == 0.01
    assert hparams["opt.name"].string_value == "adam"
    assert hparams["layers"].string_value == "[2, 3]"


def test_run_log_takes_a_dict_and_an_explicit_step(tmp_path):
    with savegame.Run(tmp_path, handle_signals=False) as run:
        run.log({"a": 1.0, "b": torch.tensor(2.0)}, step=7)
        run.log("nan", math.nan)
    curves = read_scalars(tmp_path)
    assert [(p.step, p.value) for p in curves["a"]] == [(7, 1.0)]
    assert [(p.step, p.value) for p in curves["b"]] == [(7, 2.0)]
    assert math.isnan(curves["nan"][0].value)


def test_run_log_rejects_an_unknown_reducer(tmp_path):
    with savegame.Run(tmp_path, handle_signals=False) as run:
        with pytest.raises(ValueError, match="reduce="):
            run.log("loss", 1.0, reduce="median")


def test_a_checkpoint_records_the_event_file_sizes(tmp_path):
    with savegame.Run(tmp_path, handle_signals=False) as run:
        run.log("loss", 1.0)
        info = run.save()
    state, _ = savegame.checkpoint.store.read_checkpoint(info.path)
    files = state["_savegame"]["log"]["files"]
    [path] = event_files(tmp_path)
    assert files == {path.name: files[path.name]} and 0 < files[path.name] <= path.stat().st_size


def test_the_writer_is_closed_when_the_run_finishes(tmp_path):
    with savegame.Run(tmp_path, handle_signals=False) as run:
        writer = run.writer
    with pytest.raises(savegame.WriterClosedError):
        writer.add_scalar("late", 1.0, 1)


@pytest.mark.parametrize("ending, status", [("finish", "STATUS_SUCCESS"), ("crash", "STATUS_FAILURE")])
def test_the_hparams_session_ends_with_the_runs_status(tmp_path, ending, status):
    from tensorboard.plugins.hparams import api_pb2, metadata

    with pytest.raises(Crash) if ending == "crash" else nullcontext():
        with savegame.Run(tmp_path, config={"lr": 0.1}, handle_signals=False) as run:
            run.log("loss", 1.0)
            if ending == "crash":
                raise Crash
    [path] = event_files(tmp_path)
    ends = [metadata.parse_session_end_info_plugin_data(v.metadata.plugin_data.content).status
            for e in event_file_loader.EventFileLoader(str(path)).Load() for v in e.summary.value
            if v.tag == metadata.SESSION_END_INFO_TAG]
    assert [api_pb2.Status.Name(s) for s in ends] == [status]


def crash_then_finish(run_dir, body, crash_at, steps=4):
    """Run ``body(run)`` after each of ``steps`` steps, saving at every even step; crash once."""
    for crash in (crash_at, None):
        with pytest.raises(Crash) if crash else nullcontext():
            with savegame.Run(run_dir, save=savegame.EverySteps(2), handle_signals=False) as run:
                for _ in run.epochs(1):
                    for _ in run.iterate(range(steps)):
                        body(run)
                        if run.step == crash:
                            raise Crash
                        run.save()


def test_series_on_another_x_axis_keep_their_points_across_a_resume(tmp_path):
    crash_then_finish(tmp_path, lambda run: run.writer.add_scalar("by_tokens", 1.0, run.step * 100), crash_at=3)
    assert [p.step for p in read_scalars(tmp_path)["by_tokens"]] == [100, 200, 300, 400]


def test_every_file_of_a_resumed_run_starts_with_a_restart_at_the_next_step(tmp_path):
    crash_then_finish(tmp_path, lambda run: run.writer.add_scalars("pair", {"a": 1.0}, run.step), crash_at=3)
    newest = event_files(tmp_path / "pair_a")[-1]
    events = list(event_file_loader.EventFileLoader(str(newest)).Load())
    assert events[1].session_log.status == events[1].session_log.START and events[1].step == 3
    assert [p.step for p in read_scalars(tmp_path / "pair_a")["pair"]] == [1, 2, 3, 4]


def test_embeddings_logged_after_the_checkpoint_are_moved_aside_on_resume(tmp_path):
    def body(run):
        if run.step in (1, 3):
            run.writer.add_embedding(np.eye(3) * run.step, metadata=["a", "b", "c"], global_step=run.step)

    crash_then_finish(tmp_path, body, crash_at=3)
    config = (tmp_path / "projector_config.pbtxt").read_text()
    assert config.count("embeddings {") == 2  # step 1 kept, step 3 logged once more by the rerun
    assert (tmp_path / "00003" / "default" / "tensors.tsv").is_file()
    assert list((tmp_path / DISCARDED).rglob("00003/default/tensors.tsv"))


def test_a_resume_from_an_older_step_then_an_automatic_one_keeps_the_curves_clean(tmp_path):
    crash_then_finish(tmp_path, lambda run: run.log("loss", float(run.step)), crash_at=None, steps=6)
    with pytest.warns(UserWarning, match="superseded"):
        with pytest.raises(Crash):
            with savegame.Run(tmp_path, resume=2, save=savegame.EverySteps(2), handle_signals=False) as run:
                for _ in run.epochs(1):
                    for _ in run.iterate(range(6)):
                        run.log("loss", float(run.step))
                        if run.step == 5:
                            raise Crash
                        run.save()
    crash_then_finish(tmp_path, lambda run: run.log("loss", float(run.step)), crash_at=None, steps=6)
    assert [p.step for p in read_scalars(tmp_path)["loss"]] == [1, 2, 3, 4, 5, 6]


def test_a_users_add_hparams_beside_run_config_gets_its_own_sub_run(tmp_path):
    from tensorboard.plugins.hparams import metadata

    with savegame.Run(tmp_path, config={"lr": 0.1}, handle_signals=False) as run:
        run.writer.add_hparams({"lr": 0.2, "extra": 1}, {"hp/acc": 0.5})
    starts = {}
    for path in event_files(tmp_path):
        for event in event_file_loader.EventFileLoader(str(path)).Load():
            for v in event.summary.value:
                if v.tag == metadata.SESSION_START_INFO_TAG:
                    info = metadata.parse_session_start_info_plugin_data(v.metadata.plugin_data.content)
                    starts[path.parent == tmp_path] = dict(info.hparams)
    assert starts[True]["lr"].number_value == 0.1 and starts[False]["lr"].number_value == 0.2
