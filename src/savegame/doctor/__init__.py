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
"""

from .curves import LogdirError, RunData, Series, load_runs, read_run
from .diagnosis import VERDICTS, Diagnosis, Finding, Marks
from .live import Doctor, DoctorWarning
from .rules import diagnose

__all__ = ["Diagnosis", "Doctor", "DoctorWarning", "Finding", "LogdirError", "Marks", "RunData", "Series",
           "VERDICTS", "diagnose", "load_runs", "read_run"]
