"""``run.preflight`` (once per run, report in the run folder and TensorBoard) and ``savegame preflight``."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import savegame


def classification(softmax=False):
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    y = (x[:, 0] > 0).long()
    layers = [torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)]
    if softmax:
        layers.append(torch.nn.Softmax(dim=1))
    return torch.nn.Sequential(*layers), torch.nn.CrossEntropyLoss(), DataLoader(TensorDataset(x, y), batch_size=16)


def test_run_preflight_writes_its_report_and_is_skipped_on_resume(tmp_path):
    model, loss_fn, data = classification()
    with savegame.Run(tmp_path, handle_signals=False) as run:
        report = run.preflight(model, loss_fn, data, quick=True)
        assert report.passed
        run.save(force=True)
    saved = json.loads((tmp_path / "preflight.json").read_text())
    assert saved["passed"] and {c["name"] for c in saved["checks"]} == {c.name for c in report.checks}
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    acc = pea.EventAccumulator(str(tmp_path))
    acc.Reload()
    assert "preflight/text_summary" in acc.Tags()["tensors"]
    with savegame.Run(tmp_path, handle_signals=False) as run:
        again = run.preflight(model, loss_fn, data)  # resumed: not run again, the first report comes back
        assert again.to_dict() == report.to_dict()


def test_a_failed_preflight_stops_the_run_with_the_report_unless_told_to_continue(tmp_path):
    model, loss_fn, data = classification(softmax=True)
    with pytest.raises(savegame.PreflightFailedError, match="preflight: FAILED") as caught:
        with savegame.Run(tmp_path / "a", handle_signals=False) as run:
            run.preflight(model, loss_fn, data)
    assert not caught.value.report.passed
    with savegame.Run(tmp_path / "b", handle_signals=False) as run:
        assert not run.preflight(model, loss_fn, data, continue_on_failure=True).passed


def test_the_cli_checks_a_users_module_function_and_exits_1_on_a_failure(tmp_path):
    (tmp_path / "mysetup.py").write_text(textwrap.dedent("""
        import torch
        from torch.utils.data import DataLoader, TensorDataset
        def broken():
            x = torch.randn(32, 4); y = torch.randint(0, 3, (32,))
            x[0, 0] = float("nan")
            return torch.nn.Linear(4, 3), torch.nn.CrossEntropyLoss(), DataLoader(TensorDataset(x, y), batch_size=8)
    """))
    done = subprocess.run([sys.executable, "-m", "savegame.cli", "preflight", "mysetup:broken", "--quick", "--json"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert not report["passed"] and any("nan" in c["message"].lower() for c in report["checks"] if c["status"] == "fail")


def test_the_cli_says_what_is_wrong_with_a_bad_target(tmp_path):
    done = subprocess.run([sys.executable, "-m", "savegame.cli", "preflight", "nosuchmodule:setup"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "cannot load nosuchmodule:setup" in done.stderr


def test_the_cli_checks_the_demo_by_default():
    pytest.importorskip("sklearn")
    done = subprocess.run([sys.executable, "-m", "savegame.cli", "preflight", "--quick", "--json"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["passed"]
