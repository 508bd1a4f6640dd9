"""Sweeps (issue 13): savegame's sweep against plain Optuna, each number beside its anchor, in one run.

Every trial runs the same training: a small MLP (32 -> 256 -> 256 -> 10, Adam, batches of 64) on a
fixed random classification task, one torch thread per process, ``loss/val`` reported after each
epoch. The steps per epoch are set from the step time measured first, so a trial takes about the
same time on any machine.

1. Overhead per trial: ``savegame.sweep`` (each trial a Run folder with a checkpoint per epoch,
   the live doctor on, as by default) against a plain Optuna ``study.optimize`` loop running the
   same training with ``trial.report`` and no savegame. The fair anchor saves the model and the
   optimizer with its own ``torch.save`` at the same points (after each epoch); the anchor with
   no save at all is printed too. Same sampler (random, seed 0, so the same learning rates), same
   n_trials, both on Optuna's journal file storage (savegame's default). As the issue asks, both
   run at the same time: two long-lived processes, one per core, run savegame and the fair anchor
   side by side and swap cores every round, so that the noise of this shared machine (its step
   time moves by 20-40% from minute to minute) weighs on both; each round's ratio is taken between
   the two sweeps that ran together. Then the fair anchor beside the no-save one, for what
   torch.save itself costs. Goal: <= 5% over the torch.save anchor.
2. Parallel speed: the same sweep through the CLI, ``savegame sweep run SPEC.yaml`` with
   ``--workers 1`` and ``--workers 2`` (each worker one torch thread); trials per minute for the
   whole command (start-up included) and between the first trial's start and the last one's end,
   and the seconds before the first trial and after the last. The anchor, which shows how far the
   machine itself scales the same work: plain Optuna in 1 and 2 processes of ``study.optimize`` on
   one journal study (left out with --quick: every process start-up costs seconds). Three rounds,
   each running 1 and 2 processes back to back, in turn first; the median of the rounds' ratios
   (one run of each is at the mercy of this machine's noise: 1.43x and 1.81x came a few minutes
   apart). Goal: >= 1.6x with 2 workers.
3. Work redone after a SIGKILL: a sweep run through the CLI is killed (SIGKILL) in the middle of a
   trial's third epoch (its checkpoint at step 20 of 40 written), then the same command is run to
   the end. The training function appends a line per step it executes to a file, so the steps
   actually run are counted and compared with those a completed sweep needs. Beside it, what
   Optuna's ``RetryFailedTrialCallback`` would redo: it enqueues a killed trial's parameters as a
   new trial, which starts again from step 0, so every step the killed trial had done before the
   kill (counted in the same run) is done again. Goal: savegame redoes at most the steps since the
   killed trial's last checkpoint.

    python bench/bench_sweep.py           # about 7 min on 2 cores
    python bench/bench_sweep.py --quick   # smoke run: smaller trials, fewer, no anchor in 2 (< 60 s)
    python bench/bench_sweep.py --fixed-costs  # where the overhead goes: trials of one step (1 min)

The CLI runs import this file as the module ``bench_sweep`` (its ``train``), with bench/ on
PYTHONPATH.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from machine import machine  # noqa: E402

STEPS_ENV = "BENCH_SWEEP_STEPS"  # a file the train function appends one line per executed step to
LR = {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}
OBJECTIVE = {"metric": "loss/val", "direction": "minimize"}
INPUTS, HIDDEN, CLASSES, BATCH, BATCHES = 32, 256, 10, 64, 32
STEP_SECONDS = [0.0]  # the training step's time, measured first (main)
SAVE_SECONDS: dict[str, list[float]] = {"savegame": [], "torch": []}  # each checkpoint's time, this process


# ------------------------------------------------------------------------------- the training

class Work:
    """One trial's training, the same for savegame and the anchors: the model, its optimizer, the
    data (the same fixed random task for every trial; only the learning rate differs) and a step."""

    def __init__(self, config: dict[str, Any]) -> None:
        torch.set_num_threads(1)  # one thread per worker process, here and in the anchors
        generator = torch.Generator().manual_seed(0)
        inputs = torch.randn((BATCHES + 4) * BATCH, INPUTS, generator=generator)
        labels = (inputs @ torch.randn(INPUTS, CLASSES, generator=generator)).argmax(1)
        self.batches = list(zip(inputs[:BATCHES * BATCH].split(BATCH), labels[:BATCHES * BATCH].split(BATCH)))
        self.val_inputs, self.val_labels = inputs[BATCHES * BATCH:], labels[BATCHES * BATCH:]
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Linear(INPUTS, HIDDEN), torch.nn.ReLU(),
                                         torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(),
                                         torch.nn.Linear(HIDDEN, CLASSES))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config["lr"])
        self.sleep = config.get("sleep", 0.0)  # part 3 only: slows the step so the kill lands mid-epoch

    def step(self, index: int) -> None:
        inputs, labels = self.batches[index % len(self.batches)]
        loss = torch.nn.functional.cross_entropy(self.model(inputs), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.sleep:
            time.sleep(self.sleep)

    def val_loss(self) -> float:
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(self.model(self.val_inputs), self.val_labels))


class StepLog:
    """Appends ``trial-NNNN STEP`` for every step executed to the file named by $BENCH_SWEEP_STEPS
    (nothing when it is unset). Line-buffered: each line reaches the kernel before the next step
    starts, so a SIGKILL loses none of the steps that ran."""

    def __init__(self, trial: str) -> None:
        path = os.environ.get(STEPS_ENV)
        self.trial = trial
        self.file = open(path, "a", buffering=1) if path else None

    def record(self, step: int) -> None:
        if self.file is not None:
            self.file.write(f"{self.trial} {step}\n")

    def __enter__(self) -> StepLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.file is not None:
            self.file.close()


def train(config: dict[str, Any], run: Any) -> None:
    """The savegame trial (what ``savegame sweep run`` calls as ``bench_sweep:train``)."""
    work = Work(config)
    run.track(model=work.model, optimizer=work.optimizer)
    with StepLog(run.dir.name) as steps:
        for _ in run.epochs(config["epochs"]):
            for index in run.iterate(range(config["steps"])):
                work.step(index)
                steps.record(run.step)  # run.step counts this step already (1-based)
            run.log("loss/val", work.val_loss())
            started = time.perf_counter()
            run.save()
            SAVE_SECONDS["savegame"].append(time.perf_counter() - started)


def plain_objective(config: dict[str, Any], folder: Path | None):
    """The anchor: the same training in a plain Optuna objective, reporting the same metric at the
    same steps; with ``folder``, a torch.save of the model and optimizer after each epoch (where
    savegame checkpoints). Returns the best value, as a savegame trial's result is."""
    import optuna

    def objective(trial: Any) -> float:
        work = Work({**config, "lr": trial.suggest_float("lr", LR["low"], LR["high"], log=LR["log"])})
        best = math.inf
        for epoch in range(config["epochs"]):
            for index in range(config["steps"]):
                work.step(index)
            value = work.val_loss()
            best = min(best, value)
            trial.report(value, (epoch + 1) * config["steps"])
            if folder is not None:
                started = time.perf_counter()
                torch.save({"model": work.model.state_dict(), "optimizer": work.optimizer.state_dict(),
                            "epoch": epoch + 1}, folder / f"trial-{trial.number:04d}.pt")
                SAVE_SECONDS["torch"].append(time.perf_counter() - started)
            if trial.should_prune():  # a no-op with the NopPruner, but every real loop has it
                raise optuna.TrialPruned()
        return best

    return objective


