"""Rules of the user's own: a Verdict or a FindingRule passed as ``rules=[...]`` shows up
everywhere a built-in verdict does (diagnose, --json, the terminal table, the report, the plots,
the live doctor), with no other change; and the built-in verdicts are one table."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

import savegame
from savegame.doctor import (VERDICTS, Diagnosis, Doctor, DoctorWarning, Finding, FindingRule, RunData, Series,
                             Verdict, diagnose, measure)
from savegame.doctor.command import table
from savegame.doctor.live import ALARMS
from savegame.doctor.verdicts import BUILTIN, badge_colour, terminal_style, verdict_table

COLOUR = "#ad1457"
ANSI_COLOUR = "38;2;173;20;87"  # COLOUR as a 24-bit terminal colour


def at_chance(d, c):
    """Holds when the loss ends where a 10-class guess starts."""
    if c.main.end < 0.95 * math.log(10):
        return False
    d.confidence = 0.8
    d.evidence.append(f"the loss ends at {c.main.end:.3g}, chance level for 10 classes")
    d.suggestions.append("look at a batch: do the labels match the images?")
    return True


AT_CHANCE = Verdict(name="at_chance", rule=at_chance, order=150, alarm=True, colour=COLOUR,
                    description="the loss ends where a guess starts",
                    suggestions=("check that the labels match the inputs",))


def flat_run(name="flat"):
    steps = np.arange(1, 101)
    return RunData(name, Path(name), {"loss/train": Series(steps, np.full(100, 2.31) + 1e-3 * np.sin(steps)),
                                      "loss/val": Series(steps[::10], np.full(10, 2.32))})


def test_a_user_verdict_wins_at_its_place_in_the_order():
    run = flat_run()
    assert diagnose(run).verdict == "plateau"
    d = diagnose(run, rules=[AT_CHANCE])
    assert d.verdict == "at_chance" and d.verdict_info is AT_CHANCE and d.confidence == 0.8
    assert d.evidence == ["the loss ends at 2.31, chance level for 10 classes"]
    # the rule's own suggestion first, then the verdict's fixed ones, as the built-in verdicts do
    assert d.suggestions == ["look at a batch: do the labels match the images?",
                             "check that the labels match the inputs"]
    assert d.line().startswith("flat: at_chance (80%)")
    later = dataclasses.replace(AT_CHANCE, order=250)  # after plateau (200), which holds first
    assert diagnose(run, rules=[later]).verdict == "plateau"


def test_a_user_verdict_is_in_the_json_the_terminal_table_the_report_and_the_plot(tmp_path):
    d = diagnose(flat_run(), rules=[AT_CHANCE])
    data = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert data["verdict"] == "at_chance" and "verdict_info" not in data
    assert set(data) == set(Diagnosis("x").to_dict())  # the JSON's keys are the same as ever

    assert terminal_style(d) == COLOUR and badge_colour(d) == COLOUR
    out = io.StringIO()
    Console(file=out, force_terminal=True, color_system="truecolor", width=160).print(table([d], title="t"))
    line = next(line for line in out.getvalue().splitlines() if "at_chance" in line)
    assert ANSI_COLOUR in line

    from savegame.doctor.html import write_report
    from savegame.doctor.plot import run_figure

    page = write_report([flat_run()], [d], tmp_path / "report.html").read_text()
    assert f'<span class="badge" style="background:{COLOUR}">at_chance</span>' in page
    assert run_figure(flat_run(), d).axes[0].get_title(loc="left") == "flat — at_chance (80%)"


def test_a_user_verdict_named_like_a_builtin_one_replaces_it():
    never = Verdict(name="plateau", rule=lambda d, c: False, order=200)
    d = diagnose(flat_run(), rules=[never])
    assert d.verdict != "plateau" and d.judged
    stricter = dataclasses.replace(next(v for v in BUILTIN if v.name == "plateau"), colour="#000000")
    d = diagnose(flat_run(), rules=[stricter])
    assert d.verdict == "plateau" and badge_colour(d) == "#000000"
    assert badge_colour(diagnose(flat_run())) == "#6d6d6d"  # the table itself is unchanged


def test_a_finding_rule_adds_findings_after_the_builtin_ones():
    def short(d, c):
        if c.main.points < 200:
            yield Finding("short_run", f"only {c.main.points} points of {c.main_tag}", severity="info")

    d = diagnose(flat_run(), rules=[FindingRule(name="short", find=short), AT_CHANCE])
    assert d.verdict == "at_chance"
    assert d.findings[-1] == Finding("short_run", "only 100 points of loss/train", severity="info")
    assert [f.kind for f in diagnose(flat_run(), rules=[FindingRule(name="none", find=lambda d, c: None)]).findings] \
        == [f.kind for f in diagnose(flat_run()).findings]


def test_a_user_rule_that_raises_is_skipped_and_named_and_one_that_does_not_hold_leaves_no_trace():
    def broken(d, c):
        d.evidence.append("half-written")
        return 1 / 0

    def teases(d, c):
        d.evidence.append("I was here")
        d.confidence = 0.01
        return False

    plain = diagnose(flat_run())
    d = diagnose(flat_run(), rules=[Verdict(name="broken", rule=broken, order=1),
                                   Verdict(name="teases", rule=teases, order=2),
                                   FindingRule(name="bad finder", find=lambda d, c: [42])])
    assert d.verdict == plain.verdict and d.evidence == plain.evidence and d.confidence == plain.confidence
    errors = [f for f in d.findings if f.kind == "rule_error"]
    assert len(errors) == 2 and errors[0].severity == "warn"
    assert "the verdict 'broken' failed (ZeroDivisionError" in errors[0].message
    assert "the finding rule 'bad finder' failed (TypeError: it gave int" in errors[1].message


@pytest.mark.parametrize("rules, error, words", [
    (AT_CHANCE, TypeError, "wrap one rule in a list"),
    ([at_chance], TypeError, "Verdict(name=..., rule=function, order=...)"),
    ([AT_CHANCE, AT_CHANCE], ValueError, "named 'at_chance', like an earlier one"),
])
def test_a_malformed_rules_list_raises_in_diagnose_and_in_doctor(rules, error, words):
    with pytest.raises(error, match=re.escape(words)):
        diagnose(flat_run(), rules=rules)
    with pytest.raises(error, match=re.escape(words)):
        Doctor(rules=rules)


@pytest.mark.parametrize("kwargs, words", [
    ({"name": "At Chance"}, "lowercase words joined by '_'"),
    ({"rule": "at_chance"}, "rule=a function"),
    ({"order": float("nan")}, "finite number order"),
    ({"colour": "red;background:url(x)"}, "colour='#rrggbb'"),
    ({"suggestions": [1]}, "a tuple of sentences"),
])
def test_a_verdict_checks_its_fields(kwargs, words):
    with pytest.raises((TypeError, ValueError), match=re.escape(words)):
        dataclasses.replace(AT_CHANCE, **kwargs)


def test_measure_gives_the_curves_a_rule_reads():
    c = measure(flat_run())
    assert c.main is c.train and c.main_tag == "loss/train" and c.val.points == 10
    assert at_chance(Diagnosis("flat"), c)
    with pytest.raises(ValueError, match="looks like a training or validation loss"):
        measure(RunData("x", None, {"lr": Series(np.arange(3), np.ones(3))}))


def test_the_builtin_verdicts_are_one_table_that_every_output_reads():
    assert VERDICTS == ("healthy", "overfitting", "underfitting", "diverged", "plateau", "lr_too_high",
                        "lr_too_low", "still_improving")
    assert [v.name for v in verdict_table()[0]] == ["diverged", "plateau", "lr_too_high", "overfitting",
                                                    "lr_too_low", "underfitting", "still_improving", "healthy"]
    assert ALARMS == tuple(v.name for v in BUILTIN if v.alarm) and "healthy" not in ALARMS
    assert terminal_style(Diagnosis("r", verdict="nonsense")) == "" and badge_colour(Diagnosis("r")) == "#455a64"
    docs = (Path(__file__).parents[2] / "docs" / "doctor.md").read_text()
    for verdict in BUILTIN:
        assert verdict.description and f"\n### {verdict.name}\n" in docs, verdict.name


def test_the_live_doctor_warns_about_a_user_alarm_and_records_it(tmp_path):
    def steady(d, c):  # holds from the 6th validation on
        if c.val is None or c.val.points < 6:
            return False
        d.confidence = 0.9
        d.evidence.append(f"{c.val.points} validations so far")
        return True

    def watched(d, c):
        return [Finding("watched", "a finding of my own", severity="warn")] if c.val and c.val.points >= 6 else []

    rules = [Verdict(name="steady", rule=steady, order=50, alarm=True, colour=COLOUR),
             FindingRule(name="watched", find=watched)]
    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    net = nn.Linear(4, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with savegame.Run(tmp_path / "run", doctor=Doctor(every=0, rules=rules), keep=savegame.Keep(last=1)) as run:
            run.track(model=net, optimizer=opt)
            for _ in run.epochs(9):
                for xb, yb in run.iterate(loader):
                    loss = nn.functional.mse_loss(net(xb), yb)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    run.log("loss/train", loss.item())
                with torch.no_grad():
                    run.log("loss/val", nn.functional.mse_loss(net(x), y).item())
    said = [str(w.message) for w in caught if issubclass(w.category, DoctorWarning)]
    assert sum("steady (90%)" in m for m in said) == 1, said  # once, after two validations in a row
    assert sum("a finding of my own" in m for m in said) == 1, said
    doctor = json.loads((tmp_path / "run" / "doctor.json").read_text())
    assert doctor["latest"]["verdict"] == "steady" and "verdict_info" not in doctor["latest"]
    assert any(f["kind"] == "watched" for f in doctor["latest"]["findings"])
