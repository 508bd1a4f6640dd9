"""Every ``savegame`` command that takes a folder: a file or a missing path there is one line on
stderr naming the mistake and the fix, and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli import cli, make_run

# every command that takes a folder, with the rest of a valid command line ({tmp}: a scratch folder)
FOLDER_COMMANDS = [
    ["ls", "{path}"],
    ["ls", "{tmp}", "{path}"],  # one bad folder among several
    ["show", "{path}"],
    ["verify", "{path}"],
    ["export", "{path}", "--latest", "-o", "{tmp}/x.safetensors"],
    ["board", "{path}"],
    ["doctor", "{path}"],
    ["report", "{path}", "-o", "{tmp}/r.html"],
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("paths") / "runs" / "demo"
    make_run(folder, losses=[0.5, 0.2])
    return folder


def _argv(argv: list[str], path: Path, tmp: Path) -> list[str]:
    return [a.format(path=path, tmp=tmp) for a in argv]


@pytest.mark.parametrize("argv", FOLDER_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_file_where_a_folder_is_expected_names_its_folder_and_exits_2(run_dir, tmp_path, capsys, argv):
    code, out, err = cli(capsys, *_argv(argv, run_dir / "run.json", tmp_path))
    assert code == 2, out
    mistake = f"{run_dir / 'run.json'} is a file, not a folder; give its folder: {run_dir}"
    assert err == f"savegame {argv[0]}: error: {mistake}\n"
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("argv", FOLDER_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_missing_folder_is_one_line_naming_it_and_exits_2(tmp_path, capsys, argv):
    missing = tmp_path / "nope"
    code, out, err = cli(capsys, *_argv(argv, missing, tmp_path))
    assert code == 2, out
    assert err.startswith(f"savegame {argv[0]}: error: {missing} does not exist; ")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_verify_on_a_file_inside_a_checkpoint_names_the_checkpoint_folder(run_dir, capsys):
    checkpoint = run_dir / "checkpoints" / "step-000002"
    code, _, err = cli(capsys, "verify", str(checkpoint / "manifest.json"))
    assert code == 2 and f"is a file, not a folder; give its folder: {checkpoint}" in err


def test_ls_of_the_default_runs_folder_when_it_is_missing_says_how_to_start_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "ls")
    assert code == 2 and "runs does not exist" in err and "savegame demo" in err


def test_ls_of_a_folder_without_runs_still_exits_0(tmp_path, capsys):
    code, out, _ = cli(capsys, "ls", str(tmp_path))
    assert code == 0 and "no run folders" in out


def test_export_into_a_folder_names_the_file_to_write_and_leaves_nothing(run_dir, tmp_path, capsys):
    code, _, err = cli(capsys, "export", str(run_dir), "--latest", "-o", str(tmp_path))
    assert code == 2 and f"-o {tmp_path} is a folder; name the file to write" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [
    ["export", "{run}", "--latest", "-o", "{out}"],
    ["report", "{run}", "-o", "{out}"],
    ["doctor", "{run}", "--plot", "{out}"],
], ids=lambda a: a[0])
def test_an_output_onto_a_folder_or_under_a_file_is_one_line_and_exit_2(run_dir, tmp_path, capsys, argv):
    flag = argv[-2]
    code, _, err = cli(capsys, *(a.format(run=run_dir, out=tmp_path) for a in argv))
    assert code == 2 and f"{flag} {tmp_path} is a folder; name the file to write, e.g. {flag} {tmp_path}/" in err
    under_a_file = run_dir / "run.json" / "sub" / "x"
    code, _, err = cli(capsys, *(a.format(run=run_dir, out=under_a_file) for a in argv))
    assert code == 2 and err.count("\n") == 1
    assert f"{flag} {under_a_file}: {run_dir / 'run.json'} is a file, not a folder" in err
    assert list(tmp_path.iterdir()) == []


def test_export_into_a_missing_folder_names_it(run_dir, tmp_path, capsys):
    out = tmp_path / "nope" / "model.safetensors"
    code, _, err = cli(capsys, "export", str(run_dir), "--latest", "-o", str(out))
    assert code == 2 and f"-o {out}: the folder {out.parent} does not exist" in err
    assert list(tmp_path.iterdir()) == []
