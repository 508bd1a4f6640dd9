"""``savegame doctor PATH``: a verdict with evidence and suggestions for each run of any
TensorBoard logdir; its code is :mod:`savegame.doctor.command`. Imports no torch.

    savegame doctor runs
    savegame doctor runs --plot curves.png --json
"""

from ..doctor.command import add_doctor_arguments as add_arguments
from ..doctor.command import run_doctor as run

__all__ = ["add_arguments", "run"]
