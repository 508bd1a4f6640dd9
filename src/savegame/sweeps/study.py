"""The Optuna study behind a sweep folder: its storage, sampler and pruner, and the spec kept with it.

The default storage needs no server: Optuna's journal file ``SWEEPDIR/study.journal``, which
several local processes share safely (its appends are locked). ``--storage postgresql://...``
(any SQLAlchemy URL) puts the study in a database that workers on many machines share. Either
way it stays an ordinary Optuna study: ``optuna.load_study(study_name=..., storage=...)`` and
``optuna-dashboard`` read it as it is.

The spec is written to ``SWEEPDIR/sweep.json`` on the first run; a later run of the same folder
with a different spec is refused, naming what changed (``allow_changes=True`` accepts it; a new
``n_trials`` is always fine).

>>> import tempfile, pathlib
>>> from savegame.sweeps.spec import parse_spec
>>> spec = parse_spec({"train": "m:f", "objective": {"metric": "loss/val"}, "n_trials": 2,
...                    "space": {"lr": {"type": "float", "low": 0.001, "high": 0.1}}}, name="demo")
>>> study = open_study(pathlib.Path(tempfile.mkdtemp()), spec)
>>> study.study_name, study.direction.name
('demo', 'MINIMIZE')
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from .. import jsonread
from ..atomic import replace_file
from ..errors import SavegameError
from ..optional import require
from .spec import SweepSpec

__all__ = ["open_study", "load_study", "read_record", "SweepError", "JOURNAL", "SPEC_FILE", "storage_url",
           "hide_password"]

JOURNAL = "study.journal"
SPEC_FILE = "sweep.json"
INSTALL = "'savegame[sweep]'"


class SweepError(SavegameError, RuntimeError):
    """A sweep cannot start or go on: the message says why and what to do."""


_QUIETED: list[Any] = []  # optuna, once its logging is set to warnings only


def optuna_module():
    """Optuna, imported on first use with an error that says what to install."""
    if _QUIETED:
        return _QUIETED[0]  # set_verbosity walks every logger (torch has many): 1 ms a trial
    optuna = require("optuna", "savegame sweep", INSTALL)
    optuna.logging.set_verbosity(logging.WARNING)
    _QUIETED.append(optuna)
    return optuna


def storage_url(sweep_dir: Path, url: str | None) -> str:
    """The storage a sweep folder uses: ``url``, else the one recorded in the folder, else its
    journal file."""
    if url:
        return url
    recorded = read_record(sweep_dir).get("storage")
    if isinstance(recorded, str) and recorded:
        if "***@" in recorded:
            raise SweepError(f"{sweep_dir} keeps its study in {recorded}; pass --storage (storage=) with the full URL "
                             "again: the password is not written to the sweep folder")
        return recorded
    return f"journal:{sweep_dir / JOURNAL}"


def _journal_lock(journal: Path) -> Any:
    """The journal file's lock: a POSIX record lock on ``<journal>.flock``, which the kernel
    drops when its holder dies. Optuna's default, a symlink made and removed, outlives a
    SIGKILLed holder: the next sweep waited 30 s for it, or forever (a busy loop) when the
    journal's path was relative, as Optuna's stale-lock check then stats a link that resolves
    nowhere. A thread lock inside keeps threads of one process apart (POSIX locks do not). It
    has the two methods the backend calls (Optuna does not export its lock base class)."""
    import fcntl
    import threading

    class KernelLock:
        def __init__(self, path: str) -> None:
            self._path, self._fd, self._threads = path, None, threading.Lock()

        def acquire(self) -> bool:
            self._threads.acquire()
            try:
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                fcntl.lockf(fd, fcntl.LOCK_EX)
            except BaseException:
                self._threads.release()
                raise
            self._fd = fd
            return True

        def release(self) -> None:
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)  # closing drops the kernel's lock
                self._threads.release()

    return KernelLock(f"{journal}.flock")


def hide_password(url: str) -> str:
    """``url`` fit for a message or a file: its password replaced by ``***``."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", url)


def open_storage(url: str) -> Any:
    optuna = optuna_module()
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path), lock_obj=_journal_lock(path)))
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except Exception as error:  # sqlalchemy's OperationalError, a missing driver, a bad URL
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SweepError(f"cannot open the sweep storage {hide_password(url)}: {reason}. Check that the database "
                         "server is running and reachable, the URL (user, password, host, port, database), and that "
                         "its driver is installed (PostgreSQL: pip install 'savegame[postgres]', which is psycopg 3)") from None


def open_study(sweep_dir: Path, spec: SweepSpec, *, storage: str | None = None, allow_changes: bool = False,
               worker: int = 0) -> Any:
    """Create or load the study of ``sweep_dir`` for ``spec`` (checking it against the recorded one).
    ``worker`` numbers the process among several: the grid and CMA-ES samplers are seeded with
    ``seed + worker``, or workers with one seed would all sample the same parameters (the random
    and TPE samplers are seeded by trial number instead: :func:`make_sampler`)."""
    optuna = optuna_module()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    url = storage_url(sweep_dir, storage)
    _check_spec(sweep_dir, spec, url, allow_changes)
    study = optuna.create_study(study_name=spec.name, storage=open_storage(url), direction=spec.direction,
                                sampler=make_sampler(spec, worker), pruner=make_pruner(spec), load_if_exists=True)
    return study


