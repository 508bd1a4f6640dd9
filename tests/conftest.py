"""Fixtures shared by the test files."""

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
