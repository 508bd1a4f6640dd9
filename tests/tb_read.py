"""The tests' oracle for curves: scalar series read back with TensorBoard's own loader, not with
savegame's reader (``savegame.doctor.eventscan``), so a test compares us with TensorBoard.

>>> import tempfile
>>> from savegame import SummaryWriter
>>> folder = tempfile.mkdtemp()
>>> with SummaryWriter(folder) as w:
...     w.add_scalar("loss", 0.5, 1); w.add_scalar("loss", 0.25, 2)
>>> [(p.step, p.value) for p in read_scalars(folder)["loss"]]
[(1, 0.5), (2, 0.25)]
"""

from __future__ import annotations

import os
from typing import NamedTuple


class Point(NamedTuple):
    step: int
    value: float
    wall_time: float


def read_scalars(run_dir: str | os.PathLike) -> dict[str, list[Point]]:
    """Every scalar series of one run folder (its own event files, not sub-runs), in file order,
    nothing sampled away. Reads old-style (``simple_value``) and tensor-style scalars."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    accumulator = ea.EventAccumulator(str(run_dir), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    accumulator.Reload()
    return {tag: [Point(e.step, e.value, e.wall_time) for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()[ea.SCALARS]}
