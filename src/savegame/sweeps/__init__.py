"""Hyperparameter sweeps that survive crashes: every trial a savegame run folder, Optuna underneath.

``savegame.sweep(train, space=..., objective=...)`` (or ``savegame sweep run SPEC.yaml``) runs
``train(config, run)`` once per trial, with the trial's config and a :class:`savegame.Run` on
``SWEEPDIR/trials/trial-NNNN``. Optuna samples, prunes and stores the study; savegame makes each
trial a run folder that resumes exactly, so a sweep killed at any moment and started again keeps
its ended trials, takes each interrupted one up from its last checkpoint, and runs ``n_trials`` in
all, none twice. See docs/sweeps.md.

>>> import savegame, tempfile
>>> def train(config, run):
...     for _ in run.iterate(range(3)):
...         run.log("loss/val", (config["x"] - 2.0) ** 2 + 1.0 / (run.step + 1))
>>> study = savegame.sweep(train, space={"x": {"type": "float", "low": 0.0, "high": 4.0}},
...                        objective={"metric": "loss/val"}, n_trials=3, sampler="random", seed=0,
...                        dir=tempfile.mkdtemp())
>>> len(study.trials), {t.state.name for t in study.trials}
(3, {'COMPLETE'})
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from .spec import SpecError, SweepSpec, load_spec, parse_spec
from .study import SweepError

__all__ = ["sweep", "SweepSpec", "SpecError", "SweepError", "load_spec", "parse_spec", "sweep_dir_for"]


def sweep_dir_for(spec: SweepSpec, dir: str | Path | None) -> Path:
    """``dir``, else ``sweeps/<name>`` under the current directory."""
    return Path(dir) if dir is not None else Path("sweeps") / spec.name


def sweep(train: str | Callable[..., Any], *, space: Mapping[str, Any], objective: Mapping[str, Any],
          n_trials: int = 16, sampler: str = "tpe", pruner: str = "none", name: str | None = None,
          dir: str | Path | None = None, storage: str | None = None, workers: int = 1, seed: int | None = None,
          doctor: bool = True, allow_changes: bool = False) -> Any:
    """Run a sweep to ``n_trials`` ended trials (resuming the folder's earlier ones) and return its
    Optuna study. The arguments are the YAML spec's fields (docs/sweeps.md); ``name`` defaults to
    the function's name, ``dir`` to ``sweeps/<name>``."""
    from .runner import run_sweep

    default_name = name or (train.__name__ if callable(train) else train.rpartition(":")[2])
    spec = parse_spec({"train": train, "space": space, "objective": objective, "n_trials": n_trials,
                       "sampler": sampler, "pruner": pruner, "seed": seed, "doctor": doctor}, name=default_name,
                      where="sweep()")
    return run_sweep(spec, sweep_dir_for(spec, dir), storage=storage, workers=workers, allow_changes=allow_changes)