def step_seconds(repeats: int = 200) -> float:
    """The median of three timings of ``repeats`` training steps, after a warm-up."""
    work = Work({"lr": 1e-2})
    for index in range(30):
        work.step(index)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        for index in range(repeats):
            work.step(index)
        times.append((time.perf_counter() - started) / repeats)
    return statistics.median(times)


# ------------------------------------------------------------------------- (1) overhead per trial

def savegame_sweep(config: dict[str, Any], n_trials: int, folder: Path) -> Any:
    import savegame

    return savegame.sweep(train, space={"lr": LR, **config}, objective=OBJECTIVE, n_trials=n_trials,
                          sampler="random", pruner="none", seed=0, dir=folder)


def optuna_sweep(config: dict[str, Any], n_trials: int, folder: Path, *, save: bool) -> Any:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # savegame's sweep sets the same
    storage = JournalStorage(JournalFileBackend(str(folder / "study.journal")))
    study = optuna.create_study(study_name="plain", storage=storage, direction="minimize",
                                sampler=optuna.samplers.RandomSampler(seed=0), pruner=optuna.pruners.NopPruner())
    study.optimize(plain_objective(config, folder if save else None), n_trials=n_trials)
    return study


VARIANTS = {  # what part (1) compares, by the name a child process is told
    "savegame": "savegame.sweep (Run folder, checkpoint per epoch, live doctor)",
    "fair": "Optuna study.optimize + torch.save per epoch (the fair anchor)",
    "bare": "Optuna study.optimize, no save",
}


