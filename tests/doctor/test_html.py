"""The HTML report: one self-contained file that shows every run, with every string escaped."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser

import pytest
import torch

pytest.importorskip("matplotlib")

from report_runs import diverged_run, overfitting_run, unjudged_run

from savegame.checkpoint.store import checkpoint_dirname, write_checkpoint
from savegame.doctor.html import write_report


class Links(HTMLParser):
    """Every src/href value, every url(...) in a style, the images and the text of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self.images: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_style = tag == "style"
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "poster", "data"):
                self.targets.append(value or "")
            if name == "style":
                self.targets += re.findall(r"url\(\s*['\"]?([^'\")]*)", value or "")
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.targets += re.findall(r"url\(\s*['\"]?([^'\")]*)", data)
            self.targets += re.findall(r"@import\s+['\"]?([^'\";]*)", data)
        self.text.append(data)


def parse(path) -> Links:
    links = Links()
    links.feed(path.read_text(encoding="utf-8"))
    return links


@pytest.fixture
def report(tmp_path):
    runs, diagnoses = zip(overfitting_run(), diverged_run(), unjudged_run())
    return write_report(list(runs), list(diagnoses), tmp_path / "out" / "report.html"), runs


def test_the_report_refers_to_nothing_outside_itself(report):
    path, _ = report
    links = parse(path)
    assert links.targets, "expected the figures' src at least"
    for target in links.targets:
        assert target.startswith("data:") or target.startswith("#"), target
    assert "://" not in path.read_text()  # no http(s), file or any other scheme, even in text
    assert "script" not in links.tags


def test_every_run_appears_with_a_figure_that_is_a_real_png(report):
    path, runs = report
    links = parse(path)
    text = "".join(links.text)
    for run in runs:
        assert text.count(run.name) >= 2  # the comparison table and its own section
    assert len(links.images) == len(runs)
    for src in links.images:
        png = base64.b64decode(src.split(",", 1)[1])
        assert src.startswith("data:image/png;base64,") and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "overfitting" in text and "diverged" in text
    assert "cannot judge: no loss tag & too few points <5>" in text  # the parser unescapes


def test_run_names_tags_and_hparams_are_escaped(report):
    path, _ = report
    page = path.read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "too few points &lt;5&gt;" in page


def test_comparison_table_has_hparams_columns_and_best_values(report):
    path, _ = report
    page = path.read_text()
    table = page[page.index("<table>"):page.index("</table>")]
    for column in ("lr", "batch_size", "optimizer", "model", "note", "final train loss",
                   "lowest val loss @ step", "final val acc"):
        assert f"<th>{column}</th>" in table
    assert "0.4192 @ 2,750" in table


def test_a_savegame_run_lists_its_kept_checkpoints_counts_the_deleted_and_its_status(tmp_path):
    run, diagnosis = overfitting_run("sg")
    run.path = tmp_path / "sg"
    for step in (2750, 5000):
        write_checkpoint(run.path / "checkpoints" / checkpoint_dirname(step), {"w": torch.zeros(1)},
                         step=step, epoch=0, metrics={"val_loss": 0.42 if step == 2750 else 0.55})
    run.info = {"status": "finished", "message": None, "resumes": [{}],
                "saved_steps": [250 * k for k in range(1, 21)],  # 20 saved, 18 of them deleted
                "best": {"metric": "val_loss", "mode": "min", "value": 0.42, "step": 2750}}
    page = write_report([run], [diagnosis], tmp_path / "r.html").read_text()
    section = page[page.index('id="run-0"'):]
    assert "<h3>Checkpoints</h3>" in section
    rows = re.findall(r"<tr><td class=n>([\d,]+)</td><td>(.*?)</td><td>(.*?)</td></tr>", section)
    assert [r[0] for r in rows] == ["2,750", "5,000"]  # the kept ones only
    assert rows[0][2].startswith("kept") and "best" in rows[0][2] and "best" not in rows[1][2]
    assert rows[0][1] == "val_loss=0.42"
    assert "18 more were saved and deleted by the keep policy" in section and "deleted</span>" not in section
    assert "status: <b>finished</b>" in section and "resumed 1 time(s)" in section
    json.dumps(run.info)  # the info stays untouched and JSON


def argparse_run(name, lr):
    """A run whose hparams are every flag of a training script: 30 alike, lr different."""
    run, diagnosis = overfitting_run(name)
    run.hparams = {**{f"flag_{i:02d}": i for i in range(30)}, "data_dir": "/data/x", "lr": lr}
    return run, diagnosis


def test_the_comparison_shows_only_the_hparams_that_differ_and_all_are_one_click_away(tmp_path):
    runs, diagnoses = zip(argparse_run("a", 0.1), argparse_run("b", 0.01))
    page = write_report(list(runs), list(diagnoses), tmp_path / "r.html").read_text()
    table = page[page.index("<table>"):page.index("</table>")]
    heads = re.findall(r"<th>(.*?)</th>", table)
    assert "lr" in heads and not [h for h in heads if h.startswith("flag_")] and "data_dir" not in heads
    start = page.index("<details")
    hidden = page[start:page.index("</details>", start)]
    assert "<summary>" in hidden and "31 are the same in every run" in hidden
    for key in [f"flag_{i:02d}" for i in range(30)] + ["data_dir", "lr"]:
        assert f">{key}<" in hidden
    assert "<script" not in page


def test_a_single_runs_hparams_are_folded_away_but_listed(tmp_path):
    run, diagnosis = argparse_run("only", 0.1)
    page = write_report([run], [diagnosis], tmp_path / "r.html").read_text()
    table = page[page.index("<table>"):page.index("</table>")]
    assert not [h for h in re.findall(r"<th>(.*?)</th>", table) if h.startswith("flag_") or h == "lr"]
    assert "<details" in page and ">flag_29<" in page


def test_mismatched_runs_and_diagnoses_are_refused(tmp_path):
    run, diagnosis = overfitting_run()
    with pytest.raises(ValueError, match="one diagnosis per run"):
        write_report([run], [], tmp_path / "r.html")