def load_study(sweep_dir: Path, *, storage: str | None = None) -> Any:
    """The study of an existing sweep folder, for reading (``sweep show``, ``sweep best``, the report)."""
    optuna = optuna_module()
    recorded = read_record(sweep_dir)
    if not recorded:
        raise SweepError(f"{sweep_dir} is not a sweep folder (no {SPEC_FILE}); pass the folder that "
                         "`savegame sweep run` made (sweeps/<name> by default)")
    return optuna.load_study(study_name=recorded["name"], storage=open_storage(storage_url(sweep_dir, storage)))


def make_sampler(spec: SweepSpec, worker: int = 0) -> Any:
    """The spec's sampler. With a seed, the random and TPE samplers are seeded again before each
    trial from the seed and the trial's number (:func:`_seeded_by_trial`); the others get
    ``seed + worker``."""
    optuna = optuna_module()
    seed = spec.seed + worker if spec.seed is not None else None
    if spec.sampler == "grid":
        return optuna.samplers.GridSampler({k: p.grid(k) for k, p in spec.space.items()}, seed=seed)
    if spec.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    base = optuna.samplers.RandomSampler if spec.sampler == "random" else optuna.samplers.TPESampler
    return base(seed=None) if spec.seed is None else _seeded_by_trial(base)(seed=spec.seed)


def _seeded_by_trial(base: type) -> type:
    """``base`` (Optuna's RandomSampler or TPESampler) with its random state seeded from ``seed``
    and the trial's number before each trial. One seed in every process made two processes on
    one study (two ``sweep run``, machines on one ``--storage``) draw the same parameters for
    their trials; now trial n draws the same ones whichever process takes it, and no two draw
    alike."""

    class TrialSeeded(base):
        def __init__(self, *, seed: int) -> None:
            super().__init__(seed=seed)
            self._savegame_seed = seed

        def before_trial(self, study: Any, trial: Any) -> None:
            import numpy

            # the two numbers mixed (SeedSequence): consecutive seeds' first draws stay apart
            seed = int(numpy.random.SeedSequence([self._savegame_seed, trial.number]).generate_state(1)[0])
            self._rng.rng.seed(seed)
            if hasattr(self, "_random_sampler"):  # TPE's first trials come from its own RandomSampler
                self._random_sampler._rng.rng.seed(seed)
            super().before_trial(study, trial)

    TrialSeeded.__name__ = TrialSeeded.__qualname__ = base.__name__
    return TrialSeeded


def make_pruner(spec: SweepSpec) -> Any:
    optuna = optuna_module()
    return {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
            "asha": optuna.pruners.SuccessiveHalvingPruner, "hyperband": optuna.pruners.HyperbandPruner}[spec.pruner]()


def read_record(sweep_dir: Path) -> dict[str, Any]:
    """What ``sweep.json`` records (name, spec, n_trials, storage), or {} before the first run."""
    try:
        data = jsonread.read(sweep_dir / SPEC_FILE)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise SweepError(f"{sweep_dir / SPEC_FILE} is unreadable ({error}); it records the sweep's spec. Restore "
                         "it, or start the sweep in a new folder") from None
    return data if isinstance(data, dict) else {}


def _check_spec(sweep_dir: Path, spec: SweepSpec, url: str, allow_changes: bool) -> None:
    recorded = read_record(sweep_dir)
    fingerprint = spec.fingerprint()
    if recorded and not allow_changes:
        if recorded.get("name") != spec.name:
            raise SweepError(f"{sweep_dir} holds the sweep {recorded.get('name')!r}, not {spec.name!r}; "
                             "use another --dir, or the same name")
        changes = _differences(recorded.get("spec", {}), fingerprint)
        if changes:
            raise SweepError(f"the spec changed since {sweep_dir} was started: {'; '.join(changes)}. Trials already "
                             "run used the old one: put the old spec back, start a new sweep folder (--dir), or pass "
                             "--allow-changes to go on with the new one (n_trials alone may change freely)")
    shown = url if url.startswith("journal:") else hide_password(url)
    record = {"name": spec.name, "spec": fingerprint, "n_trials": spec.n_trials,
              "storage": None if url.startswith("journal:") else shown}
    if record["storage"] is None and recorded.get("storage"):
        record["storage"] = recorded["storage"]
    if recorded != record:
        replace_file(sweep_dir / SPEC_FILE, json.dumps(record, indent=2, default=str))


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in new:
                out.append(f"{where} was removed (it was {old[key]!r})")
            elif key not in old:
                out.append(f"{where} was added ({new[key]!r})")
            else:
                out += _differences(old[key], new[key], where)
        return out
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        old, new = list(old), list(new)
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]
