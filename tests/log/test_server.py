"""Logs written by ``savegame.SummaryWriter``, read back by the real TensorBoard, both loaders.

The same questions ``test_board.py`` asks of torch's writer: which runs there are, every scalar
exactly (value and step, one point per step, nothing sampled away), and the HPARAMS dashboard's
session groups. Where savegame differs from torch on purpose, ``add_hparams`` without
``run_name`` puts the session in the run of the curves, so the session is that run and every
scalar tag of the run is one of its metrics.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import savegame
from tbserver import LOADERS, tensorboard

pytest.importorskip("tensorboard")

STEPS = 1500  # more than the 1000 points TensorBoard keeps of a scalar series by default
HPARAMS = {"lr": 0.1, "opt": "sgd", "bs": 32}
ACC = {"a": 0.5, "b": 0.75, "c": 0.25}


def loss(run: str, step: int) -> float:
    """Exactly representable in float32, so TensorBoard gives back the very same number."""
    return (step % 97) / 8.0 + {"a": 0.0, "b": 10.0, "c": 20.0}[run]


def write_run(folder: Path, run: str, **hparams_kwargs) -> None:
    with savegame.SummaryWriter(str(folder)) as writer:
        for step in range(STEPS):
            writer.add_scalar("loss/train", loss(run, step), step)
        writer.add_scalar("acc/val", ACC[run], STEPS - 1)
        writer.add_hparams(HPARAMS, {"hp/acc": ACC[run]}, **hparams_kwargs)


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("savegame_logs")
    write_run(root / "a", "a")
    write_run(root / "b", "b")
    return root


@pytest.fixture(scope="module", params=list(LOADERS.values()), ids=list(LOADERS))
def board(request, logs):
    with tensorboard(logs, load_fast=request.param) as server:
        yield server


def test_runs(board):
    runs = board.wait_for(lambda: (r := board.runs()) and len(r) >= 2 and r, "2 runs")
    assert sorted(runs) == ["a", "b"], "no sub-run for add_hparams without run_name"
    listing = board.plugins_listing()
    assert listing["scalars"]["enabled"] and listing["hparams"]["enabled"]


def test_scalars_exact_one_value_per_step(board):
    for run in ("a", "b"):
        points = board.wait_scalars(run, "loss/train", STEPS)
        assert [step for _, step, _ in points] == list(range(STEPS)), run
        assert [value for _, _, value in points] == [loss(run, s) for s in range(STEPS)], run
        assert [v for _, _, v in board.scalars(run, "acc/val")] == [ACC[run]]
    tags = board.scalar_tags()
    for run in ("a", "b"):
        assert set(tags[run]) == {"loss/train", "acc/val", "hp/acc"}, run
        assert [v for _, _, v in board.scalars(run, "hp/acc")] == [ACC[run]]


def test_hparams_session_is_the_run_of_the_curves(board):
    groups = board.wait_session_groups(2)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"a", "b"}
    for run in ("a", "b"):
        group = by_name[run]
        assert group["hparams"] == {"lr": 0.1, "opt": "sgd", "bs": 32.0}
        assert [s["name"] for s in group["sessions"]] == [run]
        metrics = {(m["name"]["group"], m["name"]["tag"]): m for m in group["metricValues"]}
        assert set(metrics) == {("", "loss/train"), ("", "acc/val"), ("", "hp/acc")}
        last = metrics[("", "loss/train")]
        assert (last["value"], last["trainingStep"]) == (loss(run, STEPS - 1), STEPS - 1)
        assert metrics[("", "acc/val")]["value"] == ACC[run]
        assert metrics[("", "hp/acc")]["value"] == ACC[run]

    experiment = board.experiment()
    assert {h["name"] for h in experiment["hparamInfos"]} == {"lr", "opt", "bs"}
    assert {m["name"]["tag"] for m in experiment["metricInfos"]} >= {"loss/train", "acc/val",
                                                                      "hp/acc"}


@pytest.mark.parametrize("load_fast", list(LOADERS.values()), ids=list(LOADERS))
def test_run_folder_served_alone(tmp_path, load_fast):
    """``savegame board runs/a``: the run is named "a" and its session keeps its metrics.

    (Served as TensorBoard's own run ".", the hparams plugin would find no metric: it looks for
    the session's scalars in run "./.".)
    """
    write_run(tmp_path / "a", "a")
    with tensorboard(tmp_path / "a", load_fast=load_fast) as server:
        assert server.wait_for(server.runs, "the run") == ["a"]
        points = server.wait_scalars("a", "loss/train", STEPS)
        assert [step for _, step, _ in points] == list(range(STEPS))
        groups = server.wait_session_groups(1)
        assert [g["name"] for g in groups] == ["a"]
        assert [s["name"] for s in groups[0]["sessions"]] == ["a"]
        assert groups[0]["hparams"] == {"lr": 0.1, "opt": "sgd", "bs": 32.0}
        tags = {m["name"]["tag"] for m in groups[0]["metricValues"]}
        assert tags == {"loss/train", "acc/val", "hp/acc"}


def test_run_name_makes_a_torch_like_sub_run(tmp_path):
    """``add_hparams(..., run_name="hp")`` behaves as torch's: the session is run "c/hp"."""
    write_run(tmp_path / "c", "c", run_name="hp")
    with tensorboard(tmp_path, load_fast="true") as server:
        assert sorted(server.wait_for(lambda: len(r := server.runs()) >= 2 and r, "2 runs")) \
            == ["c", "c/hp"]
        assert set(server.scalar_tags()["c/hp"]) == {"hp/acc"}
        groups = server.wait_session_groups(1)
        assert [(g["name"], [s["name"] for s in g["sessions"]]) for g in groups] \
            == [("c/hp", ["c/hp"])]
        assert groups[0]["hparams"] == {"lr": 0.1, "opt": "sgd", "bs": 32.0}
        assert {m["name"]["tag"]: m["value"] for m in groups[0]["metricValues"]} \
            == {"hp/acc": ACC["c"]}
