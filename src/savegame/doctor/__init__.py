"""The doctor: read learning curves (any TensorBoard logdir, or a live Run), give each run a
verdict with evidence and suggestions, sample cheap training signals, draw plots and a report.

>>> import tempfile
>>> from torch.utils.tensorboard import SummaryWriter
>>> logdir = tempfile.mkdtemp()
>>> with SummaryWriter(f"{logdir}/lr_0.1") as w:
...     for step in range(1, 101):
...         w.add_scalar("loss/train", float("nan") if step > 60 else 2.0 / step, step)
>>> [run] = load_runs(logdir)
>>> diagnose(run).verdict
'diverged'

A verdict or finding of your own is a :class:`Verdict` or :class:`FindingRule` (``_base.py``)
passed as ``diagnose(run, rules=[...])`` or ``Doctor(rules=[...])``.
"""

from ._base import Curves, FindingRule, Verdict
from .curves import LogdirError, RunData, Series, load_runs, read_run
from .diagnosis import Diagnosis, Finding, Marks
from .live import Doctor, DoctorWarning
from .rules import diagnose, measure
from .verdicts import VERDICTS

__all__ = ["Curves", "Diagnosis", "Doctor", "DoctorWarning", "Finding", "FindingRule", "LogdirError", "Marks",
           "RunData", "Series", "VERDICTS", "Verdict", "diagnose", "load_runs", "measure", "read_run"]
