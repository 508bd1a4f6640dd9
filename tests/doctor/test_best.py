"""One definition of "best": the kept checkpoint that ``savegame export RUN --best`` writes (run.json's
``best``). The lowest point of a curve is named for what it is, and never called a checkpoint to
keep unless one at that step is kept."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter as TorchWriter

from report_runs import savegame_overfit_run

from savegame.checkpoint.store import list_checkpoints
from savegame.cli import main
from savegame.doctor import diagnose, load_runs, read_run


@pytest.fixture(scope="module")
def sg_run(tmp_path_factory):
    folder = savegame_overfit_run(tmp_path_factory.mktemp("runs") / "demo")
    info = json.loads((folder / "run.json").read_text())
    kept = {c.step for c in list_checkpoints(folder / "checkpoints")}
    return folder, info["best"], kept


def steps_called_best(texts):
    """Every step a sentence calls "best" (best ... step N), with the sentence."""
    return [(int(m.group(1).replace(",", "")), text) for text in texts
            for m in re.finditer(r"\bbest\b[^.;:]*?\bstep ([\d,]+)", text)]


def test_the_fixture_is_the_issues_situation(sg_run):
    folder, best, kept = sg_run
    d = diagnose(read_run(folder))
    assert d.verdict == "overfitting"
    assert d.marks.low_step != best["step"] and d.marks.low_step not in kept and best["step"] in kept


def test_a_savegame_runs_diagnosis_names_its_best_checkpoint_not_the_smoothed_minimum(sg_run):
    folder, best, kept = sg_run
    d = diagnose(read_run(folder))
    assert d.best_checkpoint == {"step": best["step"], "metric": "loss/val", "mode": "min",
                                 "value": best["value"], "checkpoint": best["checkpoint"]}
    keep = d.suggestions[0]
    assert f"best checkpoint is step {best['step']:,}" in keep and "loss/val 0.05" in keep
    assert f"savegame export {folder} --best -o model.safetensors" in keep
    assert f"lowest validation loss (smoothed) at step {d.marks.low_step:,}" in keep
    assert "keep that checkpoint" not in " ".join(d.suggestions + d.evidence)
    for step, text in steps_called_best(d.suggestions + d.evidence):
        assert step in kept, text  # "best" only ever names a kept checkpoint


def test_doctor_json_carries_the_best_checkpoint_and_the_curves_lowest_point(sg_run, capsys):
    folder, best, _ = sg_run
    assert main(["doctor", str(folder), "--json"]) == 0
    [d] = json.loads(capsys.readouterr().out)
    assert d["best_checkpoint"]["step"] == best["step"] and d["best_checkpoint"]["value"] == best["value"]
    assert "best_step" not in d["marks"] and d["marks"]["low_step"] != best["step"]


def test_a_plain_tensorboard_logdir_names_the_lowest_point_and_suggests_keeping_the_best(tmp_path):
    with TorchWriter(str(tmp_path / "tb")) as w:
        for step in range(1, 401):
            w.add_scalar("loss/train", 2 * np.exp(-step / 60), step)
            if step % 10 == 0:
                w.add_scalar("loss/val", 2 * np.exp(-step / 60) + 0.3 + max(step - 150, 0) * 0.003, step)
    [run] = load_runs(tmp_path / "tb")
    d = diagnose(run)
    assert d.verdict == "overfitting" and d.best_checkpoint is None
    keep = d.suggestions[0]
    assert keep.startswith(f"lowest validation loss (smoothed) at step {d.marks.low_step:,}")
    assert "Keep(best=1, metric=" in keep and "no checkpoints" in keep
    assert steps_called_best(d.suggestions + d.evidence) == []


def test_a_healthy_savegame_run_names_its_best_checkpoint(tmp_path):
    import savegame
    import torch

    run = savegame.Run(tmp_path / "ok", save=savegame.EveryEpochs(1),
                       keep=savegame.Keep(last=1, best=1, metric="loss/val"), doctor=False)
    with run:
        run.track(model=torch.nn.Linear(1, 1))
        for epoch in run.epochs(40):
            for _ in run.iterate(range(10)):
                run.log("loss/train", 2.0 * float(np.exp(-run.step / 40)) + 0.05)
            val = 2.0 * float(np.exp(-run.step / 40)) + 0.1 + 0.001 * (epoch % 3)
            run.log("loss/val", val)
            run.save(metrics={"loss/val": val})
    best = json.loads((tmp_path / "ok" / "run.json").read_text())["best"]
    d = diagnose(read_run(tmp_path / "ok"))
    assert d.verdict == "healthy" and d.best_checkpoint["step"] == best["step"]
    assert f"best checkpoint is step {best['step']:,}" in d.suggestions[0]
    assert "savegame export" in d.suggestions[0]


def test_the_report_stars_the_best_checkpoint_and_never_calls_the_minimum_best(sg_run, tmp_path):
    pytest.importorskip("matplotlib")
    from savegame.doctor.html import write_report

    folder, best, kept = sg_run
    run = read_run(folder)
    d = diagnose(run)
    page = write_report([run], [d], tmp_path / "r.html").read_text()
    comparison = page[page.index("<table>"):page.index("</table>")]
    assert "<th>best checkpoint</th>" in comparison and f"step {best['step']:,}" in comparison
    assert "<th>lowest val loss @ step</th>" in comparison
    assert re.search(rf"<td class=n>{best['step']:,}</td><td>[^<]*</td><td>kept <span class=best>★ best",
                     page)
    text = re.sub(r"<[^>]+>", " ", page)
    for step, sentence in steps_called_best([text]):
        assert step in kept, sentence


def test_the_plot_labels_the_smoothed_minimum_and_the_best_checkpoint_apart(sg_run):
    pytest.importorskip("matplotlib")
    from savegame.doctor.plot import run_figure

    folder, best, _ = sg_run
    run = read_run(folder)
    d = diagnose(run)
    fig = run_figure(run, d)
    found = [a.get_label() for ax in fig.axes for a in ax.get_lines() + ax.collections]
    assert f"best checkpoint @ {best['step']:,}" in found
    assert any(label.startswith("lowest val loss (smoothed)") and label.endswith(f"@ {d.marks.low_step:,}")
               for label in found), found
    assert [label for label in found if label.startswith("best")] == [f"best checkpoint @ {best['step']:,}"]


def exported_step(folder, tmp_path, capsys) -> int:
    assert main(["export", str(folder), "--best", "-o", str(tmp_path / "w.safetensors")]) == 0
    return int(re.search(r"\(step (\d+),", capsys.readouterr().out).group(1))


def test_the_doctors_best_checkpoint_is_the_one_export_best_writes(tmp_path, capsys):
    import shutil

    folder = savegame_overfit_run(tmp_path / "run")
    assert diagnose(read_run(folder)).best_checkpoint["step"] == exported_step(folder, tmp_path, capsys)
    recorded = json.loads((folder / "run.json").read_text())["best"]
    shutil.rmtree(folder / "checkpoints" / recorded["checkpoint"])  # deleted by hand since the last save
    best = diagnose(read_run(folder)).best_checkpoint
    assert best["step"] != recorded["step"] and best["step"] == exported_step(folder, tmp_path, capsys)
    assert best["checkpoint"] in {p.name for p in (folder / "checkpoints").iterdir()}


def test_doctor_on_a_savegame_run_still_never_imports_torch(sg_run):
    import subprocess
    import sys

    folder, _, _ = sg_run
    code = ("import sys, io, contextlib\nfrom savegame.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()):\n    assert main(['doctor', {str(folder)!r}, '--json']) == 0\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


def test_a_savegame_run_that_ranks_no_checkpoint_says_so_and_how_to_keep_the_best():
    steps = np.arange(1, 401)
    train = 2 * np.exp(-steps / 60)
    val = train[9::10] + 0.3 + np.maximum(steps[9::10] - 150, 0) * 0.003
    from savegame.doctor import RunData, Series

    run = RunData("r", None, {"loss/train": Series(steps, train), "loss/val": Series(steps[9::10], val)},
                  info={"status": "finished", "best": None})
    d = diagnose(run)
    assert d.verdict == "overfitting" and d.best_checkpoint is None
    assert "records no best checkpoint" in d.suggestions[0] and "Keep(best=1, metric='loss/val')" in d.suggestions[0]
    assert steps_called_best(d.suggestions + d.evidence) == []
