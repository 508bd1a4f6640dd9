"""Run's behaviours around its folder: which checkpoint it resumes from, what it keeps,
what run.json says, and the clear errors for a wrong setup."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import savegame
from savegame.checkpoint.store import list_checkpoints


def tiny_run(path, *, epochs=3, steps_per_epoch=2, **kwargs):
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    data = [torch.ones(2)] * steps_per_epoch
    with savegame.Run(path, handle_signals=False, **kwargs) as run:
        run.track(model=net, optimizer=opt)
        for epoch in run.epochs(epochs):
            for x in run.iterate(data):
                opt.zero_grad()
                net(x).sum().backward()
                opt.step()
            run.save(metrics={"loss": float(10 - epoch) if epoch != 1 else 0.5})
    return run, net


def test_a_rerun_of_a_finished_run_does_no_more_epochs_and_restores_the_final_weights(tmp_path):
    first, net = tiny_run(tmp_path)
    again, net2 = tiny_run(tmp_path)
    assert again.step == first.step == 6
    assert again.resumed_from.step == 6
    assert torch.equal(net.weight, net2.weight)


def test_keep_policy_leaves_the_last_and_the_best_on_disk(tmp_path):
    tiny_run(tmp_path, epochs=5, keep=savegame.Keep(last=1, best=1, metric="loss"))
    steps = [c.step for c in list_checkpoints(tmp_path / "checkpoints")]
    assert steps == [4, 10]  # epoch 1 (loss 0.5) is the best, step 10 the newest


def test_run_json_records_config_status_versions_and_each_resume(tmp_path):
    tiny_run(tmp_path, config={"lr": 0.1}, keep=savegame.Keep(last=2, best=1, metric="loss"))
    tiny_run(tmp_path, config={"lr": 0.1}, epochs=4)
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["status"] == "finished"
    assert info["config"] == {"lr": 0.1}
    assert info["torch_version"] == torch.__version__
    assert info["savegame_version"] == savegame.__version__
    assert [r["from_step"] for r in info["resumes"]] == [6]
    assert info["best"]["metric"] == "loss" and info["best"]["value"] == 0.5


def test_an_exception_marks_the_run_failed_with_the_error(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with savegame.Run(tmp_path, handle_signals=False):
            1 / 0
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["status"] == "failed" and "ZeroDivisionError" in info["message"]


def test_a_clean_sys_exit_inside_the_block_marks_the_run_finished(tmp_path):
    with pytest.raises(SystemExit):
        with savegame.Run(tmp_path, handle_signals=False):
            sys.exit(0)
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "finished"


def test_resume_from_a_given_step_and_from_a_given_path(tmp_path):
    tiny_run(tmp_path, keep=savegame.KeepAll())
    path = tmp_path / "checkpoints" / "step-000004"
    with savegame.Run(tmp_path / "other", resume=path, handle_signals=False) as run:
        assert run.step == 4 and run.resumed_from.path == path
    with pytest.warns(UserWarning, match=r"later checkpoints \(steps \[4, 6\]\) are renamed \*.superseded"):
        with savegame.Run(tmp_path, resume=2, handle_signals=False) as run:
            assert run.step == 2
            run.track(model=torch.nn.Linear(2, 1), optimizer=torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1))
    # the old timeline's checkpoints are kept but never resumed from again
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-000002", "step-000004.superseded", "step-000006.superseded"]
    with savegame.Run(tmp_path, handle_signals=False) as run:
        assert run.step == 2


def test_resume_from_a_missing_step_lists_the_steps_there_are(tmp_path):
    tiny_run(tmp_path, keep=savegame.KeepAll())
    with pytest.raises(savegame.CheckpointNotFoundError, match=r"no committed checkpoint at step 3; it has steps \[2, 4, 6\]"):
        savegame.Run(tmp_path, resume=3, handle_signals=False)


def test_resume_never_refuses_a_folder_that_holds_checkpoints(tmp_path):
    tiny_run(tmp_path)
    with pytest.raises(FileExistsError, match="resume='never' would mix two runs"):
        savegame.Run(tmp_path, resume="never", handle_signals=False)


def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_previous_one_used(tmp_path):
    tiny_run(tmp_path, keep=savegame.KeepAll())
    newest = tmp_path / "checkpoints" / "step-000006" / "tensors.safetensors"
    data = bytearray(newest.read_bytes())
    data[-1] ^= 0xFF
    newest.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"step-000006 is damaged .* moved it to .*step-000006\.corrupt") as caught:
        run = savegame.Run(tmp_path, handle_signals=False)
    assert run.step == 4
    assert caught[0].filename == __file__  # shown at the user's Run(...) line
    run.finish()
    assert (tmp_path / "checkpoints" / "step-000006.corrupt").is_dir()


@pytest.mark.parametrize("damage", ["cut short", "a field of another kind"])
def test_a_damaged_run_json_is_set_aside_whole_and_the_run_resumes_from_its_checkpoints(tmp_path, damage):
    _, net = tiny_run(tmp_path, epochs=2, keep=savegame.KeepAll())
    text = (tmp_path / "run.json").read_text()
    if damage == "cut short":
        text = text[: len(text) // 2]
    else:
        text = text.replace('"resumes": []', '"resumes": 7')
    (tmp_path / "run.json").write_text(text)
    with pytest.warns(UserWarning, match=r"run.json .*damaged.* Moved it to run.json.damaged .* resumes from its checkpoints") as caught:
        run, resumed = tiny_run(tmp_path, epochs=3, keep=savegame.KeepAll())
    assert caught[0].filename == __file__
    assert run.resumed_from.step == 4 and run.step == 6  # the third epoch only
    assert (tmp_path / "run.json.damaged").read_text() == text  # kept as it was
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["status"] == "finished" and info["recovered_from"] == "run.json.damaged"
    assert info["saved_steps"] == [2, 4, 6] and [r["from_step"] for r in info["resumes"]] == [4]


def test_a_run_json_of_another_program_is_refused_and_left_alone(tmp_path):
    (tmp_path / "run.json").write_text('{"experiment": "theirs"}')
    with pytest.raises(savegame.FormatVersionError, match="not a savegame run file .* a folder of its own"):
        savegame.Run(tmp_path, handle_signals=False)
    assert (tmp_path / "run.json").read_text() == '{"experiment": "theirs"}'
    assert not (tmp_path / "run.json.damaged").exists()


def test_a_damaged_run_json_is_reported_by_the_readers_with_what_a_run_would_do(tmp_path):
    tiny_run(tmp_path)
    (tmp_path / "run.json").write_text('{"format": "savegame.run", ')
    with pytest.raises(savegame.FormatVersionError, match="is damaged. Its checkpoints are not: a Run on"):
        savegame.RunFolder(tmp_path).read_info()


def test_tracking_an_object_the_checkpoint_does_not_hold_names_what_it_holds(tmp_path):
    tiny_run(tmp_path)
    with savegame.Run(tmp_path, handle_signals=False) as run:
        with pytest.raises(savegame.StateMismatchError, match=r"no state for 'ema'; it holds \['model', 'optimizer'\]"):
            run.track(ema=torch.nn.Linear(2, 1))


def test_a_model_of_another_shape_lists_every_mismatch(tmp_path):
    tiny_run(tmp_path)
    with savegame.Run(tmp_path, handle_signals=False) as run:
        with pytest.raises(savegame.StateMismatchError) as error:
            run.track(model=torch.nn.Linear(3, 1))
    assert "weight: saved (1, 2), model (1, 3)" in str(error.value)


def test_tracking_something_without_state_dict_is_a_type_error(tmp_path):
    with savegame.Run(tmp_path, handle_signals=False) as run:
        with pytest.raises(TypeError, match=r"run.track\(lr=...\): a float has no state_dict"):
            run.track(lr=0.1)


def test_extras_are_saved_and_restored(tmp_path):
    with savegame.Run(tmp_path, handle_signals=False) as run:
        run.extras["best_acc"] = 0.75
        run.extras["history"] = [(1, float("nan")), (2, 0.5)]
        run.save()
    with savegame.Run(tmp_path, handle_signals=False) as run:
        assert run.extras["best_acc"] == 0.75
        assert run.extras["history"][1] == (2, 0.5)


def test_a_non_serializable_extra_names_its_key_path_and_the_run_can_go_on(tmp_path):
    with savegame.Run(tmp_path, handle_signals=False) as run:
        run.extras["paths"] = [Path("/tmp")]
        with pytest.raises(savegame.NotSerializableError, match=r"extras"):
            run.save()
        run.extras["paths"] = ["/tmp"]
        assert run.save() is not None


def test_metrics_must_be_numbers(tmp_path):
    with savegame.Run(tmp_path, handle_signals=False) as run:
        with pytest.raises(TypeError, match=r"Metric 'loss' must be a number .*but got str low"):
            run.save(metrics={"loss": "low"})


def test_a_second_run_on_the_same_folder_in_this_process_is_refused(tmp_path):
    with savegame.Run(tmp_path, handle_signals=False):
        with pytest.raises(savegame.RunLockedError, match="already open in this process"):
            savegame.Run(tmp_path, handle_signals=False)


def test_a_second_process_on_the_same_folder_gets_a_clear_error(tmp_path):
    code = f"import savegame; savegame.Run({str(tmp_path)!r}, handle_signals=False)"
    with savegame.Run(tmp_path, handle_signals=False):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0
    assert f"is in use by pid {os.getpid()}" in done.stderr


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "LOCK").write_text(json.dumps({"pid": int(dead.stdout), "host": "h"}))
    with pytest.warns(UserWarning, match=f"stale lock .* left by pid {int(dead.stdout)}") as caught:
        run = savegame.Run(tmp_path, handle_signals=False)
    run.finish()
    assert caught[0].filename == __file__  # the user's line, not savegame's lock or ranks module


def test_a_resume_argument_of_the_wrong_kind_is_refused():
    with pytest.raises(ValueError, match="resume must be 'auto', 'never', a step number or a checkpoint path"):
        savegame.Run("unused", resume=None)


def test_a_skipped_save_writes_nothing(tmp_path):
    with savegame.Run(tmp_path, save=savegame.EverySteps(100), handle_signals=False) as run:
        assert run.save() is None
        run.step = 100
        assert run.save().step == 100
    assert [c.step for c in list_checkpoints(tmp_path / "checkpoints")] == [100]


def test_saving_twice_at_one_step_replaces_the_checkpoint_with_the_newer_state(tmp_path):
    with savegame.Run(tmp_path, handle_signals=False) as run:
        run.save()
        run.save(metrics={"loss": 1.0})
    checkpoints = list_checkpoints(tmp_path / "checkpoints")
    assert [(c.step, c.metrics) for c in checkpoints] == [(0, {"loss": 1.0})]
