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
   n_trials, both on Optuna's journal file storage (savegame's default); the three are run in
   rounds, in a rotating order, so that drifts of the machine hit all of them. Goal: <= 5% over
   the torch.save anchor.
2. Parallel speed: the same sweep through the CLI, ``savegame sweep run SPEC.yaml`` with
   ``--workers 1`` and ``--workers 2`` (each worker one torch thread); trials per minute for the
   whole command (start-up included) and between the first trial's start and the last one's end,
   and the seconds before the first trial and after the last. The anchor, which shows how far the
   machine itself scales the same work: plain Optuna in 1 and 2 processes of ``study.optimize`` on
   one journal study (left out with --quick: every process start-up costs seconds). Goal: >= 1.6x
   with 2 workers.
3. Work redone after a SIGKILL: a sweep run through the CLI is killed (SIGKILL) in the middle of a
   trial's third epoch (its checkpoint at step 20 of 40 written), then the same command is run to
   the end. The training function appends a line per step it executes to a file, so the steps
   actually run are counted and compared with those a completed sweep needs. Beside it, what
   Optuna's ``RetryFailedTrialCallback`` would redo: it enqueues a killed trial's parameters as a
   new trial, which starts again from step 0, so every step the killed trial had done before the
   kill (counted in the same run) is done again. Goal: savegame redoes at most the steps since the
   killed trial's last checkpoint.

    python bench/bench_sweep.py           # 3-3.5 min on 2 cores
    python bench/bench_sweep.py --quick   # smoke run: smaller trials, fewer, no anchor in 2 (< 60 s)

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