def run_variant(variant: str, config: dict[str, Any], n_trials: int, folder: Path) -> Any:
    if variant == "savegame":
        return savegame_sweep(config, n_trials, folder)
    return optuna_sweep(config, n_trials, folder, save=variant == "fair")


def overhead_child(core: str) -> None:
    """A process of part (1), pinned to one core with one torch thread: it runs the sweeps it is
    told on stdin (one JSON line each: variant, config, n_trials, folder) and answers each with
    its wall time, the learning rates its trials sampled and its checkpoints' times."""
    import warnings

    import savegame

    os.sched_setaffinity(0, {int(core)})
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", savegame.DoctorWarning)  # its verdicts are not what is measured
    print("ready", flush=True)
    for line in sys.stdin:
        order = json.loads(line)
        folder = Path(order["folder"])
        folder.mkdir(parents=True)
        for kind in SAVE_SECONDS.values():
            kind.clear()
        gc.collect()
        started = time.perf_counter()
        study = run_variant(order["variant"], order["config"], order["n_trials"], folder)
        seconds = time.perf_counter() - started
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        shutil.rmtree(folder)
        print(json.dumps({"seconds": seconds, "states": [t.state.name for t in trials],
                          "lrs": [t.params["lr"] for t in trials], "saves": SAVE_SECONDS}), flush=True)


