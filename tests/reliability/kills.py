"""Kill storms on one training run: SIGKILL at random moments and at each kind of file operation
of the commit protocol, rerun after each kill, and check what survived.

A storm round starts a fresh run folder and runs :func:`storm_train.train` in a new process again
and again, each one SIGKILLed, until one ends on its own. Kills are of two kinds:

* **uniform**: at a moment drawn uniformly over one uninterrupted run's duration;
* **aimed**: the process kills itself just before the ``nth`` file operation of one *class*, a
  kind of op (create, write, fsync, rename, link, unlink, rmdir, mkdir) on one kind of file (a
  temp checkpoint's tensors, its manifest, its ``COMMIT``, the folder rename that commits it,
  a retention deletion, a hard link of shared incremental data, ``run.json``, the event file ...)
  in one kind of thread (the training loop's, the background save's, the log writer's). The
  classes come from the trace of an uninterrupted run (:mod:`faultfs`), so a new op in the
  protocol is aimed at without a change here.

After each kill: every committed checkpoint must verify, the newest must be at least the last
one the run reported committed (``data_lost`` otherwise), and the next process must resume from
the newest intact checkpoint (``corrupt_resume`` when it resumed from a damaged one, or from
past the newest intact one). At each round's end the parameters must equal an uninterrupted
run's bit for bit and the curves must hold each step exactly once with the same values.

The processes are forked from a server (``multiprocessing``'s forkserver) that imported torch
and savegame once, so a kill and rerun costs tens of milliseconds instead of an interpreter
start; each is still a real process, killed with SIGKILL.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import re
import shutil
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from storm_train import StormConfig, train
from tally import Tally

import faultfs

# The modes a storm cycles through: what the killed runs save with. The reference always
# saves synchronously and fully: every mode must end with its bits.
MODES = {
    "sync, full": StormConfig(incremental=False),
    "sync, incremental": StormConfig(incremental=True),
    "async, incremental": StormConfig(async_save=True, incremental=True),
    "async, full": StormConfig(async_save=True, incremental=False),
}
REFERENCE = StormConfig(incremental=False)


def _context():
    """The forkserver context, its server started with torch, savegame and the storm imported."""
    from multiprocessing import forkserver

    here = Path(__file__).resolve().parent
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "savegame", "storm_train", "faultfs", "kills", "warm_up"])
    # Python 3.11's forkserver does not pass sys.path on to its server: PYTHONPATH does
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(here), str(here.parent), *([saved] if saved else [])])
    try:
        forkserver.ensure_running()
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved
    return context


def _noop() -> None:
    pass


def _attempt(run_dir: str, out: str, journal: str, config: StormConfig, fault: faultfs.Fault | None,
             trace_to: str | None) -> None:
    """One process of a round (runs in the forked child)."""
    try:
        if fault is None and trace_to is None:
            train(Path(run_dir), Path(out), Path(journal), config)
            return
        with faultfs.FaultyFiles(run_dir, fault, keep_trace=trace_to is not None) as files:
            train(Path(run_dir), Path(out), Path(journal), config)
        if trace_to:
            Path(trace_to).write_text(json.dumps([[op.kind, op.path, op.thread] for op in files.trace]))
    except BaseException:
        with open(journal, "a") as f:
            f.write("error " + json.dumps(traceback.format_exc()) + "\n")
        raise SystemExit(3)


# -- the classes of file operations ---------------------------------------------------------
_NAMES = [  # (regex of a part of a concrete path, the placeholder its class shows), in order
    (r"step-\d+\.tmp-[^/]+", "<temp>"),
    (r"step-\d+\.([a-z]+)-[^/]+", r"<\1>"),  # a checkpoint being deleted (del), put back (old) ...
    (r"step-\d+", "<committed>"),
    (r"events\.out\.tfevents\.[^/]+", "<event file>"),
    (r"shared-[0-9a-f]+", "shared-<hash>"),
    (r"\d+", "N"),
]
_REGEXES = {"<temp>": r"step-\d+\.tmp-[^/]+", "<committed>": r"step-\d+", "<event file>": r"events\.out\.tfevents\.[^/]+",
            "<hash>": r"[0-9a-f]+", "N": r"\d+"}


def op_class(kind: str, path: str, thread: str) -> str:
    """The class of one op: ``kind path-pattern @thread-kind``, numbers and names taken out.

    >>> op_class("rename", "checkpoints/step-000006.tmp-51-ab12", "savegame-save_0")
    'rename checkpoints/<temp> @savegame-save'
    >>> op_class("unlink", "checkpoints/step-000003.del-51-da6b/COMMIT", "savegame-save_0")
    'unlink checkpoints/<del>/COMMIT @savegame-save'
    >>> op_class("write", ".run.json.tmp-6804", "MainThread")
    'write .run.json.tmp-N @MainThread'
    >>> op_class("write", "events.out.tfevents.1733.host.51.0", "savegame-log:/x")
    'write <event file> @savegame-log'
    """
    for regex, placeholder in _NAMES:
        path = re.sub(regex, placeholder, path)
    thread_kind = re.split(r"[_:-]\d|:", thread)[0]
    return f"{kind} {path} @{thread_kind}"


def class_regex(name: str) -> tuple[str, str, str]:
    """(kind, path regex, thread regex) of a class from :func:`op_class`, for a :class:`faultfs.Fault`.

    >>> kind, where, thread = class_regex("unlink checkpoints/<del>/COMMIT @savegame-save")
    >>> bool(re.search(where, "checkpoints/step-000003.del-51-da6b/COMMIT")), bool(re.search(thread, "savegame-save_0"))
    (True, True)
    """
    kind, path, thread = re.match(r"(\S+) (.*) @(.*)$", name).groups()
    parts = re.split(r"(<[a-z ]+>|N)", path)
    pattern = "".join(_REGEXES.get(part) or (rf"step-\d+\.{part[1:-1]}-[^/]+" if part.startswith("<") else re.escape(part))
                      for part in parts)
    return kind, f"^{pattern}$", f"^{re.escape(thread)}"


# -- one storm --------------------------------------------------------------------------------
@dataclass
class _Round:
    run_dir: Path
    out: Path
    journal: Path

    def events(self) -> list[tuple[str, str]]:
        if not self.journal.exists():
            return []
        return [tuple(line.split(" ", 1)) if " " in line else (line, "") for line in self.journal.read_text().splitlines()]


def _intact_checkpoints(run_dir: Path, tally: Tally, label: str) -> list[int]:
    """Steps of the committed checkpoints, each verified (a damaged one is a failure)."""
    from savegame.checkpoint.layout import is_committed
    from savegame.checkpoint.store import verify_checkpoint

    folder = run_dir / "checkpoints"
    steps = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not re.fullmatch(r"step-\d+", path.name) or not is_committed(path):
            continue
        problems = verify_checkpoint(path)
        if problems:
            tally.fail("corrupt_resume", f"{label}: committed {path.name} is damaged: {problems[:2]}")
        else:
            steps.append(int(path.name.split("-")[1]))
    return steps


def _curves(run_dir: Path) -> dict:
    from tb_read import read_scalars

    return {tag: [(p.step, p.value) for p in points] for tag, points in read_scalars(run_dir).items()}


class Storm:
    """Kill storms on one machine: the forkserver, the reference run, the op classes."""

    def __init__(self, workdir: Path, seed: int) -> None:
        self.workdir = Path(workdir)
        self.random = random.Random(seed)
        self.context = _context()
        process = self.context.Process(target=_noop)  # starts the server: its imports are not a run's time
        process.start()
        process.join()
        reference = self._round("reference")
        trace = self.workdir / "trace.json"
        if self._run(reference, REFERENCE, None, str(trace)) != 0:
            raise RuntimeError(f"the storm's reference run failed: {reference.events()[-1:]}")
        started = time.monotonic()
        self._run(self._round("timing"), REFERENCE, None)  # without the trace's bookkeeping
        self.duration = time.monotonic() - started
        self.reference_params = reference.out.read_bytes()
        self.reference_curves = _curves(reference.run_dir)
        self.classes: dict[str, list[str]] = {}  # per mode: the op classes its trace showed
        self._traces = {"sync, full": json.loads(trace.read_text())}
        self._rounds = 0
        self.resumes = 0  # processes that resumed after a kill
        self.identical = 0  # rounds that ended with the reference's bits and curves

    def _round(self, name: str) -> _Round:
        folder = self.workdir / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return _Round(folder / "run", folder / "out.safetensors", folder / "journal")

    def _start(self, r: _Round, config: StormConfig, fault, trace_to=None):
        process = self.context.Process(target=_attempt, args=(str(r.run_dir), str(r.out), str(r.journal), config,
                                                              fault, trace_to))
        process.start()
        return process

    def _run(self, r: _Round, config: StormConfig, fault, trace_to=None) -> int:
        process = self._start(r, config, fault, trace_to)
        process.join(120)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise RuntimeError(f"{r.run_dir}: a storm process hung for 120 s")
        return process.exitcode

    def op_classes(self, mode: str) -> Counter:
        """How many ops of each class an uninterrupted run in ``mode`` makes."""
        if mode not in self._traces:
            r = self._round("trace")
            trace = self.workdir / "trace.json"
            if self._run(r, MODES[mode], None, str(trace)) != 0:
                raise RuntimeError(f"the trace run of mode {mode!r} failed: {r.events()[-1:]}")
            self._traces[mode] = json.loads(trace.read_text())
        return Counter(op_class(*op) for op in self._traces[mode])

    def round(self, mode: str, tally: Tally, aim: str, max_kills: int) -> int:
        """One round in ``mode``; ``aim`` is "uniform" or "aimed". Returns the kills made."""
        self._rounds += 1
        r = self._round(f"round-{self._rounds}")
        label = f"round {self._rounds} ({mode}, {aim})"
        config = MODES[mode]
        classes = self.op_classes(mode) if aim == "aimed" else Counter()
        names = sorted(classes)
        kills = 0
        expected_resume = 0
        while True:
            fault = None
            if aim == "aimed" and kills < max_kills:
                name = self.random.choice(names)
                kind, where, thread = class_regex(name)
                fault = faultfs.Fault(kind, faultfs.KILL, nth=self.random.randint(1, min(4, classes[name])),
                                      where=where, thread=thread)
            seen = len(r.events())
            process = self._start(r, config, fault)
            if aim == "uniform" and kills < max_kills:
                # uniform over what an uninterrupted run from here would take
                left = 1 - expected_resume / (config.epochs * config.batches)
                process.join(self.random.uniform(0.0, self.duration * max(0.1, left)))
                if process.exitcode is None:
                    process.kill()
            process.join(120)
            if process.exitcode is None:
                process.kill()
                process.join()
                tally.fail("other", f"{label}: a process hung for 120 s")
                return kills
            new = r.events()[seen:]
            resumed = [int(value) for event, value in new if event == "resumed"]
            self.resumes += bool(kills and resumed)
            if resumed and resumed[0] != expected_resume:
                kind = "data_lost" if resumed[0] < expected_resume else "corrupt_resume"
                tally.fail(kind, f"{label}: resumed at step {resumed[0]}, the newest intact checkpoint was "
                                 f"{expected_resume}")
            errors = [json.loads(value) for event, value in new if event == "error"]
            if errors or process.exitcode not in (0, -9):
                tally.fail("other", f"{label}: exit {process.exitcode}: {errors[-1][-600:] if errors else ''}")
                return kills
            if process.exitcode == 0:
                self._check_end(r, tally, label)
                return kills
            kills += 1
            tally.tried += 1
            committed = [int(value) for event, value in r.events() if event == "committed"]
            intact = _intact_checkpoints(r.run_dir, tally, label)
            if committed and max(intact, default=-1) < max(committed):
                tally.fail("data_lost", f"{label}: after kill {kills} the newest intact checkpoint is "
                                        f"{max(intact, default=None)}, but step {max(committed)} had committed")
            expected_resume = max(intact, default=0)

    def _check_end(self, r: _Round, tally: Tally, label: str) -> None:
        failures = len(tally.failures)
        if r.out.read_bytes() != self.reference_params:
            tally.fail("other", f"{label}: the final parameters differ from an uninterrupted run's")
        got = _curves(r.run_dir)
        if got != self.reference_curves:
            differ = sorted(tag for tag in set(got) | set(self.reference_curves)
                            if got.get(tag) != self.reference_curves.get(tag))
            tally.fail("data_lost", f"{label}: the curves differ from an uninterrupted run's: {differ}")
        leftovers = [p.name for p in (r.run_dir / "checkpoints").iterdir() if "." in p.name]
        if leftovers:
            tally.fail("other", f"{label}: left behind {leftovers}")
        _intact_checkpoints(r.run_dir, tally, label)
        self.identical += len(tally.failures) == failures
        shutil.rmtree(r.run_dir.parent, ignore_errors=True)


SCALES = {"ci": {"uniform": 12, "aimed": 24}, "torture": {"uniform": 160, "aimed": 380}}


def memory_folder(fallback: Path) -> Path:
    """A new folder in ``/dev/shm`` (tmpfs) where there is one, else in ``fallback``. A SIGKILL
    kills the process, not the machine: what it wrote is in the page cache either way, so the
    storms lose nothing by running in memory, and skip the disk's fsyncs (90% of their time)."""
    import tempfile

    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="savegame-storm-", dir=shm))
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def kill_storms(workdir: Path, scale: str, seed: int) -> list[Tally]:
    """The kill storms on one run at ``scale``: a tally of uniform kills, one of aimed kills.
    ``workdir`` is used where no tmpfs is (:func:`memory_folder`); the folder is removed after."""
    folder = memory_folder(Path(workdir))
    try:
        return _kill_storms(folder, scale, seed)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _kill_storms(workdir: Path, scale: str, seed: int) -> list[Tally]:
    storm = Storm(workdir, seed)
    tallies = []
    for aim in ("uniform", "aimed"):
        tally = Tally(f"kill storm, one run: {aim}", "kills survived")
        goal, modes, n = SCALES[scale][aim], list(MODES), 0
        resumes, identical = storm.resumes, storm.identical
        while tally.tried < goal and tally.ok:
            storm.round(modes[n % len(modes)], tally, aim, max_kills=min(12, goal - tally.tried))
            n += 1
        tally.notes.append(f"{n} rounds over {len(modes)} save modes ({', '.join(modes)}); "
                           f"{storm.resumes - resumes} resumes after a kill; {storm.identical - identical} of {n} "
                           f"rounds ended with an uninterrupted run's parameters, bit for bit, and curves")
        if aim == "aimed":
            classes = sorted(set().union(*(storm.op_classes(m) for m in modes)))
            tally.notes.append(f"{len(classes)} classes of file op aimed at")
        tallies.append(tally)
    return tallies

