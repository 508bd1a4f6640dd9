"""Promises a Run keeps after a resume, a break, a changed config or a failed save (issue 10):
each test here failed before its fix."""

import json
import logging
import os
import shutil
import signal
import socket
import weakref

import pytest
import torch

import savegame
from savegame.checkpoint.store import list_checkpoints, read_manifest
from tb_read import read_scalars


def train(path, *, epochs=4, batches=3, stop_after=None, lr=0.1, config=None, **kwargs):
    """A tiny run; ``stop_after=(epoch, batch)`` breaks out of the loop there, like a kill would
    stop it (the process then exits without finishing)."""
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    data = [torch.full((2,), float(i)) for i in range(batches)]
    run = savegame.Run(path, handle_signals=False, config=config, **kwargs)
    with run:
        run.track(model=net, optimizer=opt)
        for epoch in run.epochs(epochs):
            for batch, x in enumerate(run.iterate(data), start=run.step - epoch * batches):
                opt.zero_grad()
                net(x).pow(2).mean().backward()
                opt.step()
                run.log("loss/train", float(epoch))
                if stop_after == (epoch, batch):
                    return run, net
                run.save()
            run.save(metrics={"loss/val": 1.0 / (epoch + 1)})
    return run, net


def steps_on_disk(path):
    return [c.step for c in list_checkpoints(path / "checkpoints")]


# -- retention after a resume ------------------------------------------------------------------
def test_retention_converges_after_resumes_instead_of_keeping_each_resumed_from_checkpoint(tmp_path):
    keep = savegame.Keep(last=2)
    for epochs in (1, 2, 3, 4):  # four processes, each resuming from the last one's newest
        train(tmp_path, epochs=epochs, keep=keep)
    straight = tmp_path / "straight"
    train(straight, epochs=4, keep=keep)
    assert steps_on_disk(tmp_path) == steps_on_disk(straight) == [11, 12]


def test_the_resumed_from_checkpoint_stays_until_a_newer_one_commits(tmp_path):
    train(tmp_path, epochs=1, keep=savegame.Keep(last=1))
    assert steps_on_disk(tmp_path) == [3]
    # resumed, then saving the same step again (a rerun of a finished epoch): nothing newer yet
    with savegame.Run(tmp_path, handle_signals=False, keep=savegame.Keep(last=1)) as run:
        run.track(model=torch.nn.Linear(2, 1), optimizer=torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1))
        run.save(force=True)
    assert steps_on_disk(tmp_path) == [3]


# -- break ---------------------------------------------------------------------------------------
def test_a_break_ends_the_epoch_so_the_epoch_end_save_and_every_epochs_happen_with_metrics(tmp_path):
    saved = []
    net = torch.nn.Linear(2, 1)
    with savegame.Run(tmp_path, handle_signals=False, save=savegame.EveryEpochs(1)) as run:
        run.track(model=net)
        for epoch in run.epochs(3):
            for x in run.iterate([torch.ones(2)] * 5):
                if run.batch == 1:
                    break  # like pytorch/examples mnist --dry-run
            saved.append(run.save(metrics={"loss/val": 0.5}))
    assert [s is not None for s in saved] == [True, True, True]
    assert [s.metrics for s in saved] == [{"loss/val": 0.5}] * 3
    assert steps_on_disk(tmp_path) == [2, 4, 6]
    manifest = read_manifest(tmp_path / "checkpoints" / "step-000006")
    assert manifest["state"]["_savegame"]["epochs_done"] == 3  # `ls` shows 3/3, not 2/3
    # a rerun is finished: it repeats no epoch
    with savegame.Run(tmp_path, handle_signals=False) as again:
        again.track(model=torch.nn.Linear(2, 1))
        assert list(again.epochs(3)) == []


