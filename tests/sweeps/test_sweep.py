"""Sweeps (issue 13): the spec and its errors, trials as run folders, FAIL/PRUNED handling, the
folder's spec kept, and the CLI. The crash tests are in test_sweep_kill.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

import savegame  # noqa: E402
from savegame.sweeps import SpecError, SweepError, parse_spec  # noqa: E402

HERE = Path(__file__).parent
SPACE = {"lr": {"type": "float", "low": 0.001, "high": 0.3, "log": True}, "epochs": 3}
OBJECTIVE = {"metric": "loss/val", "direction": "minimize"}
sys.path.insert(0, str(HERE))
import toy_train  # noqa: E402


def run_sweep(tmp_path, train=toy_train.train, **kwargs):
    options = dict(space=SPACE, objective=OBJECTIVE, n_trials=3, sampler="random", seed=0, dir=tmp_path / "sw")
    options.update(kwargs)
    return savegame.sweep(train, **options)


# -- the spec ------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"space": {"lr": {"type": "double", "low": 0, "high": 1}}}, "space.lr.type: expected one of float, int"),
    ({"space": {"lr": {"type": "float", "low": 1, "high": 0.1}}}, "space.lr: low (1) must be below high (0.1)"),
    ({"space": {"opt": {"type": "categorical", "choices": []}}}, "space.opt.choices: expected a non-empty list"),
    ({"space": {"lr": {"type": "float", "low": 0, "high": 1, "log": True}}}, "a log scale needs low > 0"),
    ({"space": {"lr": {"type": "float", "low": 0.1, "high": 1, "scale": "log"}}}, "unknown field(s) scale"),
    ({"space": {"epochs": 3}}, "every entry is a constant"),
    ({"objective": None}, "objective: expected {metric:"),
    ({"objective": {"metric": "acc/val", "direction": "up"}}, "objective.direction: expected one of minimize"),
    ({"n_trials": 0}, "n_trials: expected a whole number >= 1"),
    ({"sampler": "bayes"}, "sampler: expected one of grid, random, tpe, cmaes"),
    ({"pruner": "early"}, "pruner: expected one of none, median, asha, hyperband"),
    ({"train": "no_colon"}, "train: expected 'module:function'"),
    ({"trails": 3}, "unknown field(s) trails"),
    ({"sampler": "grid"}, "space.lr: the grid sampler needs a finite set of values"),
])
def test_a_bad_spec_names_the_field_and_the_fix(change, message):
    data = {"train": "toy_train:train", "objective": OBJECTIVE, "space": SPACE, **change}
    with pytest.raises(SpecError, match=None) as raised:
        parse_spec(data, name="s")
    assert message in str(raised.value)


def test_a_yaml_spec_is_read_with_its_file_name_as_the_sweep_name(tmp_path):
    path = tmp_path / "digits-lr.yaml"
    path.write_text("train: toy_train:train\nobjective: {metric: loss/val}\nspace:\n"
                    "  lr: {type: float, low: 1.0e-3, high: 0.3, log: true}\n  hidden: {type: int, low: 4, high: 64}\n"
                    "  opt: {type: categorical, choices: [adam, sgd]}\n  epochs: 5\n")
    spec = savegame.sweeps.load_spec(path)
    assert (spec.name, sorted(spec.space), spec.constants) == ("digits-lr", ["hidden", "lr", "opt"], {"epochs": 5})
    path.write_text("train: [unclosed\n")
    with pytest.raises(SpecError, match="digits-lr.yaml is not valid YAML"):
        savegame.sweeps.load_spec(path)


def test_a_yaml_spec_may_repeat_a_value_with_an_alias_but_not_expand_into_millions(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("train: toy_train:train\nobjective: {metric: loss/val}\nspace:\n"
                    "  lr: &rate {type: float, low: 1.0e-3, high: 0.3, log: true}\n  wd: *rate\n")
    assert savegame.sweeps.load_spec(path).space["wd"] == savegame.sweeps.load_spec(path).space["lr"]
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]"
                                                        for i in range(1, 7)]
    path.write_text("train: toy_train:train\nobjective: {metric: loss/val}\nspace:\n"
                    "  lr: {type: float, low: 0.1, high: 1}\n" + "".join(f"  {line}\n" for line in lines))
    with pytest.raises(SpecError, match="aliases"):  # 10**7 values written out: refused before sweep.json
        savegame.sweeps.load_spec(path)


# -- trials as run folders ------------------------------------------------------------------------
def test_every_trial_is_a_run_folder_with_its_config_and_its_best_value(tmp_path):
    study = run_sweep(tmp_path)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    for trial in study.trials:
        folder = tmp_path / "sw" / "trials" / f"trial-{trial.number:04d}"
        info = json.loads((folder / "run.json").read_text())
        assert info["config"] == {"epochs": 3, "lr": trial.params["lr"]}
        assert trial.value == min(trial.intermediate_values.values())  # the best, not the last
        assert sorted(trial.intermediate_values) == [10, 20, 30]  # reported at the run's steps
        assert json.loads((folder / "trial.json").read_text())["state"] == "COMPLETE"
    # an ordinary Optuna study: optuna.load_study reads the folder's journal as it is
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(tmp_path / "sw" / "study.journal")))
    loaded = optuna.load_study(study_name="train", storage=storage)
    assert [t.value for t in loaded.trials] == [t.value for t in study.trials]


def test_the_objective_saved_with_a_checkpoint_reaches_optuna_too(tmp_path):
    study = run_sweep(tmp_path, n_trials=1, space={**SPACE, "report_by_save": True})
    assert sorted(study.trials[0].intermediate_values) == [10, 20, 30]
    assert study.trials[0].state.name == "COMPLETE"


def test_a_finished_sweep_run_again_runs_nothing_and_more_trials_add_to_it(tmp_path):
    first = run_sweep(tmp_path)
    values = [t.value for t in first.trials]
    again = run_sweep(tmp_path)
    assert [t.value for t in again.trials] == values
    more = run_sweep(tmp_path, n_trials=5)  # a new n_trials is no change of spec
    assert len(more.trials) == 5 and [t.value for t in more.trials][:3] == values


def test_a_changed_spec_is_refused_naming_the_change(tmp_path):
    run_sweep(tmp_path, n_trials=1)
    with pytest.raises(SweepError, match=r"space.lr.high: 0.3 -> 0.5.*--allow-changes"):
        run_sweep(tmp_path, n_trials=1, space={**SPACE, "lr": {**SPACE["lr"], "high": 0.5}})
    study = run_sweep(tmp_path, n_trials=2, space={**SPACE, "lr": {**SPACE["lr"], "high": 0.5}},
                      allow_changes=True)
    assert len(study.trials) == 2


def test_a_trial_whose_train_raises_fails_with_its_traceback_and_the_sweep_goes_on(tmp_path):
    study = run_sweep(tmp_path, toy_train.train_raises, n_trials=4, seed=3)
    states = {t.number: t.state.name for t in study.trials}
    failed = [n for n, s in states.items() if s == "FAIL"]
    assert failed and len(states) == 4 and "COMPLETE" in states.values()
    folder = tmp_path / "sw" / "trials" / f"trial-{failed[0]:04d}"
    assert "RuntimeError: a bug in the user's loop" in (folder / "error.txt").read_text()
    assert "traceback in" in json.loads((folder / "trial.json").read_text())["reason"]


def test_an_objective_never_reported_or_nan_fails_the_trial_saying_which(tmp_path):
    study = run_sweep(tmp_path, toy_train.train_silent, n_trials=1)
    reason = study.trials[0].system_attrs["savegame:reason"]
    assert study.trials[0].state.name == "FAIL"
    assert "loss/val was never reported" in reason and "loss/train" in reason  # what it did log
    # (with the doctor on, a NaN loss is pruned as diverged before it gets here)
    study = run_sweep(tmp_path / "nan", toy_train.train_nan, n_trials=1, doctor=False)
    assert study.trials[0].state.name == "FAIL"
    assert "NaN/inf at every report" in study.trials[0].system_attrs["savegame:reason"]


def test_the_pruner_stops_a_bad_trial_and_keeps_its_curves_to_that_step(tmp_path):
    # five good trials (Optuna's MedianPruner waits for 5), then a learning rate far too low
    good = {"lr": {"type": "float", "low": 0.19, "high": 0.21}, "epochs": 4}
    run_sweep(tmp_path, n_trials=5, space=good, pruner="median")
    study = run_sweep(tmp_path, n_trials=6, pruner="median", allow_changes=True,
                      space={"lr": {"type": "float", "low": 0.0001, "high": 0.0002}, "epochs": 4})
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert [t.number for t in pruned] == [5] and pruned[0].params["lr"] < 0.001
    reason = pruned[0].system_attrs["savegame:reason"]
    assert "MedianPruner" in reason and "at step" in reason
    folder = tmp_path / "sw" / "trials" / f"trial-{pruned[0].number:04d}"
    info = json.loads((folder / "run.json").read_text())
    assert info["status"] == "stopped" and "pruned" in info["message"]
    from savegame.doctor import load_runs
    [run] = load_runs(folder)
    assert int(run.scalars["loss/val"].steps[-1]) == max(pruned[0].intermediate_values) < 40


def test_the_live_doctor_prunes_a_diverging_trial_with_its_reason(tmp_path):
    with pytest.warns(savegame.DoctorWarning, match="diverged"):
        study = run_sweep(tmp_path, n_trials=1, space={"lr": {"type": "categorical", "choices": [40.0]}, "epochs": 8,
                                                       "steps": 10})
    trial = study.trials[0]
    assert trial.state.name == "PRUNED"
    assert "the doctor stopped the run" in trial.system_attrs["savegame:reason"]


def test_a_change_optuna_cannot_take_is_named(tmp_path):
    run_sweep(tmp_path, n_trials=1, space={"opt": {"type": "categorical", "choices": ["adam"]}, "lr": 0.1})
    with pytest.raises(SweepError, match=r"space.opt changed in a way the study cannot take"):
        run_sweep(tmp_path, n_trials=2, allow_changes=True,
                  space={"opt": {"type": "categorical", "choices": ["adam", "sgd"]}, "lr": 0.1})


def test_the_live_doctor_prunes_a_trial_that_stops_learning(tmp_path):
    with pytest.warns(savegame.DoctorWarning, match="plateau"):
        study = run_sweep(tmp_path, n_trials=1, space={"lr": {"type": "categorical", "choices": [1e-9]}, "epochs": 12})
    trial = study.trials[0]
    assert trial.state.name == "PRUNED"
    assert "plateau" in trial.system_attrs["savegame:reason"] and max(trial.intermediate_values) < 120


def test_an_unreachable_storage_fails_before_any_trial(tmp_path):
    with pytest.raises(SweepError, match=r"cannot open the sweep storage postgresql://u:\*\*\*@127.0.0.1:9/db"):
        run_sweep(tmp_path, storage="postgresql://u:secret@127.0.0.1:9/db")
    assert not (tmp_path / "sw" / "trials").exists()


def test_a_train_that_cannot_be_imported_fails_before_any_trial(tmp_path):
    with pytest.raises(SweepError, match="cannot import 'no_such_module'"):
        run_sweep(tmp_path, "no_such_module:train")


# -- the CLI ---------------------------------------------------------------------------------------
def cli(*args, cwd, check=True, **kwargs):
    done = subprocess.run([sys.executable, "-m", "savegame.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(HERE)}, **kwargs)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def write_spec(folder: Path, **changes) -> Path:
    import yaml

    spec = {"train": "toy_train:train", "objective": OBJECTIVE, "n_trials": 3, "sampler": "random", "seed": 0,
            "space": SPACE, **changes}
    path = folder / "toy.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_the_cli_runs_shows_and_prints_the_best_config(tmp_path):
    write_spec(tmp_path)
    cli("sweep", "run", "toy.yaml", cwd=tmp_path)
    shown = json.loads(cli("sweep", "show", "sweeps/toy", "--json", cwd=tmp_path).stdout)
    assert [t["state"] for t in shown["trials"]] == ["COMPLETE"] * 3
    values = [t["value"] for t in shown["trials"]]
    assert values == sorted(values) and shown["best"]["value"] == values[0]  # best first
    assert set(shown["trials"][0]) == {"number", "state", "value", "params", "dir", "resumes", "step"}
    best = cli("sweep", "best", "sweeps/toy", cwd=tmp_path).stdout
    assert f"lr: {shown['best']['params']['lr']}" in best and "epochs: 3" in best
    table = cli("sweep", "show", "sweeps/toy", cwd=tmp_path).stdout
    assert "COMPLETE" in table and "trial" in table


def test_the_cli_says_what_is_wrong_with_a_spec_in_one_line(tmp_path):
    write_spec(tmp_path, space={"lr": {"type": "float", "low": 1, "high": 0}})
    done = cli("sweep", "run", "toy.yaml", cwd=tmp_path, check=False)
    assert done.returncode == 2
    assert "space.lr: low (1) must be below high (0); swap them" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_hparams_tab_lists_every_trial_with_its_state_beside_its_curves(tmp_path):
    sys.path.insert(0, str(HERE.parent / "log"))
    from tbserver import tensorboard

    run_sweep(tmp_path, n_trials=5, space={"lr": {"type": "float", "low": 0.19, "high": 0.21}, "epochs": 4},
              pruner="median")
    study = run_sweep(tmp_path, n_trials=6, pruner="median", allow_changes=True,
                      space={"lr": {"type": "float", "low": 0.0001, "high": 0.0002}, "epochs": 4})
    run_sweep(tmp_path / "f", toy_train.train_raises, n_trials=1, space={"lr": {"type": "float", "low": 0.1,
                                                                                 "high": 0.2}})
    states = {f"trial-{t.number:04d}": t.state.name for t in study.trials}
    assert sorted(states.values()) == ["COMPLETE"] * 5 + ["PRUNED"]
    with tensorboard(tmp_path) as board:  # `savegame board` on the folder that holds both sweeps
        groups = board.wait_session_groups(5)
        sessions = {s["name"]: s for g in groups for s in g["sessions"]}
        shown = {}
        for group in groups:
            hparams = group["hparams"]
            for session in group["sessions"]:
                shown[session["name"]] = (hparams["sweep.state"], hparams.get("lr"))
        for name, state in states.items():
            assert shown[f"sw/trials/{name}"][0] == state
        assert shown["f/sw/trials/trial-0000"][0] == "FAIL"
        assert sessions["f/sw/trials/trial-0000"]["status"] == "STATUS_FAILURE"
        complete = next(name for name, state in states.items() if state == "COMPLETE")
        metrics = {m["name"]["tag"]: m["value"] for m in sessions[f"sw/trials/{complete}"]["metricValues"]}
        assert metrics["sweep/value"] == pytest.approx(study.trials[int(complete[-4:])].value)
        # the curves are in the same run as the hparams, and a pruned one stops where it was pruned
        pruned = next(name for name, state in states.items() if state == "PRUNED")
        points = board.wait_scalars(f"sw/trials/{pruned}", "loss/val", 1)
        assert points[-1][1] < 40


def test_a_trial_on_another_machine_is_an_orphan_once_its_heartbeat_is_older_than_the_grace(tmp_path):
    import datetime
    import time
    from types import SimpleNamespace

    from savegame.sweeps.worker import _orphaned

    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a pid whose process has exited

    def trial(beat_age, host="another-machine"):
        return SimpleNamespace(datetime_start=datetime.datetime.now(), system_attrs={
            "savegame:owner": {"host": host, "pid": int(gone), "since": time.time() - 1000},
            "savegame:heartbeat": time.time() - beat_age, "savegame:dir": str(tmp_path / "nowhere")})

    assert not _orphaned(trial(beat_age=5), grace=60)
    assert _orphaned(trial(beat_age=61), grace=60)
    # on this machine the folder's lock and the process decide at once, whatever the heartbeat says
    import socket
    assert _orphaned(trial(beat_age=0, host=socket.gethostname()), grace=60)  # no folder: nobody holds it
    asked = SimpleNamespace(datetime_start=datetime.datetime.now(), system_attrs={})  # asked, not yet opened
    assert not _orphaned(asked, grace=60)


def test_the_report_of_a_sweep_folder_has_its_table_figures_and_importances(tmp_path):
    run_sweep(tmp_path, n_trials=4, space={"lr": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
                                           "steps": {"type": "int", "low": 5, "high": 10}, "epochs": 2})
    done = cli("report", "sw", "-o", "report.html", cwd=tmp_path)
    page = (tmp_path / "report.html").read_text()
    start = page.index('<section id="sweep">')
    section = page[start:page.index("</section>", start)]
    assert "sweep train</h2>" in section and "objective loss/val (minimize)" in section
    assert section.count("<tr>") == 1 + 4  # the head, and one row per trial
    assert "Parameter importances (Optuna, fANOVA)" in section
    assert section.count('src="data:image/png;base64,') >= 2  # the objective figure, the importances
    assert "report: report.html" in done.stdout


def test_a_report_of_a_sweep_with_one_complete_trial_says_why_there_are_no_importances(tmp_path):
    run_sweep(tmp_path, n_trials=1)
    cli("report", "sw", "-o", "report.html", cwd=tmp_path)
    assert "No parameter importances: they need at least 2 completed trials" in (tmp_path / "report.html").read_text()


def test_a_sweep_killed_holding_the_journal_lock_does_not_block_the_next_one(tmp_path):
    """The kill storm found it: Optuna's symlink lock outlived a SIGKILLed holder, and the next
    sweep spun on it forever. The kernel drops savegame's record lock with its holder."""
    import signal
    import subprocess
    import sys
    import time

    import optuna

    from savegame.sweeps.study import open_storage

    journal = tmp_path / "sweeps" / "s" / "study.journal"
    code = ("import os, signal, sys\nfrom pathlib import Path\nfrom savegame.sweeps.study import _journal_lock\n"
            "_journal_lock(Path(sys.argv[1])).acquire()\nprint('held', flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    journal.parent.mkdir(parents=True)
    holder = subprocess.run([sys.executable, "-c", code, str(journal)], capture_output=True, text=True, timeout=60)
    assert holder.stdout == "held\n" and holder.returncode == -signal.SIGKILL
    started = time.monotonic()
    optuna.create_study(study_name="s", storage=open_storage(f"journal:{journal}")).optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert time.monotonic() - started < 20  # neither Optuna's 30 s grace period nor forever
    assert len(optuna.load_study(study_name="s", storage=open_storage(f"journal:{journal}")).trials) == 2