class OverheadChild:
    """One process of part (1) (``overhead_child``), on core ``core``."""

    def __init__(self, core: int) -> None:
        command = [sys.executable, "-c", "import sys, bench_sweep; bench_sweep.overhead_child(sys.argv[1])", str(core)]
        self.process = subprocess.Popen(command, env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        if self.process.stdout.readline().strip() != "ready":
            raise SystemExit("a part (1) process failed to start (its error is above)")

    def send(self, variant: str, config: dict[str, Any], n_trials: int, folder: Path) -> None:
        order = {"variant": variant, "config": config, "n_trials": n_trials, "folder": str(folder)}
        self.process.stdin.write(json.dumps(order) + "\n")
        self.process.stdin.flush()

    def receive(self, variant: str, n_trials: int) -> dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the part (1) process running {variant} died (its error is above)")
        result = json.loads(line)
        if result["states"] != ["COMPLETE"] * n_trials:
            raise SystemExit(f"{variant}: expected {n_trials} COMPLETE trials, got {result['states']}")
        return result

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def overhead(config: dict[str, Any], n_trials: int, rounds: int, work_dir: Path) -> None:
    """Part (1): savegame and the fair anchor run at the same time, one per core, in two
    long-lived processes (start-up and imports paid once, before the rounds); they swap cores
    every round, so a slower core or a noisy neighbour weighs on both. Every round's ratio is
    taken between the two sweeps that ran side by side. Then, the same way, the fair anchor
    against the anchor with no save, for what torch.save itself costs."""
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("part (1) runs two sweeps side by side, one per core: it needs 2 cores")
    cores = sorted(os.sched_getaffinity(0))[:2]
    children = [OverheadChild(core) for core in cores]
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    pairs: dict[tuple[str, str], list[float]] = {("savegame", "fair"): [], ("fair", "bare"): []}
    learning_rates: dict[str, list[float]] = {}
    saves: dict[str, list[float]] = {"savegame": [], "torch": []}
    try:
        for index, _ in enumerate(children):  # warm-up, untimed: the first torch ops, Optuna's first study
            for name in VARIANTS:
                children[index].send(name, config, 1, Path(tempfile.mkdtemp(dir=work_dir)) / "warm-up")
                children[index].receive(name, 1)
        plan = [("savegame", "fair")] * rounds + [("fair", "bare")] * max(2, rounds // 3)
        for index, pair in enumerate(plan):
            placed = pair if index % 2 == 0 else pair[::-1]  # swap cores every round
            for child, name in zip(children, placed):
                child.send(name, config, n_trials, Path(tempfile.mkdtemp(dir=work_dir)) / name)
            results = {name: child.receive(name, n_trials) for child, name in zip(children, placed)}
            for name, result in results.items():
                seconds[name].append(result["seconds"] / n_trials)
                learning_rates[name] = result["lrs"]
                for kind, values in result["saves"].items():
                    saves[kind] += values
            pairs[pair].append(results[pair[0]]["seconds"] / results[pair[1]]["seconds"] - 1)
    finally:
        for child in children:
            child.close()
    if len({tuple(values) for values in learning_rates.values()}) != 1:
        raise SystemExit(f"the variants did not sample the same learning rates: {learning_rates}")

    steps = config["epochs"] * config["steps"]
    print(f"\n## (1) per-trial overhead: sweeps of {n_trials} trials of {config['epochs']} epochs x {config['steps']} "
          f"steps = {steps} steps, random sampler seed 0 (the same learning rates in all), journal storage; "
          f"{rounds} rounds of savegame and the fair anchor run at the same time, one per core, swapping cores "
          f"each round (then {len(pairs['fair', 'bare'])} of the fair anchor beside the no-save one); "
          f"s per trial = the sweep's wall time / {n_trials}")
    print("| variant | s per trial (median) | each round |")
    print("|---|---|---|")
    for name, label in VARIANTS.items():
        print(f"| {label} | {statistics.median(seconds[name]):.3f} | {', '.join(f'{v:.3f}' for v in seconds[name])} |")
    over_fair = statistics.median(pairs["savegame", "fair"])
    mean_over = statistics.mean(pairs["savegame", "fair"])
    fixed = over_fair * statistics.median(seconds["fair"])  # seconds per trial, much the same whatever its length
    spread = ", ".join(f"{100 * r:+.1f}%" for r in pairs["savegame", "fair"])
    print(f"savegame over the torch.save anchor beside it (median of the rounds' ratios): {100 * over_fair:+.1f}% = "
          f"{1e3 * fixed:+.0f} ms per trial (goal <= 5%: {'met' if over_fair <= 0.05 else 'NOT met'}); "
          f"the mean of the rounds: {100 * mean_over:+.1f}% ({'met' if mean_over <= 0.05 else 'NOT met'}); "
          f"the rounds: {spread}")
    if fixed > 0:  # it comes per trial and per checkpoint, not per step: longer trials dilute it
        print(f"as a cost per trial with {config['epochs']} checkpoints, that is <= 5% for trials of "
              f">= {fixed / 0.05:.1f} s")
    save_cost = statistics.median(pairs["fair", "bare"])
    print(f"torch.save per epoch over no save at all (the fair anchor beside the bare one): {100 * save_cost:+.1f}%")
    ours_save, torch_save = (statistics.median(saves[kind]) for kind in ("savegame", "torch"))
    print(f"one checkpoint (median): savegame's run.save {1e3 * ours_save:.1f} ms (atomic and fsynced, with the RNG "
          f"and data position), the anchor's torch.save {1e3 * torch_save:.1f} ms (not fsynced); "
          f"x{config['epochs']} per trial: {1e3 * config['epochs'] * (ours_save - torch_save):.0f} ms of the difference")


# ------------------------------------------------------------------------------ the CLI's sweeps

def write_spec(path: Path, config: dict[str, Any], n_trials: int) -> None:
    """A sweep spec for ``savegame sweep run`` (JSON is YAML), training ``bench_sweep:train``."""
    spec = {"train": "bench_sweep:train", "objective": OBJECTIVE, "n_trials": n_trials, "sampler": "random",
            "seed": 0, "space": {"lr": LR, **config}}
    path.write_text(json.dumps(spec, indent=2))


def child_env(steps_file: Path | None = None) -> dict[str, str]:
    """The environment of a sweep process: bench/ on PYTHONPATH (it imports this file as
    ``bench_sweep``), one OpenMP thread, and the step log's path where one is wanted."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "OMP_NUM_THREADS": "1"}
    env.pop(STEPS_ENV, None)
    if steps_file is not None:
        env[STEPS_ENV] = str(steps_file)
    return env


def cli(spec: Path, sweep_dir: Path, *args: str, steps_file: Path | None = None) -> subprocess.Popen:
    """``python -m savegame.cli sweep run SPEC --dir SWEEPDIR ARGS`` in a new process; its output
    goes to a log file beside the spec, shown when it fails."""
    with open(spec.with_suffix(".log"), "a") as log:  # the child has its own copy of the file
        return subprocess.Popen([sys.executable, "-m", "savegame.cli", "sweep", "run", str(spec), "--dir",
                                 str(sweep_dir), *args], cwd=spec.parent, env=child_env(steps_file), stdout=log,
                                stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen, spec: Path, timeout: float = 600) -> None:
    if process.wait(timeout=timeout) != 0:
        raise SystemExit(f"`savegame sweep run` exited with {process.returncode}:\n"
                         f"{spec.with_suffix('.log').read_text()[-4000:]}")


def load_trials(sweep_dir: Path) -> list[Any]:
    """The trials of a sweep folder's study (Optuna's own API on its journal)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    name = json.loads((sweep_dir / "sweep.json").read_text())["name"]
    storage = JournalStorage(JournalFileBackend(str(sweep_dir / "study.journal")))
    return sorted(optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False),
                  key=lambda t: t.number)