# -- a changed config ----------------------------------------------------------------------------
def test_a_changed_config_names_the_keys_records_the_history_and_what_the_optimizer_keeps(tmp_path):
    train(tmp_path, epochs=1, config={"lr": 0.1, "model": {"width": 8}, "epochs": 1})
    with pytest.warns(UserWarning) as caught:
        train(tmp_path, epochs=2, lr=0.5, config={"lr": 0.5, "model": {"width": 8}, "epochs": 2})
    messages = [str(w.message) for w in caught]
    assert any("config changed since the last process (epochs: 1 -> 2, lr: 0.1 -> 0.5)" in m for m in messages)
    assert any("the restored optimizer goes on with lr=0.1" in m for m in messages)
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["config"]["lr"] == 0.5
    [change] = info["config_history"]
    assert change["changed"] == {"epochs": [1, 2], "lr": [0.1, 0.5]}
    assert change["step"] == 3 and change["kept_from_checkpoint"] == {"optimizer.lr": 0.1}


def test_an_infinite_config_value_is_stored_not_refused(tmp_path):
    train(tmp_path, epochs=1, config={"max_grad_norm": float("inf"), "eps": float("nan")})
    info = json.loads((tmp_path / "run.json").read_text())  # strict JSON: no Infinity/NaN tokens
    assert info["config"] == {"max_grad_norm": "inf", "eps": "nan"}
    # the same config on a rerun is not a change (no warning)
    with savegame.Run(tmp_path, handle_signals=False, config={"max_grad_norm": float("inf"), "eps": float("nan")}):
        pass


# -- what the user sees on a resume --------------------------------------------------------------
def test_a_resume_says_where_it_resumed_and_a_finished_rerun_says_there_is_nothing_to_do(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="savegame")
    train(tmp_path, epochs=3, stop_after=(1, 1))  # saved at step 4 (epoch 1, after batch 0)
    caplog.clear()
    with pytest.warns(UserWarning, match="reading 1 batches again"):  # a plain list skips by reading
        train(tmp_path, epochs=3)
    assert f"resumed {tmp_path} from step 4 (epoch 1, batch 1 of 3)" in caplog.messages
    caplog.clear()
    train(tmp_path, epochs=3)
    assert any(m.startswith(f"{tmp_path} has already done its 3 epochs (step 9): nothing to train")
               for m in caplog.messages)
    assert f"resumed {tmp_path} from step 9 (end of epoch 2)" in caplog.messages


def test_run_batch_is_the_index_in_the_epoch_also_right_after_a_resume(tmp_path):
    seen = []
    net = torch.nn.Linear(2, 1)
    with savegame.Run(tmp_path, handle_signals=False) as run:
        run.track(model=net)
        assert run.batch is None
        for epoch in run.epochs(2):
            for x in run.iterate([torch.ones(2)] * 3):
                seen.append((epoch, run.batch))
                if (epoch, run.batch) == (1, 0):
                    break
            run.save()
    with savegame.Run(tmp_path, handle_signals=False) as run:  # a break ends the epoch: none left
        run.track(model=net)
        assert list(run.epochs(2)) == []
    assert seen == [(0, 0), (0, 1), (0, 2), (1, 0)]
    # a resume inside an epoch continues the index
    other = tmp_path / "mid"
    train(other, epochs=2, stop_after=(0, 1))
    with savegame.Run(other, handle_signals=False) as run:
        run.track(model=torch.nn.Linear(2, 1), optimizer=torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1))
        for epoch in run.epochs(1):
            with pytest.warns(UserWarning, match="reading 1 batches again"):
                batches = [run.batch for _ in run.iterate([torch.ones(2)] * 3)]
    assert batches == [1, 2]


