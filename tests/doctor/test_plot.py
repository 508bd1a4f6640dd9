"""The doctor's figures: they draw, stay fast on long runs and carry the verdict's marks."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.backends.backend_agg import FigureCanvasAgg
from report_runs import diverged_run, long_run, overfitting_run, unjudged_run

from savegame.checkpoint.store import CheckpointInfo
from savegame.doctor import RunData, Series, diagnose
from savegame.doctor.plot import MAX_RUNS, downsample, run_figure, save_plot
from savegame.errors import MissingDependencyError


def pixels(fig) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(int)


def labels(fig) -> list[str]:
    return [line.get_label() for ax in fig.axes for line in ax.get_lines()]


def test_overfitting_run_draws_curves_verdict_and_marks():
    run, diagnosis = overfitting_run()
    fig = run_figure(run, diagnosis)
    rgb = pixels(fig)
    not_white = (np.abs(rgb - 255).sum(-1) > 30).mean()
    assert 0.03 < not_white < 0.6  # drawn on, but not a solid block
    blue = (np.abs(rgb - [31, 119, 180]).sum(-1) < 40).sum()
    orange = (np.abs(rgb - [255, 127, 14]).sum(-1) < 40).sum()
    assert blue > 200 and orange > 200  # the train and val curves themselves
    assert fig.axes[0].get_title(loc="left") == "cnn/overfit — overfitting (85%)"
    low = f"@ {diagnosis.marks.low_step:,}"
    assert any(label.startswith("lowest val loss (smoothed) ") and label.endswith(low) for label in labels(fig))
    assert [t.get_text() for t in fig.axes[0].texts if t.get_text().startswith("gap")]
    assert len(fig.axes) == 4  # losses, signals (+ its dead-ReLU twin), accuracy


def test_a_100k_point_series_is_downsampled_to_a_few_thousand_points():
    run, diagnosis = long_run(100_000)
    fig = run_figure(run, diagnosis)
    lines = fig.axes[0].get_lines()
    assert lines and all(len(line.get_xdata()) <= 4000 for line in lines)
    pixels(fig)  # and renders


def test_downsampling_keeps_spikes_in_the_envelope():
    values = np.zeros(100_000)
    values[54_321] = 7.0
    _, y = downsample(np.arange(100_000), values, envelope=True)
    assert len(y) <= 2000 and y.max() == 7.0


def test_diverged_run_marks_nonfinite_points_and_the_divergence_step():
    run, diagnosis = diverged_run()
    fig = run_figure(run, diagnosis)
    found = labels(fig)
    assert "NaN (499)" in found and "inf (1)" in found
    assert "diverged at 1,401" in found
    assert fig.axes[0].get_yscale() == "log"  # the blow-up spans many decades
    pixels(fig)


def test_checkpoint_ticks_show_kept_deleted_and_best(tmp_path):
    run, diagnosis = overfitting_run()
    run.info = {"status": "finished", "saved_steps": [1000, 2000, 3000, 4000, 5000],
                "best": {"metric": "val_loss", "mode": "min", "value": 0.4, "step": 2000}}
    kept = [CheckpointInfo(tmp_path / f"step-{s:06d}", step=s, epoch=0, metrics={}, created=0.0, size=0)
            for s in (2000, 5000)]
    fig = run_figure(run, diagnosis, checkpoints=kept)
    found = labels(fig) + [c.get_label() for c in fig.axes[0].collections]
    assert {"checkpoint (kept)", "checkpoint (deleted)", "best checkpoint @ 2,000"} <= set(found)


def test_an_unjudged_run_still_shows_its_curves():
    run, diagnosis = unjudged_run()
    fig = run_figure(run, diagnosis)
    assert fig.axes[0].get_title(loc="left").endswith("cannot judge: no loss tag & too few points <5>")
    assert labels(fig) == ["weird<tag>"]


def test_save_plot_writes_one_row_per_run_and_says_when_runs_were_left_out(tmp_path):
    runs, diagnoses = zip(*[overfitting_run(f"r{i}") if i % 2 else diverged_run(f"r{i}") for i in range(13)])
    path = save_plot(runs, diagnoses, tmp_path / "out" / "plot.png", dpi=30)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    assert imread(path).shape[0] > 30 * 3 * MAX_RUNS  # 12 rows of ~3 inches


def test_save_plot_refuses_mismatched_lists(tmp_path):
    run, diagnosis = overfitting_run()
    with pytest.raises(ValueError, match="one diagnosis per run"):
        save_plot([run, run], [diagnosis], tmp_path / "p.png")


def test_missing_matplotlib_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import of it raises ImportError
    run, diagnosis = overfitting_run()
    with pytest.raises(MissingDependencyError, match=r"plots needs the optional package matplotlib.*pip install matplotlib"):
        run_figure(run, diagnosis)


def demo_like_run():
    """The demo's curves: training loss down to ~3e-4 (log scale), a noisy validation loss whose
    last value is below its recent median: the measured gap is larger than the last value itself."""
    rng = np.random.default_rng(0)
    steps = np.arange(1, 2251)
    train = 2.0 * np.exp(-steps / 150) + 3e-4 * (1 + rng.random(len(steps)))
    vsteps = np.arange(45, 2251, 45)
    val = 0.2 * np.exp(-vsteps / 200) + 0.006 + 0.004 * rng.random(len(vsteps))
    val[-1] = 0.0043
    acc = np.clip(1 - train, 0, 1)
    run = RunData("demo", path=None, scalars={"loss/train": Series(steps, train), "loss/val": Series(vsteps, val),
                                              "acc/train": Series(steps, acc)})
    return run, diagnose(run)


def test_the_gap_arrow_stays_inside_the_loss_panel():
    run, diagnosis = demo_like_run()
    assert diagnosis.marks.gap_step == 2250 and diagnosis.marks.gap > 0.0043  # the case of the issue
    fig = run_figure(run, diagnosis)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    loss = fig.axes[0]
    assert loss.get_yscale() == "log" and len(fig.axes) == 2  # loss and accuracy, stacked
    arrows = [t for t in loss.texts if getattr(t, "arrow_patch", None) is not None]
    assert arrows, "the gap arrow is drawn"
    box = loss.get_window_extent(renderer)
    for arrow in arrows:
        extent = arrow.arrow_patch.get_window_extent(renderer)
        assert np.isfinite([extent.x0, extent.y0, extent.x1, extent.y1]).all()
        assert box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1, (extent, box)
        assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, (extent, box)
