"""``Hook``: the protocol for things that watch a run — the live doctor, a sweep's pruner, your own.

Pass them as ``Run(dir, hooks=[...])``. A hook overrides the methods it needs; each gets the run,
so it can read ``run.step``, ``run.epoch``, ``run.config``, ``run.dir`` and ask the run to stop with
``run.request_stop(reason, save=True)``: the loops then end before the next batch, the run saves
(unless ``save=False``) and ``run.json`` says ``stopped`` with the reason.

The order of the calls, for one run:

* ``on_start(run)``: once the run has begun (a resume checked out, its logs cut back);
* ``on_track(run, name, obj)``: for each tracked object, also for those tracked before the start;
* ``on_log(run, values, step, every_step=, reduce=)``: each ``run.log`` and each
  ``run.writer.add_scalar`` (values as host floats, or host copies still in flight for CUDA
  tensors: resolve with ``float(v)`` only when you need it);
* ``on_epoch_end(run, step)``: after each epoch of ``run.epochs()``;
* ``on_save(run, checkpoint)``: each committed checkpoint (a ``CheckpointInfo``: step, metrics ...);
* ``on_finish(run, status)``: once, as the run ends (``finished``, ``failed``, ``preempted``, ``stopped``).

A hook that raises stops the run like any error in the loop: keep hooks cheap and careful.

>>> import tempfile, savegame
>>> class StopAtStep(savegame.Hook):
...     def on_log(self, run, values, step, *, every_step, reduce):
...         if step >= 3:
...             run.request_stop("enough", save=False)
>>> with savegame.Run(tempfile.mkdtemp(), hooks=[StopAtStep()], handle_signals=False) as run:
...     for x in run.iterate(range(10)):
...         run.log("x", float(x))
>>> run.step, run.should_stop
(3, 'enough')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from .checkpoint.layout import CheckpointInfo
    from .run import Run


class Hook:
    """Watches a run; every method is optional (the defaults do nothing)."""

    #: True for a hook that writes the run's hparams session itself (TensorBoard keeps a run's first
    #: one): the run then does not write its config as hparams when it begins. A sweep's trial
    #: does, at its end, with the state the trial ended in.
    writes_hparams: bool = False

    def on_start(self, run: "Run") -> None:
        """The run has begun: a resume checked out and its logs were cut back."""

    def on_track(self, run: "Run", name: str, obj: Any) -> None:
        """``run.track(name=obj)`` (called at the start for objects tracked before it)."""

    def on_log(self, run: "Run", values: Mapping[str, Any], step: int, *, every_step: bool,
               reduce: Any) -> None:
        """``run.log`` logged ``values`` (host values) at ``step``."""

    def on_epoch_end(self, run: "Run", step: int) -> None:
        """An epoch of ``run.epochs()`` ended."""

    def on_save(self, run: "Run", checkpoint: "CheckpointInfo") -> None:
        """A checkpoint committed."""

    def on_finish(self, run: "Run", status: str) -> None:
        """The run ends with ``status``."""


def check_hooks(hooks: Any) -> list[Hook]:
    """``Run(hooks=...)`` as a list, with a clear error for anything that is not a Hook."""
    hooks = list(hooks or ())
    for i, hook in enumerate(hooks):
        if not isinstance(hook, Hook):
            raise TypeError(f"Run(hooks=...) takes savegame.Hook objects, but item {i} is {hook!r}; "
                            "subclass savegame.Hook and override the on_... methods you need")
    return hooks
