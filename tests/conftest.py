"""Fixtures shared by the test files."""

import subprocess

import pytest


@pytest.fixture
def pickle_bomb(tmp_path):
    """``(Boom, marker)``: unpickling a ``Boom()`` would create ``marker``, so a test can prove
    that a pickle file was refused without ever being executed."""
    marker = tmp_path / "executed"

    class Boom:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return Boom, marker


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs, to simulate a full (or, remounted, a read-only) disk; needs root, skipped otherwise."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to simulate a full or read-only disk: {done.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)