def overhead(config: dict[str, Any], n_trials: int, rounds: int, work_dir: Path) -> None:
    import warnings

    import savegame

    variants = {
        "savegame.sweep (Run folder, checkpoint per epoch, live doctor)": lambda folder, n: savegame_sweep(
            config, n, folder),
        "Optuna study.optimize + torch.save per epoch (the fair anchor)": lambda folder, n: optuna_sweep(
            config, n, folder, save=True),
        "Optuna study.optimize, no save": lambda folder, n: optuna_sweep(config, n, folder, save=False),
    }
    names = list(variants)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    learning_rates: dict[str, list[float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", savegame.DoctorWarning)  # its verdicts are not what is measured
        for name in names:  # warm-up, untimed: imports, the first torch ops, Optuna's first study
            folder = Path(tempfile.mkdtemp(dir=work_dir))
            variants[name](folder, 1)
            shutil.rmtree(folder)
        for index in range(rounds):
            for name in names[index % len(names):] + names[:index % len(names)]:  # rotating order
                folder = Path(tempfile.mkdtemp(dir=work_dir))
                gc.collect()
                started = time.perf_counter()
                study = variants[name](folder, n_trials)
                seconds[name].append((time.perf_counter() - started) / n_trials)
                trials = study.get_trials(deepcopy=False)
                if len(trials) != n_trials or {t.state.name for t in trials} != {"COMPLETE"}:
                    raise SystemExit(f"{name}: expected {n_trials} COMPLETE trials, got "
                                     f"{[t.state.name for t in trials]}")
                learning_rates[name] = [t.params["lr"] for t in sorted(trials, key=lambda t: t.number)]
                shutil.rmtree(folder)
    if len({tuple(values) for values in learning_rates.values()}) != 1:
        raise SystemExit(f"the variants did not sample the same learning rates: {learning_rates}")

    steps = config["epochs"] * config["steps"]
    print(f"\n## (1) per-trial overhead: sweeps of {n_trials} trials of {config['epochs']} epochs x {config['steps']} "
          f"steps = {steps} steps, random sampler seed 0 (the same learning rates in all three), journal storage; "
          f"{rounds} rounds, the three in a rotating order in each; s per trial = the sweep's wall time / {n_trials}")
    print("| variant | s per trial (median) | each round |")
    print("|---|---|---|")
    for name in names:
        print(f"| {name} | {statistics.median(seconds[name]):.3f} | {', '.join(f'{v:.3f}' for v in seconds[name])} |")
    # each round's ratio, to the anchor measured next to it, so that a drift between rounds cancels out
    ours, fair, bare = (seconds[name] for name in names)
    over_fair = statistics.median(o / f - 1 for o, f in zip(ours, fair))
    over_bare = statistics.median(o / b - 1 for o, b in zip(ours, bare))
    fixed = over_fair * statistics.median(fair)  # seconds per trial, much the same whatever the trial's length
    print(f"savegame over the torch.save anchor (median of the rounds' ratios): {100 * over_fair:+.1f}% = "
          f"{1e3 * fixed:+.0f} ms per trial (goal <= 5%: "
          f"{'met' if over_fair <= 0.05 else 'NOT met'})")
    if fixed > 0:  # it comes per trial and per checkpoint, not per step: longer trials dilute it
        print(f"as a cost per trial with {config['epochs']} checkpoints, that is <= 5% for trials of "
              f">= {fixed / 0.05:.1f} s")
    spread = (max(fair) - min(fair)) / statistics.median(fair)
    print(f"savegame over the no-save anchor: {100 * over_bare:+.1f}% = "
          f"{1e3 * over_bare * statistics.median(bare):+.0f} ms per trial; the rounds of the torch.save anchor "
          f"spread over {100 * spread:.0f}% of its median (the machine's noise)")
    ours_save, torch_save = (statistics.median(SAVE_SECONDS[kind]) for kind in ("savegame", "torch"))
    print(f"one checkpoint (median): savegame's run.save {1e3 * ours_save:.1f} ms (atomic and fsynced, with the RNG "
          f"and data position), the anchor's torch.save {1e3 * torch_save:.1f} ms; x{config['epochs']} per trial: "
          f"{1e3 * config['epochs'] * (ours_save - torch_save):.0f} ms of the difference")


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


def parallel(config: dict[str, Any], n_trials: int, work_dir: Path, *, anchor: bool = True) -> None:
    """Trials per minute with 1 and 2 processes: savegame's CLI (--workers N) and the plain Optuna
    anchor (N processes on one study), which shows how far this machine itself scales. Without
    ``anchor`` (--quick) only savegame's rows: each process start-up costs seconds here."""
    import datetime

    labels = {"savegame": "`savegame sweep run --workers N`",
              "optuna": "plain Optuna: N processes of study.optimize on one journal study, torch.save per epoch"}
    if not anchor:
        del labels["optuna"]
    rows: dict[tuple[str, int], dict[str, float]] = {}
    for processes in (1, 2):
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
            rows[who, processes] = {"wall": wall, "whole": 60 * n_trials / wall,
                                    "busy": 60 * n_trials / (last - first).total_seconds(),
                                    "trial": statistics.median((t.datetime_complete - t.datetime_start).total_seconds()
                                                               for t in counted),
                                    "before": (first - began).total_seconds(), "after": (ended - last).total_seconds()}
            shutil.rmtree(folder)

    steps = config["epochs"] * config["steps"]
    print(f"\n## (2) parallel speed: {n_trials} trials of {steps} steps (~{steps * STEP_SECONDS[0]:.1f} s of training "
          f"each at the step time measured first), one torch thread per process, on {os.cpu_count()} cores")
    print("| | processes | wall s | trials/min, whole command | trials/min, first trial's start -> last one's end "
          "| s before the first trial | s after the last | median s per trial |")
    print("|---|---|---|---|---|---|---|---|")
    for (who, processes), row in rows.items():
        print(f"| {labels[who]} | {processes} | {row['wall']:.1f} | {row['whole']:.1f} | {row['busy']:.1f} | "
              f"{row['before']:.1f} | {row['after']:.1f} | {row['trial']:.2f} |")
    ratio = {who: (rows[who, 2]["whole"] / rows[who, 1]["whole"], rows[who, 2]["busy"] / rows[who, 1]["busy"])
             for who in labels}
    whole, busy = ratio["savegame"]
    print(f"savegame, 2 workers / 1: {whole:.2f}x for the whole command (goal >= 1.6x: "
          f"{'met' if whole >= 1.6 else 'NOT met'}), {busy:.2f}x from the first trial's start to the last one's end")
    if anchor:
        print(f"the anchor, 2 processes / 1 (this machine's own scaling of the same work): {ratio['optuna'][0]:.2f}x "
              f"for the whole command, {ratio['optuna'][1]:.2f}x from the first trial's start to the last one's end")
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


# ------------------------------------------------------------------------------------------ main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: smaller trials, fewer of them (< 60 s)")
    args = parser.parse_args()
    import optuna

    print(machine(optuna=optuna.__version__))
    torch.set_num_threads(1)
    step = STEP_SECONDS[0] = step_seconds(100 if args.quick else 200)
    epochs = 4
    # trial lengths (seconds) and counts for (1) and (2); the steps per epoch follow from the step time
    overhead_seconds, overhead_trials, rounds = (0.3, 2, 2) if args.quick else (1.0, 3, 6)
    parallel_seconds, parallel_trials = (0.2, 2) if args.quick else (2.0, 8)
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
        parallel(trial_config(parallel_seconds), parallel_trials, work_dir, anchor=not args.quick)
        took.append(time.perf_counter())
        # 4 epochs of 10 steps, each step slowed to >= 20 ms so that the kill, polled every 5 ms,
        # lands inside the third epoch (after the checkpoint at step 20): kill once 25 have run
        redone_after_kill({"epochs": 4, "steps": 10, "sleep": 0.02}, killed_trials, 25, work_dir)
        took.append(time.perf_counter())
        print(f"\n(the three took {', '.join(f'{b - a:.0f}' for a, b in zip(took, took[1:]))} s)")


if __name__ == "__main__":
    main()
