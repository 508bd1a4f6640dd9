"""``savegame report RUNS ... -o FILE``: one static HTML file with every run's curves, verdict,
signals and checkpoints; its code is :mod:`savegame.doctor.command`. Imports no torch.

    savegame report runs -o report.html
"""

from ..doctor.command import add_report_arguments as add_arguments
from ..doctor.command import run_report as run

__all__ = ["add_arguments", "run"]
