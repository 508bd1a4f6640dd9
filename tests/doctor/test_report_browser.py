"""The HTML report opened in a real headless Chromium: it loads without errors, its figures
decode, and a screenshot shows the curves.

Needs ``chromium`` and the ``websocket-client`` package. Without a browser the tests skip, unless
``SAVEGAME_REQUIRE_BROWSER=1`` (CI sets it) turns that into a failure. Set ``SAVEGAME_ARTIFACTS``
to a folder to keep the screenshots.
"""

from __future__ import annotations

import io
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from browser import Browser, find_chromium
from report_runs import diverged_run, overfitting_run

from savegame.doctor.html import write_report

TRAIN_BLUE, VAL_ORANGE = (31, 119, 180), (255, 127, 14)
DECIDED_AMBER = (255, 246, 224)  # #ffb300 at alpha 0.12 over white: the region that decided the verdict


@pytest.fixture
def browser(tmp_path):
    binary = find_chromium()
    missing = None
    if binary is None:
        missing = "no chromium/chrome binary on PATH (apt install chromium, or set SAVEGAME_CHROMIUM)"
    else:
        try:
            import websocket  # noqa: F401
        except ImportError:
            missing = "the websocket-client package is not installed (pip install 'savegame[test]')"
    if missing:
        if os.environ.get("SAVEGAME_REQUIRE_BROWSER") == "1":
            pytest.fail(f"SAVEGAME_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    with Browser(binary, tmp_path / "chromium-profile") as b:  # closing kills the browser
        yield b


def keep(png: bytes, name: str, tmp_path: Path) -> Path:
    path = tmp_path / name
    path.write_bytes(png)
    artifacts = os.environ.get("SAVEGAME_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / name)
    return path


def rgb(png: bytes) -> np.ndarray:
    from matplotlib.image import imread

    image = imread(io.BytesIO(png), format="png")  # floats in [0, 1]
    return (image[..., :3] * 255).round().astype(int)


def near(image: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int((np.abs(image - colour).sum(-1) < 45).sum())


def check_page(browser: Browser, report: Path, tmp_path: Path, name: str, run_names: list[str]) -> np.ndarray:
    """Open the report, assert it is clean and complete, and return the first figure's pixels."""
    browser.open(report.resolve().as_uri())
    images = browser.evaluate(
        "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(images) == len(run_names)
    assert all(complete and w > 0 and h > 0 for complete, w, h in images), images
    text = browser.evaluate("document.body.innerText")
    for run_name in run_names:
        assert run_name in text
    assert browser.evaluate("document.querySelectorAll('script').length") == 0
    keep(browser.screenshot(), f"{name}-page.png", tmp_path)
    box = browser.evaluate("(() => { const r = document.images[0].getBoundingClientRect();"
                           " return [r.left + scrollX, r.top + scrollY, r.width, r.height]; })()")
    x, y, w, h = box
    assert w > 400 and h > 200, box  # the figure is shown at a readable size
    figure = keep(browser.screenshot({"x": x, "y": y, "width": math.floor(w), "height": math.floor(h)}),
                  f"{name}-figure.png", tmp_path)
    assert browser.errors() == []
    return rgb(figure.read_bytes())


def test_synthetic_report_renders_in_a_real_browser(browser, tmp_path):
    runs, diagnoses = zip(overfitting_run(), diverged_run())
    report = write_report(list(runs), list(diagnoses), tmp_path / "report.html")
    pixels = check_page(browser, report, tmp_path, "synthetic", [r.name for r in runs])
    drawn = (np.abs(pixels - 255).sum(-1) > 30).mean()
    assert 0.03 < drawn < 0.7, drawn  # a plot, neither blank nor a solid block
    assert near(pixels, TRAIN_BLUE) > 300 and near(pixels, VAL_ORANGE) > 300  # both curves are there


def test_report_of_a_real_tensorboard_logdir_renders(browser, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from savegame.doctor.curves import load_runs
    from savegame.doctor.rules import diagnose

    logdir = tmp_path / "logs"
    rng = np.random.default_rng(0)
    with SummaryWriter(str(logdir / "overfit")) as w:
        for step in range(1, 3001):
            w.add_scalar("train/loss", 2 * math.exp(-step / 500) + 0.01 + 0.02 * rng.random(), step)
            if step % 100 == 0:
                w.add_scalar("val/loss", 2 * math.exp(-step / 500) + 0.3 + 2e-4 * max(0, step - 1200), step)
    with SummaryWriter(str(logdir / "diverged")) as w:
        for step in range(1, 1001):
            loss = 1.5 * math.exp(-step / 200) + 0.1
            w.add_scalar("train/loss", loss * math.exp(max(0, step - 600) / 10) if step < 700 else math.nan, step)
    runs = load_runs(logdir)
    diagnoses = [diagnose(run) for run in runs]
    assert {run.name for run in runs} == {"overfit", "diverged"}
    report = write_report(runs, diagnoses, tmp_path / "report.html", title="real logdir")
    pixels = check_page(browser, report, tmp_path, "tensorboard", [run.name for run in runs])
    assert (np.abs(pixels - 255).sum(-1) > 30).mean() > 0.03
    assert near(pixels, TRAIN_BLUE) > 200
    # the evidence: the fix in one line, the numbers that decided, and on the plot the region
    # that decided (amber, 12% over white) beside the starting-loss line
    text = browser.evaluate("document.body.innerText")
    assert text.count("fix:") == 2 and text.count("decided by:") == 2, text
    assert "val_rise" in text and "final/start" in text or "nonfinite" in text
    amber = (np.abs(pixels - DECIDED_AMBER).sum(-1) <= 12) & (np.abs(pixels - 255).sum(-1) >= 25)  # not white
    assert amber.sum() > 2000, amber.sum()


def test_a_report_of_runs_with_many_flags_fits_the_page_and_folds_them(browser, tmp_path):
    runs, diagnoses = [], []
    for name, lr in (("a", 0.1), ("b", 0.01)):
        run, diagnosis = overfitting_run(name)
        run.hparams = {**{f"a_rather_long_flag_name_{i:02d}": f"value-{i}" for i in range(40)}, "lr": lr}
        runs.append(run)
        diagnoses.append(diagnosis)
    report = write_report(runs, diagnoses, tmp_path / "report.html")
    check_page(browser, report, tmp_path, "flags", ["a", "b"])
    table = browser.evaluate("(() => { const t = document.querySelector('table');"
                             " return [t.scrollWidth, document.documentElement.clientWidth]; })()")
    assert table[0] <= table[1], table  # only lr differs: no sideways scrolling
    text = browser.evaluate("document.body.innerText")
    assert "a_rather_long_flag_name_39" not in text  # folded away ...
    browser.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    assert "a_rather_long_flag_name_39" in browser.evaluate("document.body.innerText")  # ... one click away