def test_preflight_on_resume_returns_the_report_it_made_when_the_run_started(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    data = DataLoader(TensorDataset(torch.randn(64, 4), torch.randint(0, 3, (64,))), batch_size=16)
    net = torch.nn.Linear(4, 3)
    with savegame.Run(tmp_path, handle_signals=False) as run:
        run.track(model=net)
        first = run.preflight(net, torch.nn.CrossEntropyLoss(), data, quick=True, continue_on_failure=True)
        run.save(force=True)
    with savegame.Run(tmp_path, handle_signals=False) as run:
        run.track(model=net)
        again = run.preflight(net, torch.nn.CrossEntropyLoss(), data, quick=True)
    assert again is not None
    assert [c.name for c in again.checks] == [c.name for c in first.checks]
    assert str(again).startswith("preflight: ")


def test_a_live_resumed_run_records_its_own_pid_and_host(tmp_path):
    train(tmp_path, epochs=1)
    info = json.loads((tmp_path / "run.json").read_text())
    info["pid"], info["host"] = 999_999_999, "elsewhere"  # the process that created the run
    (tmp_path / "run.json").write_text(json.dumps(info))
    with savegame.Run(tmp_path, handle_signals=False):
        info = json.loads((tmp_path / "run.json").read_text())
        assert (info["pid"], info["host"]) == (os.getpid(), socket.gethostname())


def test_stale_temp_folders_are_cleaned_even_when_they_carry_our_own_pid(tmp_path):
    train(tmp_path, epochs=1, save=savegame.EveryEpochs(1))  # step 3
    root = tmp_path / "checkpoints"
    pid = os.getpid()  # a container restarts with the same pid every time
    (root / f"step-000009.tmp-{pid}-abc123").mkdir()
    # an interrupted overwrite of step 3: the old copy was moved aside, the new one never committed
    shutil.copytree(root / "step-000003", root / f"step-000003.old-{pid}-def456")
    (root / "step-000003" / "COMMIT").unlink()
    with savegame.Run(tmp_path, handle_signals=False) as run:
        assert run.step == 3  # resumed from the put-back copy
    assert sorted(p.name for p in root.iterdir()) == ["step-000003"]


def test_the_resume_reads_tensors_straight_into_the_tracked_objects_and_closes_the_checkpoint(tmp_path):
    train(tmp_path, epochs=1)
    net = torch.nn.Linear(2, 1)
    run = savegame.Run(tmp_path, handle_signals=False)
    with run:
        reader = run._resumption.chosen.reader
        run.track(model=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1))
        assert reader._kept == {}  # no copy of the checkpoint's tensors stays beside the model
        list(run.epochs(1))
        assert run._resumption.chosen.reader is None  # closed when the loop started


def test_a_damaged_tensor_found_while_restoring_falls_back_to_the_previous_checkpoint(tmp_path):
    train(tmp_path, epochs=2, save=savegame.EveryEpochs(1), keep=savegame.KeepAll())  # steps 3 and 6
    older = {k: v.clone() for k, v in savegame.load(tmp_path / "checkpoints" / "step-000003")["model"].items()}
    tensors = tmp_path / "checkpoints" / "step-000006" / "tensors.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-3] ^= 0xFF  # a flipped byte in the last tensor's data: the header and the manifest are fine
    tensors.write_bytes(bytes(data))
    net = torch.nn.Linear(2, 1)
    with pytest.warns(UserWarning, match="step-000006 is damaged"):
        with savegame.Run(tmp_path, handle_signals=False) as run:
            run.track(model=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1))
            assert run.step == 3 and run.resumed_from.step == 3
    assert all(torch.equal(net.state_dict()[k], v) for k, v in older.items())
    assert (tmp_path / "checkpoints" / "step-000006.corrupt").is_dir()


# -- a preemption inside save(metrics=...) -------------------------------------------------------
def test_a_preemption_that_lands_in_a_save_with_metrics_keeps_the_metrics(tmp_path):
    net = torch.nn.Linear(2, 1)
    with pytest.raises(SystemExit) as exit_info:
        with savegame.Run(tmp_path, save=savegame.Never(), keep=savegame.Keep(best=1, metric="loss/val")) as run:
            run.track(model=net)
            for epoch in run.epochs(2):
                for x in run.iterate([torch.ones(2)] * 2):
                    pass
                os.kill(os.getpid(), signal.SIGTERM)  # arrives during validation
                run.save(metrics={"loss/val": 0.25})
    assert exit_info.value.code == 0
    [checkpoint] = list_checkpoints(tmp_path / "checkpoints")
    assert checkpoint.metrics == {"loss/val": 0.25}
    assert json.loads((tmp_path / "run.json").read_text())["best"]["step"] == checkpoint.step


