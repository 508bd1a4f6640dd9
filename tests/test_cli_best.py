"""``savegame ls``, ``show`` and ``export --best`` name one best checkpoint, ranked as
:mod:`savegame.ranking` defines it: by run.json's ``ranking`` (else its ``best``, else the keep or
save policy a manifest records), a non-finite value never ranking, ties going to the newer step."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import savegame
import torch
from safetensors.torch import load_file
from test_cli import LOSSES, cli, make_run


def saved_run(folder: Path, values: list[float], *, metric: str = "acc", mode: str = "max") -> dict[int, torch.Tensor]:
    """A run that saves every step with ``{metric: value}``, its save policy (not its keep policy)
    following ``metric``: run.json records no ranking nor best. Returns the weights by step."""
    net = torch.nn.Linear(1, 1)
    weights = {}
    with savegame.Run(folder, save=savegame.OnImprovement(metric, mode=mode),
                      keep=savegame.Keep(last=len(values)), handle_signals=False) as run:
        run.track(model=net)
        for step, value in enumerate(values):
            with torch.no_grad():
                net.weight.fill_(step)
            run.step = step
            run.save(metrics={metric: value}, force=True)
            weights[step] = net.weight.clone()
    info = json.loads((folder / "run.json").read_text())
    assert info["best"] is None and not info.get("ranking")
    return weights


def best_everywhere(capsys, run: Path, tmp_path: Path) -> tuple[dict, list[int], torch.Tensor]:
    """(ls's best, the steps show marks best, the weights export --best writes)."""
    code, out, _ = cli(capsys, "ls", "--json", str(run))
    assert code == 0
    [row] = json.loads(out)
    code, out, _ = cli(capsys, "show", "--json", str(run))
    assert code == 0
    shown = json.loads(out)
    assert shown["best"] == row["best"]
    marked = [c["step"] for c in shown["checkpoints"] if c["best"]]
    code, _, err = cli(capsys, "export", str(run), "--best", "-o", str(tmp_path / "best.safetensors"))
    assert code == 0, err
    return row["best"], marked, load_file(tmp_path / "best.safetensors")["weight"]


@pytest.mark.parametrize("inf", [float("inf"), float("-inf")])
def test_a_non_finite_value_never_ranks_in_ls_show_or_export(tmp_path, capsys, inf):
    weights = saved_run(tmp_path / "r", [0.5, inf, 0.7, float("nan")], mode="max" if inf > 0 else "min")
    best, marked, exported = best_everywhere(capsys, tmp_path / "r", tmp_path)
    step = 2 if inf > 0 else 0  # max: 0.7 at step 2 (not inf); min: 0.5 at step 0 (not -inf)
    assert best == {"metric": "acc", "mode": "max" if inf > 0 else "min", "value": [0.5, inf, 0.7][step],
                    "step": step, "checkpoint": f"step-{step:06d}"}
    assert marked == [step] and torch.equal(exported, weights[step])


def test_ties_go_to_the_newer_step_everywhere(tmp_path, capsys):
    weights = saved_run(tmp_path / "r", [0.5, 0.9, 0.9, 0.7])
    best, marked, exported = best_everywhere(capsys, tmp_path / "r", tmp_path)
    assert best["step"] == 2 and marked == [2] and torch.equal(exported, weights[2])


def rewrite_info(run: Path, **changes) -> None:
    info = json.loads((run / "run.json").read_text())
    info.update(changes)
    (run / "run.json").write_text(json.dumps(info))


def test_run_jsons_ranking_comes_before_its_best(tmp_path, capsys):
    weights = make_run(tmp_path / "r")  # best: loss/val min, step 2 of the kept 2, 4, 5
    rewrite_info(tmp_path / "r", ranking={"metric": "loss/val", "mode": "max"})
    best, marked, exported = best_everywhere(capsys, tmp_path / "r", tmp_path)
    assert best == {"metric": "loss/val", "mode": "max", "value": LOSSES[4], "step": 5,
                    "checkpoint": "step-000005"}
    assert marked == [5] and torch.equal(exported, weights[5]["weight"])


def test_a_ranking_without_any_ranked_checkpoint_yet_is_shown_and_export_says_why(tmp_path, capsys):
    with savegame.Run(tmp_path / "r", handle_signals=False) as run:
        run.track(model=torch.nn.Linear(1, 1))
        run.save(metrics={"acc": 0.5})
    rewrite_info(tmp_path / "r", ranking={"metric": "loss/val", "mode": "min"}, best=None)
    code, out, _ = cli(capsys, "ls", "--json", str(tmp_path / "r"))
    assert json.loads(out)[0]["best"] == {"metric": "loss/val", "mode": "min", "value": None,
                                          "step": None, "checkpoint": None}
    code, _, err = cli(capsys, "export", str(tmp_path / "r"), "--best", "-o", str(tmp_path / "x"))
    assert code == 2 and "no checkpoint with a finite loss/val" in err and "--latest" in err


def test_the_best_is_the_best_on_disk_even_when_run_jsons_best_is_stale(tmp_path, capsys):
    weights = make_run(tmp_path / "r")
    rewrite_info(tmp_path / "r", ranking=None, best={"metric": "loss/val", "mode": "min", "value": 0.4,
                                                     "step": 4, "checkpoint": "step-000004"})
    best, marked, exported = best_everywhere(capsys, tmp_path / "r", tmp_path)
    assert best["step"] == 2 and best["value"] == 0.2 and marked == [2]
    assert torch.equal(exported, weights[2]["weight"])


def test_ls_says_running_while_the_runs_process_is_alive_on_this_host(tmp_path, capsys):
    make_run(tmp_path / "r", losses=[0.5])
    rewrite_info(tmp_path / "r", status="running", pid=os.getpid())
    code, out, _ = cli(capsys, "ls", "--json", str(tmp_path / "r"))
    assert code == 0 and json.loads(out)[0]["status"] == "running"
