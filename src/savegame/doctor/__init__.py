"""The doctor: read learning curves (any TensorBoard logdir, or a live Run), give each run a
verdict with evidence and suggestions, sample cheap training signals, draw plots and a report."""

from .curves import RunData, Series, load_runs, read_run
from .diagnosis import VERDICTS, Diagnosis, Finding, Marks

__all__ = ["Diagnosis", "Finding", "Marks", "RunData", "Series", "VERDICTS", "load_runs", "read_run"]
