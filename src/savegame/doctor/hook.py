"""The live doctor as a run hook: ``Run(dir, doctor=True)`` is ``Run(dir, hooks=[DoctorHook(Doctor())])``.

It reads the curves logged so far when the run starts (after a resume: the cut-back ones), feeds
every ``run.log`` to the :class:`LiveDoctor`, samples the training signals once the tracked
optimizer and the module it trains are known, and asks the run to stop through
``run.request_stop`` when the doctor says so.

>>> DoctorHook(Doctor(every=0)).last is None
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from ..hooks import Hook
from .live import Doctor, LiveDoctor

if TYPE_CHECKING:
    from ..run import Run
    from .diagnosis import Diagnosis


class DoctorHook(Hook):
    """Runs a :class:`Doctor` configuration live on a run."""

    def __init__(self, config: Doctor) -> None:
        self.config = config
        self.live: LiveDoctor | None = None
        self.signals: Any = None
        self._objects: dict[str, Any] = {}

    @property
    def last(self) -> "Diagnosis | None":
        """The latest diagnosis (None before the first validation)."""
        return self.live.last if self.live is not None else None

    def on_start(self, run: "Run") -> None:
        if not run.writer._writes():  # a silent rank (not rank 0) logs nothing to judge
            return
        self.live = LiveDoctor(self.config, run.dir, resumed_at=run.step if run.resumed_from is not None else None,
                               write_text=lambda text, step: run.writer.add_text("doctor", text, step),
                               request_stop=lambda reason, save: run.request_stop(reason, save=save))
        self._attach_signals(run)

    def on_track(self, run: "Run", name: str, obj: Any) -> None:
        self._objects[name] = obj
        self._attach_signals(run)

    def on_log(self, run: "Run", values: Mapping[str, Any], step: int, *, every_step: bool, reduce: Any) -> None:
        if self.live is not None and values:
            self.live.observe(values, step, every_step=every_step, reduce=reduce)

    def on_epoch_end(self, run: "Run", step: int) -> None:
        if self.live is not None:
            self.live.end_of_epoch(step)

    def on_finish(self, run: "Run", status: str) -> None:
        if self.signals is not None:
            self.signals.close()

    def _attach_signals(self, run: "Run") -> None:
        """Signals on the tracked optimizer and the tracked module it trains, once both are
        tracked (an EMA copy or a frozen teacher tracked first is skipped)."""
        if self.live is None or self.signals is not None or self.config.every == 0:
            return
        import torch

        optimizer = next((o for o in self._objects.values() if isinstance(o, torch.optim.Optimizer)), None)
        if optimizer is None:
            return
        trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
        model = next((o for o in self._objects.values() if isinstance(o, torch.nn.Module)
                      and any(id(p) in trained for p in o.parameters())), None)
        if model is None:
            return
        from .signals import Signals

        self.signals = Signals(model, optimizer, every=self.config.every, step=lambda: run.step,
                               log=lambda values, step: run.log(values, step=step))


def doctor_hooks(doctor: Any) -> list[Hook]:
    """``Run(doctor=...)`` as hooks: a ``DoctorHook`` for True or a ``Doctor``, none for False."""
    if doctor is False or doctor is None:
        return []
    if doctor is True:
        doctor = Doctor()
    if not isinstance(doctor, Doctor):
        raise TypeError(f"Run(doctor=...) takes True, False or a savegame.Doctor(...), but got {doctor!r}")
    return [DoctorHook(doctor)]