def check_complete(trials: list[Any], n_trials: int, what: str) -> None:
    """n_trials trials numbered 0..n-1, all COMPLETE (surplus ones, asked and never run, aside)."""
    counted = [t for t in trials if not t.system_attrs.get("savegame:surplus")]
    if [t.number for t in counted] != list(range(n_trials)) or {t.state.name for t in counted} != {"COMPLETE"}:
        raise SystemExit(f"{what}: expected trials 0..{n_trials - 1} all COMPLETE, got "
                         f"{[(t.number, t.state.name) for t in counted]}")


# ------------------------------------------------------------------------------ (2) parallel speed

def optuna_worker(journal: str, n_trials: str, config: str) -> None:
    """One process of the plain Optuna anchor in (2): ``study.optimize`` with ``n_trials`` of its
    own on the study in ``journal`` (Optuna's way to run a study in several processes), training
    as ``plain_objective`` does, torch.save per epoch included."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(journal))
    study = optuna.load_study(study_name="plain", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0),
                              pruner=optuna.pruners.NopPruner())
    study.optimize(plain_objective(json.loads(config), Path(journal).parent), n_trials=int(n_trials))


def optuna_processes(config: dict[str, Any], n_trials: int, processes: int, folder: Path) -> list[Any]:
    """The anchor of (2): ``processes`` plain Optuna processes sharing one journal study, each
    with its share of ``n_trials``; the study's trials once all have ended."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal = folder / "study.journal"
    storage = JournalStorage(JournalFileBackend(str(journal)))
    optuna.create_study(study_name="plain", storage=storage, direction="minimize")  # made once, before the workers
    shares = [n_trials // processes + (k < n_trials % processes) for k in range(processes)]
    command = [sys.executable, "-c", "import sys, bench_sweep; bench_sweep.optuna_worker(*sys.argv[1:])"]
    children = [subprocess.Popen([*command, str(journal), str(share), json.dumps(config)], env=child_env())
                for share in shares]
    if any(child.wait(timeout=600) != 0 for child in children):
        raise SystemExit("a plain Optuna worker process failed (its error is above)")
    return sorted(optuna.load_study(study_name="plain", storage=storage).get_trials(deepcopy=False),
                  key=lambda t: t.number)


def parallel(config: dict[str, Any], n_trials: int, work_dir: Path, *, rounds: int = 3, anchor: bool = True) -> None:
    """Trials per minute with 1 and 2 processes: savegame's CLI (--workers N) and the plain Optuna
    anchor (N processes on one study), which shows how far this machine itself scales. ``rounds``
    rounds, each measuring 1 and 2 processes back to back (in turn first), so that each round's
    ratio compares two runs a minute apart; the median of the rounds' ratios is the result.
    Without ``anchor`` (--quick) only savegame's rows: each process start-up costs seconds here."""
    import datetime

    labels = {"savegame": "`savegame sweep run --workers N`",
              "optuna": "plain Optuna: N processes of study.optimize on one journal study, torch.save per epoch"}
    if not anchor:
        del labels["optuna"]
    rows: dict[tuple[str, int], list[dict[str, float]]] = {(who, n): [] for who in labels for n in (1, 2)}
    for index in range(rounds):
        for processes in (1, 2) if index % 2 == 0 else (2, 1):
            for who in labels:
                folder = Path(tempfile.mkdtemp(dir=work_dir))
                began, started = datetime.datetime.now(), time.perf_counter()  # Optuna's trial times are naive local
                if who == "savegame":
                    spec = folder / "parallel.yaml"
                    write_spec(spec, config, n_trials)
                    finish(cli(spec, folder / "sweep", "--workers", str(processes)), spec)
                    wall, ended = time.perf_counter() - started, datetime.datetime.now()
                    trials = load_trials(folder / "sweep")
                else:
                    trials = optuna_processes(config, n_trials, processes, folder)
                    wall, ended = time.perf_counter() - started, datetime.datetime.now()
                check_complete(trials, n_trials, f"{who} with {processes} process(es)")
                counted = [t for t in trials if not t.system_attrs.get("savegame:surplus")]
                first, last = min(t.datetime_start for t in counted), max(t.datetime_complete for t in counted)
                rows[who, processes].append({
                    "wall": wall, "whole": 60 * n_trials / wall, "busy": 60 * n_trials / (last - first).total_seconds(),
                    # each process's first trial also pays torch's first-use costs (its optimizer imports
                    # torch._dynamo): left out of the typical trial's time when later ones exist
                    "trial": statistics.median((t.datetime_complete - t.datetime_start).total_seconds() for t in
                                               (sorted(counted, key=lambda t: t.datetime_start)[processes:] or counted)),
                    "before": (first - began).total_seconds(), "after": (ended - last).total_seconds()})
                shutil.rmtree(folder)

    steps = config["epochs"] * config["steps"]
    print(f"\n## (2) parallel speed: {n_trials} trials of {steps} steps (~{steps * STEP_SECONDS[0]:.1f} s of training "
          f"each at the step time measured first), one torch thread per process, on {os.cpu_count()} cores; "
          f"{rounds} rounds of 1 and 2 processes back to back; each cell is the median of the rounds")
    print("| | processes | wall s | trials/min, whole command | trials/min, first trial's start -> last one's end "
          "| s before the first trial | s after the last | median s per trial (each process's first left out) |")
    print("|---|---|---|---|---|---|---|---|")
    for (who, processes), runs in rows.items():
        cell = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        print(f"| {labels[who]} | {processes} | {cell['wall']:.1f} | {cell['whole']:.1f} | {cell['busy']:.1f} | "
              f"{cell['before']:.1f} | {cell['after']:.1f} | {cell['trial']:.2f} |")

    def ratios(who: str, key: str) -> list[float]:
        return [two[key] / one[key] for one, two in zip(rows[who, 1], rows[who, 2])]

    whole, busy = (statistics.median(ratios("savegame", key)) for key in ("whole", "busy"))
    one, two = ({key: statistics.median(run[key] for run in rows["savegame", n]) for key in ("trial", "before", "after")}
                for n in (1, 2))
    # what bounds the ratio: each process pays the same fixed start (Python, torch, the study, torch's
    # first optimizer) and end, and two processes side by side each train slower than one alone
    machine_note = ""
    if anchor:
        alone, side = (statistics.median(run["trial"] for run in rows["optuna", n]) for n in (1, 2))
        machine_note = f" (the anchor's: {100 * (side / alone - 1):+.0f}%)"
    print(f"per trial, 2 workers side by side train {100 * (two['trial'] / one['trial'] - 1):+.0f}% slower than 1 alone"
          f"{machine_note}, so 2 x {one['trial']:.2f} / {two['trial']:.2f} = "
          f"{2 * one['trial'] / two['trial']:.2f}x is the most 2 workers can give here, reached only as trials grow "
          "long against each process's start")
    each = ", ".join(f"{r:.2f}x" for r in ratios("savegame", "whole"))
    print(f"savegame, 2 workers / 1 (median of the rounds' ratios): {whole:.2f}x for the whole command (goal >= 1.6x: "
          f"{'met' if whole >= 1.6 else 'NOT met'}; the rounds: {each}), {busy:.2f}x from the first trial's start to "
          "the last one's end")
    if anchor:
        print(f"the anchor, 2 processes / 1 (this machine's own scaling of the same work): "
              f"{statistics.median(ratios('optuna', 'whole')):.2f}x for the whole command, "
              f"{statistics.median(ratios('optuna', 'busy')):.2f}x from the first trial's start to the last one's end")
    else:
        print("the anchor (plain Optuna in 1 and 2 processes) is left out with --quick")


# ------------------------------------------------------------------------ (3) redone after a kill

def read_steps(path: Path) -> list[tuple[str, int]]:
    """The (trial, step) lines written so far; a line being written as it is read is left out."""
    if not path.exists():
        return []
    lines = path.read_text().split("\n")[:-1]  # the last piece has no newline yet, or is empty
    return [(trial, int(step)) for trial, step in (line.split() for line in lines)]


def redone_after_kill(config: dict[str, Any], n_trials: int, kill_at: int, work_dir: Path) -> None:
    folder = Path(tempfile.mkdtemp(dir=work_dir))
    spec, sweep_dir, steps_file = folder / "killed.yaml", folder / "sweep", folder / "steps.txt"
    write_spec(spec, config, n_trials)
    victim = "trial-0001"  # trial 0 ends before the kill (kept as it is), trial 1 is killed mid-way

    first = cli(spec, sweep_dir, steps_file=steps_file)
    deadline = time.monotonic() + 300
    while sum(trial == victim for trial, _ in read_steps(steps_file)) < kill_at:
        if first.poll() is not None:
            raise SystemExit(f"the sweep ended before the kill point:\n{spec.with_suffix('.log').read_text()[-4000:]}")
        if time.monotonic() > deadline:
            first.kill()
            raise SystemExit("the sweep did not reach the kill point in 300 s")
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = read_steps(steps_file)  # complete now: the process is gone
    done_before_kill = sum(trial == victim for trial, _ in before)

    finish(cli(spec, sweep_dir, steps_file=steps_file), spec)  # the same command, run again to the end
    executed = read_steps(steps_file)
    check_complete(load_trials(sweep_dir), n_trials, "the sweep run again after the kill")
    info = json.loads((sweep_dir / "trials" / victim / "run.json").read_text())
    if not info.get("resumes"):
        raise SystemExit(f"{victim} was not resumed: its run.json records no resume")
    resumed_from = info["resumes"][0]["from_step"]
    shutil.rmtree(folder)

    per_trial = config["epochs"] * config["steps"]
    needed = n_trials * per_trial
    redone = len(executed) - needed
    since_checkpoint = done_before_kill - resumed_from
    retry = done_before_kill  # a new trial from step 0 does again every step the killed one had done
    print(f"\n## (3) work redone after a SIGKILL: `savegame sweep run` with {n_trials} trials of {config['epochs']} "
          f"epochs x {config['steps']} steps, a checkpoint after each epoch; SIGKILL once {victim} had run "
          f"{kill_at} steps, then the same command again to the end")
    print(f"steps a completed sweep needs: {needed}; steps executed in all: {len(executed)} "
          f"({len(before)} before the kill, {len(executed) - len(before)} in the second run)")
    print(f"the killed trial: {done_before_kill} steps done before the kill; resumed from its checkpoint at step "
          f"{resumed_from} (its run.json), so {since_checkpoint} steps since that checkpoint")
    print(f"steps redone by savegame: {redone} (goal <= {since_checkpoint}, the steps since the killed trial's last "
          f"checkpoint: {'met' if 0 <= redone <= since_checkpoint else 'NOT met'})")
    ratio = f"{retry / redone:.1f}x savegame's" if redone else "savegame redid none"
    print(f"Optuna's RetryFailedTrialCallback (the killed trial's parameters enqueued as a new trial, started "
          f"from step 0; computed from this run, not run): would redo {retry} steps, {ratio}")


# --------------------------------------------------------------------- --fixed-costs: where it goes

def _train_without_saves(config: dict[str, Any], run: Any) -> None:
    """``train`` without its ``run.save()``: what the checkpoints cost, by difference."""
    work = Work(config)
    run.track(model=work.model, optimizer=work.optimizer)
    for _ in run.epochs(config["epochs"]):
        for index in run.iterate(range(config["steps"])):
            work.step(index)
        run.log("loss/val", work.val_loss())


def fixed_costs(n_trials: int = 15, rounds: int = 5) -> None:
    """Trials of one step per epoch, so that training costs next to nothing and only the fixed
    costs differ: savegame whole, without the doctor, without run.save, and the two anchors; ms
    per trial, the median of ``rounds`` rounds (in turn, in one process)."""
    import warnings

    import savegame

    config = {"epochs": 4, "steps": 1}

    def ours(train_function: Any, doctor: bool) -> Any:
        return lambda folder, n: savegame.sweep(train_function, space={"lr": LR, **config}, objective=OBJECTIVE,
                                                n_trials=n, sampler="random", pruner="none", seed=0, dir=folder,
                                                doctor=doctor)

    variants = {
        "savegame.sweep": ours(train, True),
        "savegame.sweep, doctor off": ours(train, False),
        "savegame.sweep, no run.save": ours(_train_without_saves, True),
        "Optuna study.optimize + torch.save per epoch": lambda folder, n: optuna_sweep(config, n, folder, save=True),
        "Optuna study.optimize, no save": lambda folder, n: optuna_sweep(config, n, folder, save=False),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as work, warnings.catch_warnings():
        warnings.simplefilter("ignore", savegame.DoctorWarning)
        for index in range(rounds + 1):
            for name, variant in variants.items():
                folder = Path(tempfile.mkdtemp(dir=work))
                started = time.perf_counter()
                variant(folder, 2 if index == 0 else n_trials)  # round 0: warm-up, untimed
                if index:
                    times[name].append(1e3 * (time.perf_counter() - started) / n_trials)
                shutil.rmtree(folder)
    print(f"\n## fixed costs: trials of 4 epochs x 1 step, {n_trials} trials, {rounds} rounds, ms per trial (median)")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.1f} |")


# ------------------------------------------------------------------------------------------ main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: smaller trials, fewer of them (< 60 s)")
    parser.add_argument("--fixed-costs", action="store_true",
                        help="only where the per-trial overhead goes: trials of one step, each part left out in turn")
    args = parser.parse_args()
    import optuna

    print(machine(optuna=optuna.__version__))
    torch.set_num_threads(1)
    if args.fixed_costs:
        fixed_costs()
        return
    step = STEP_SECONDS[0] = step_seconds(100 if args.quick else 200)
    epochs = 4
    # trial lengths (seconds) and counts for (1) and (2); the steps per epoch follow from the step time
    overhead_seconds, overhead_trials, rounds = (0.3, 2, 2) if args.quick else (1.0, 3, 16)
    parallel_seconds, parallel_trials, parallel_rounds = (0.2, 2, 1) if args.quick else (2.0, 8, 3)
    killed_trials = 2 if args.quick else 3  # trial 0 ends before the kill, trial 1 is killed, any later one runs after
    print(f"training step (MLP {INPUTS}-{HIDDEN}-{HIDDEN}-{CLASSES}, Adam, batch {BATCH}, 1 torch thread): "
          f"{step * 1e3:.2f} ms; {epochs} epochs per trial")

    def trial_config(seconds: float) -> dict[str, Any]:
        return {"epochs": epochs, "steps": max(5, round(seconds / (epochs * step)))}

    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as work:
        work_dir = Path(work)
        took = [time.perf_counter()]
        overhead(trial_config(overhead_seconds), overhead_trials, rounds, work_dir)
        took.append(time.perf_counter())
        parallel(trial_config(parallel_seconds), parallel_trials, work_dir, rounds=parallel_rounds,
                 anchor=not args.quick)
        if not args.quick:  # the same with trials 3x as long: how much of the gap is each process's fixed start
            parallel(trial_config(3 * parallel_seconds), parallel_trials, work_dir, rounds=1, anchor=False)
        took.append(time.perf_counter())
        # 4 epochs of 10 steps, each step slowed to >= 20 ms so that the kill, polled every 5 ms,
        # lands inside the third epoch (after the checkpoint at step 20): kill once 25 have run
        redone_after_kill({"epochs": 4, "steps": 10, "sleep": 0.02}, killed_trials, 25, work_dir)
        took.append(time.perf_counter())
        print(f"\n(the three took {', '.join(f'{b - a:.0f}' for a, b in zip(took, took[1:]))} s)")


if __name__ == "__main__":
    main()