def test_the_rerun_hint_of_a_preemption_is_the_real_command_line():
    import shlex
    import sys

    from savegame.messages import rerun_command

    command = shlex.split(rerun_command())
    assert command == list(sys.orig_argv)
    assert command[0] == sys.executable or os.path.basename(command[0]).startswith("python")


# -- validation before destruction ---------------------------------------------------------------
def test_a_failed_track_changes_no_file(tmp_path):
    train(tmp_path, epochs=3, save=savegame.EveryEpochs(1), keep=savegame.KeepAll())  # steps 3, 6, 9
    before = sorted(p.name for p in tmp_path.rglob("*"))
    sizes = {p: p.stat().st_size for p in tmp_path.glob("events.out.tfevents.*")}
    with pytest.raises(savegame.StateMismatchError):
        with savegame.Run(tmp_path, resume=3, handle_signals=False) as run:
            run.track(encoder=torch.nn.Linear(2, 1))  # not what the run saved
    after = sorted(p.name for p in tmp_path.rglob("*"))
    assert [n for n in after if n not in before] == []  # no *.superseded, no discarded-logs
    assert {p: p.stat().st_size for p in tmp_path.glob("events.out.tfevents.*")} == sizes
    assert steps_on_disk(tmp_path) == [3, 6, 9]


def test_a_resume_from_another_folders_checkpoint_does_not_apply_its_log_offsets(tmp_path):
    source = tmp_path / "a"
    train(source, epochs=2, save=savegame.EveryEpochs(1))
    copy = tmp_path / "b"  # a copy of the folder: same event file names, same offsets
    shutil.copytree(source, copy)
    shutil.rmtree(copy / "checkpoints")
    checkpoint = source / "checkpoints" / "step-000003"
    with savegame.Run(copy, resume=checkpoint, handle_signals=False) as run:
        run.track(model=torch.nn.Linear(2, 1), optimizer=torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1))
        run.log("loss/train", 9.0)
    # b's logs are its own from the resume on: nothing of a's curve was kept by a's offsets
    assert [(p.step, p.value) for p in read_scalars(copy)["loss/train"]] == [(3, 9.0)]
    assert read_scalars(source)["loss/train"]  # a untouched


# -- OnImprovement and a failed save -------------------------------------------------------------
def test_a_failed_save_does_not_move_on_improvements_best(tmp_path, monkeypatch):
    import savegame.checkpointer as checkpointer

    real = checkpointer.persist_incremental
    fail = {"next": False}

    def flaky(*args, **kwargs):
        if fail["next"]:
            fail["next"] = False
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpointer, "persist_incremental", flaky)
    net = torch.nn.Linear(2, 1)
    with savegame.Run(tmp_path, handle_signals=False, save=savegame.OnImprovement("loss/val")) as run:
        run.track(model=net)
        steps = iter(run.iterate(range(3)))
        next(steps)
        assert run.save(metrics={"loss/val": 1.0}) is not None
        next(steps)
        fail["next"] = True
        with pytest.raises(OSError):
            run.save(metrics={"loss/val": 0.5})  # the disk was full: not saved
        next(steps)
        assert run.save(metrics={"loss/val": 0.7}) is not None  # better than the best *saved* one
    assert [c.metrics["loss/val"] for c in list_checkpoints(tmp_path / "checkpoints")] == [1.0, 0.7]


# -- one "best" ------------------------------------------------------------------------------------
def test_run_json_records_how_best_is_ranked_and_the_best_kept_checkpoint(tmp_path):
    keep = savegame.Keep(last=1, best=1, metric="loss/val", mode="min")
    run, _ = train(tmp_path, epochs=4, keep=keep)
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["ranking"] == {"metric": "loss/val", "mode": "min"}
    assert info["best"]["step"] == run.best.step
    assert info["best"]["step"] in steps_on_disk(tmp_path)
