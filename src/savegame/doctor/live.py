"""The doctor inside a training run: ``Run(..., doctor=True)`` or ``doctor=Doctor(...)``.

Every ``run.log`` value of a loss, accuracy or learning-rate tag (and the signals) is kept in
memory; each time a validation loss is logged, the same rules as ``savegame doctor`` judge the
curves so far. A verdict or finding not seen before is warned about once (``DoctorWarning``),
logged to TensorBoard (TEXT tab, tag ``doctor``) and written to ``doctor.json`` in the run
folder. An alarm other than ``diverged`` is raised only after 5 validations and once it held at
two validations in a row. On ``diverged`` (and, with ``overfit_patience``, on overfitting that
long past the validation minimum) the run is asked to stop: it saves first, so the keep policy still holds
the best checkpoint, ends the epoch loop, and marks the run ``stopped``.

>>> Doctor(overfit_patience=3).stop_reason("overfitting", validations_past_best=3)
'overfitting: 3 validations past the lowest validation loss (overfit_patience=3)'
>>> Doctor().stop_reason("diverged", validations_past_best=0)
'diverged'
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..messages import warn
from ._base import FindingRule, Verdict
from .curves import RunData, Series, _run_info, read_run
from .diagnosis import Diagnosis
from .tags import _role
from .verdicts import BUILTIN, is_alarm, verdict_table


MAX_KEPT = 200_000  # points kept per tag in memory before the older half is averaged in pairs
MIN_VALIDATIONS = 5  # before this many validations, only "diverged" warns or stops
ALARMS = tuple(v.name for v in BUILTIN if v.alarm)  # the built-in verdicts warned about (Verdict.alarm)


class DoctorWarning(UserWarning):
    """A new verdict or finding of the live doctor."""


@dataclass(kw_only=True)
class Doctor:
    """What the live doctor does.

    Attributes:
        every: sample the training signals (gradient norm and update/weight ratio per layer,
            dead ReLUs, non-finite gradients) every this many optimizer steps; 0 turns them off.
        stop_on_diverged: stop the run (after saving) when the loss diverges.
        stop_on_plateau: stop (after saving) when the loss stopped learning (``plateau``, held at two
            validations in a row after the first 5): what a sweep wants of a trial going nowhere.
        overfit_patience: stop once the validation loss has been this many validations past its
            minimum while the verdict is overfitting; None never stops for overfitting.
        train_tag / val_tag: the tags of the losses, when the names are not recognizable.
        classes: the number of classes, for the chance level ``ln C`` (default: the run's
            config ``num_classes``, or inferred; see ``savegame.doctor.quantities``).
        rules: verdicts and finding rules of your own (:class:`~savegame.doctor.Verdict`,
            :class:`~savegame.doctor.FindingRule`), judged with the built-in ones; a verdict of
            yours with ``alarm=True`` is warned about like the built-in alarms.
    """

    every: int = 50
    stop_on_diverged: bool = True
    stop_on_plateau: bool = False
    overfit_patience: int | None = None
    train_tag: str | None = None
    val_tag: str | None = None
    classes: int | None = None
    rules: Sequence[Verdict | FindingRule] = ()

    def __post_init__(self) -> None:
        verdict_table(self.rules)  # a malformed list fails here, not at the first validation
        if self.classes is not None and (isinstance(self.classes, bool) or not isinstance(self.classes, int)
                                         or self.classes < 2):
            raise ValueError(f"Doctor(classes=...) must be None or an int >= 2, but got {self.classes!r}")
        self.rules = tuple(self.rules)
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 0:
            raise ValueError(f"Doctor(every=...) must be an int >= 0 (0: no signals), but got {self.every!r}")
        if self.overfit_patience is not None and (isinstance(self.overfit_patience, bool)
                                                  or not isinstance(self.overfit_patience, int)
                                                  or self.overfit_patience < 1):
            raise ValueError("Doctor(overfit_patience=...) must be None or an int >= 1 (validations past the "
                             f"best one), but got {self.overfit_patience!r}")

    def stop_reason(self, verdict: str | None, *, validations_past_best: int) -> str | None:
        """Why to stop now, or None."""
        if verdict == "diverged" and self.stop_on_diverged:
            return "diverged"
        if verdict == "plateau" and self.stop_on_plateau:
            return "plateau: the loss stopped learning (stop_on_plateau)"
        if (verdict == "overfitting" and self.overfit_patience is not None
                and validations_past_best >= self.overfit_patience):
            return (f"overfitting: {validations_past_best} validations past the lowest validation loss "
                    f"(overfit_patience={self.overfit_patience})")
        return None


class LiveDoctor:
    """A Run's doctor: fed by ``run.log``, judges at each validation, asks the run to stop."""

    def __init__(self, config: Doctor, run_dir: Path, *, resumed_at: int | None,
                 write_text: Callable[[str, int], None], request_stop: Callable[[str, bool], None]) -> None:
        self.config = config
        self.dir = run_dir
        self._write_text = write_text
        self._request_stop = request_stop
        self._series: dict[str, tuple[list[int], list[Any]]] = {}
        self._resolved: dict[str, int] = {}  # per tag: values before this index are floats
        self._epoch_values: dict[str, list[Any]] = {}  # run.log(..., every_step=False): this epoch's
        self._roles: dict[str, str | None] = {}
        self._seen: set[str] = set()
        self.history: list[dict[str, Any]] = []
        self.last: Diagnosis | None = None
        self._previous: str | None = None  # the verdict of the previous validation
        self.seconds = 0.0  # time spent judging, for the benchmark
        if resumed_at is not None:  # the logs were just cut back to the checkpoint: the curves so far
            for tag, series in read_run(run_dir).scalars.items():
                if self._keeps(tag):
                    self._series[tag] = (series.steps.tolist(), series.values.tolist())
                    self._resolved[tag] = len(series)
            self.history = [h for h in _read_history(run_dir) if h.get("step", 0) <= resumed_at]
            for entry in self.history:  # what was warned about before is not warned again
                self._seen.add(f"verdict:{entry.get('verdict')}")
                self._seen.update(f"finding:{f.get('kind')}" for f in entry.get("findings", ()))

    def observe(self, values: Mapping[str, Any], step: int, *, every_step: bool = True,
                reduce: Any = None) -> None:
        """Values as ``run.log`` got them (floats, or host copies in flight for CUDA tensors).

        ``run.log(..., reduce="mean", every_step=False)`` values (a validation logged batch by
        batch) are averaged here and become one point, ``<tag>/epoch_mean`` as the run's logs
        name it, at :meth:`end_of_epoch`."""
        validation = False
        for tag, value in values.items():
            if not every_step:
                if reduce is not None and "mean" in (reduce if isinstance(reduce, tuple) else (reduce,)):
                    self._epoch_values.setdefault(f"{tag}/epoch_mean", []).append(value)
                continue
            if self._keeps(tag):
                self._append(tag, step, value)
                validation = validation or self._roles[tag] == "val_loss"
        if validation:
            self.check(step)

    def end_of_epoch(self, step: int) -> None:
        """The epoch means of the values logged with ``every_step=False``."""
        from ..log.host import resolve

        pending, self._epoch_values = self._epoch_values, {}
        validation = False
        for tag, values in pending.items():
            if self._keeps(tag):
                self._append(tag, step, float(np.mean([float(resolve(v)) for v in values])))
                validation = validation or self._roles[tag] == "val_loss"
        if validation:
            self.check(step)

    def check(self, step: int) -> Diagnosis:
        """Judge the curves now: warn, log and ask to stop as configured."""
        from .rules import diagnose

        started = time.perf_counter()
        # run.json as of the last save: the suggestions name the run's best checkpoint so far
        run = RunData(name=self.dir.name, path=self.dir, scalars=self._as_series(), info=_run_info(self.dir))
        diagnosis = diagnose(run, train_tag=self._known(self.config.train_tag),
                             val_tag=self._known(self.config.val_tag), rules=self.config.rules,
                             classes=self.config.classes)
        self.last = diagnosis
        early = self._validations(diagnosis) < MIN_VALIDATIONS and diagnosis.verdict != "diverged"
        # One noisy validation can look like a turn; an alarm (but divergence) must hold twice in a row.
        confirmed = diagnosis.verdict == "diverged" or diagnosis.verdict == self._previous
        self._previous = diagnosis.verdict
        if early:  # two points make no trend: only a divergence is worth an alarm this soon
            new = []
        else:
            new = [f"verdict:{diagnosis.verdict}"] if is_alarm(diagnosis) and confirmed else []
            new += [f"finding:{f.kind}" for f in diagnosis.findings if f.severity == "warn"]
        new = [key for key in new if key not in self._seen]
        if new:
            self._seen.update(new)
            self._warn(diagnosis, step, new)
        if diagnosis.verdict != (self.history[-1]["verdict"] if self.history else None) or new:
            self._record(diagnosis, step)
        reason = None if early or not confirmed else self.config.stop_reason(
            diagnosis.verdict, validations_past_best=self._past_best(diagnosis))
        self.seconds += time.perf_counter() - started
        if reason is not None:
            # a diverged state is not worth a save (it could push a good checkpoint out); overfitting is
            self._request_stop(f"the doctor stopped the run at step {step:,}: {reason}. {diagnosis.line()}",
                               diagnosis.verdict != "diverged")
        return diagnosis

    # -- internals ---------------------------------------------------------------------------
    def _keeps(self, tag: str) -> bool:
        role = self._roles.get(tag, "?")
        if role == "?":
            from .tags import words

            if tag in (self.config.train_tag, self.config.val_tag):
                role = "val_loss" if tag == self.config.val_tag else "train_loss"
            elif tag.startswith("doctor/"):
                role = "signal"
            else:
                role = _role(words(tag))[0]
            self._roles[tag] = role
        return role is not None

    def _known(self, tag: str | None) -> str | None:
        return tag if tag is not None and tag in self._series else None

    def _append(self, tag: str, step: int, value: Any) -> None:
        steps, values = self._series.setdefault(tag, ([], []))
        steps.append(step)
        values.append(value)
        if len(steps) > MAX_KEPT:
            self._compact(tag)

    def _compact(self, tag: str) -> None:
        """Memory stays bounded on long runs: the older half is averaged in pairs (the rules bucket
        long curves to 2,000 points anyway)."""
        self._resolve(tag)
        steps, values = self._series[tag]
        half = (len(steps) // 2) & ~1
        old_steps = np.asarray(steps[:half]).reshape(-1, 2)[:, 1].tolist()
        old_values = np.asarray(values[:half], dtype=np.float64).reshape(-1, 2).mean(axis=1).tolist()
        self._series[tag] = (old_steps + steps[half:], old_values + values[half:])
        self._resolved[tag] = len(self._series[tag][0])

    def _resolve(self, tag: str) -> None:
        from ..log.host import resolve

        values = self._series[tag][1]
        for i in range(self._resolved.get(tag, 0), len(values)):
            if not isinstance(values[i], float):
                values[i] = float(resolve(values[i]))  # a CUDA copy: done by now, or soon
        self._resolved[tag] = len(values)

    def _as_series(self) -> dict[str, Series]:
        from .curves import _clean

        out = {}
        for tag, (steps, values) in self._series.items():
            self._resolve(tag)
            out[tag] = _clean((steps, values), tag, [])
        return out

    def _val_steps(self, diagnosis: Diagnosis) -> np.ndarray:
        tag = diagnosis.tags.get("val_loss")
        return np.unique(self._series[tag][0]) if tag in self._series else np.zeros(0, dtype=np.int64)

    def _validations(self, diagnosis: Diagnosis) -> int:
        return len(self._val_steps(diagnosis))

    def _past_best(self, diagnosis: Diagnosis) -> int:
        low = diagnosis.marks.low_step
        return 0 if low is None else int(np.sum(self._val_steps(diagnosis) > low))

    def _warn(self, diagnosis: Diagnosis, step: int, new: list[str]) -> None:
        if f"verdict:{diagnosis.verdict}" in new:
            warn(f"savegame doctor at step {step:,}: {diagnosis.line()}"
                 + (f" Suggestion: {diagnosis.suggestions[0]}" if diagnosis.suggestions else ""),
                 DoctorWarning)
        for finding in diagnosis.findings:
            if f"finding:{finding.kind}" in new:
                warn(f"savegame doctor at step {step:,}: {finding.message}", DoctorWarning)

    def _record(self, diagnosis: Diagnosis, step: int) -> None:
        """A changed verdict or a new finding: into doctor.json and TensorBoard's TEXT tab."""
        from ..runinfo import write_json_atomic

        self.history.append({"step": step, "time": time.time(), **diagnosis.to_dict()})
        # atomic, not durable: two fsyncs per changed verdict cost the loop more than the doctor's judging,
        # and a doctor.json lost to a power cut is rebuilt by `savegame doctor` from the event files
        write_json_atomic(self.dir / "doctor.json", {"latest": self.history[-1], "history": self.history},
                          durable=False)
        self._write_text(to_markdown(diagnosis), step)


def _read_history(run_dir: Path) -> list[dict[str, Any]]:
    import json

    try:
        history = json.loads((run_dir / "doctor.json").read_text()).get("history", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []


def to_markdown(diagnosis: Diagnosis) -> str:
    """The diagnosis as TensorBoard's TEXT tab shows it."""
    if not diagnosis.judged:
        return f"**cannot judge**: {diagnosis.cannot_judge}"
    lines = [f"**{diagnosis.verdict}** (confidence {diagnosis.confidence:.0%})", ""]
    lines += [f"- {e}" for e in diagnosis.evidence]
    if diagnosis.suggestions:
        lines += ["", "What to do:"] + [f"- {s}" for s in diagnosis.suggestions]
    if diagnosis.findings:
        lines += ["", "Also noticed:"] + [f"- {f.message}" for f in diagnosis.findings]
    return "\n".join(lines)
