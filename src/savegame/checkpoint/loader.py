"""The data position inside an epoch, saved and restored without loading the skipped batches.

A resumed run must see the rest of the interrupted epoch in the same order, with the same random
augmentations, and must not spend an hour re-reading the batches it already trained on. For a
plain ``DataLoader`` over a map-style dataset this module iterates a shallow copy of the user's
loader whose batch sampler is wrapped:

* **Order.** At the start of each pass, just before the sampler draws its permutation, the wrapper
  records the generator states the sampler draws from. A resume puts them back, replays the
  sampler's index lists for the batches already done (cheap: indices only, no data), then restores
  the run's saved random state, so the next batch is loaded exactly as it would have been.
* **Worker randomness.** With ``num_workers > 0`` every batch is fetched with the worker's
  generators re-seeded from (pass, batch number), so a random crop no longer depends on which
  batches that worker happened to load before: a resumed pass gets the same crops.

torchdata's ``StatefulDataLoader`` (anything with ``state_dict``/``load_state_dict``) is trusted
with its own state. An ``IterableDataset`` cannot skip without reading, so it is replayed (with a
warning that says so).

>>> import torch
>>> from torch.utils.data import DataLoader
>>> loader = DataLoader(list(range(6)), batch_size=2, shuffle=True)
>>> tracker = LoaderTracker(loader)
>>> [b.tolist() for b in tracker.iterate()] != []
True
>>> tracker.state_dict()["batches"]
3
"""

from __future__ import annotations

import copy
import random
import signal
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import xxhash
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..messages import warn
from .rng import restore_rng


@dataclass(frozen=True)
class ResumePlan:
    """How to continue a pass: skip ``batches`` (all of them if ``done``), then restore ``rng``."""

    batches: int
    done: bool
    sampler_rng: dict[str, Any] | None
    loader_state: Any
    rng: dict[str, Any]


class LoaderTracker:
    """Counts the batches of one loader's current pass and can resume inside it."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.epoch: int | None = None  # the run's epoch when the current pass started
        self.batches = 0  # batches handed to the training loop in this pass
        self.done = False  # the pass ran to its end
        self.in_progress = False
        self._sampler_rng: dict[str, Any] | None = None
        self._plan: ResumePlan | None = None
        self._pending: ResumePlan | None = None  # the plan the sampler applies when its pass starts
        self._stateful = callable(getattr(loader, "state_dict", None)) and callable(
            getattr(loader, "load_state_dict", None)
        )
        self._replay = isinstance(loader, DataLoader) and isinstance(loader.dataset, IterableDataset)
        self._clone: DataLoader | None = None
        # A persistent-workers DataLoader draws its base seed from the random state once per
        # process, when it makes its iterator: in the run's first pass. A process that resumes
        # later makes it in a later pass, so that draw is undone before the pass records its state.
        self._undo_first_seed_draw = False
        self._before_iterator: dict[str, Any] | None = None
        if isinstance(loader, DataLoader) and not self._stateful and not self._replay:
            self._clone = _positioned_copy(loader, self)

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {"epoch": self.epoch, "batches": self.batches, "done": self.done,
                 "in_progress": self.in_progress, "sampler_rng": self._sampler_rng,
                 "length": _length(self.loader),  # for "resumed ... batch 30 of 45"
                 # where the loader's own generators are now: the next pass shuffles from here
                 "generators": _capture_generators(self.loader)}
        if self._stateful:
            state["loader_state"] = self.loader.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any], *, rng: dict[str, Any], continue_pass: bool) -> None:
        """Restore a saved tracker; with ``continue_pass`` the next pass resumes the saved one.

        ``rng`` is the run's random state at the save; it is restored again once the skipped
        batches have been passed over, because starting a pass draws random numbers.
        """
        _restore_generators(self.loader, state.get("generators") or {})
        self.epoch = state["epoch"]
        self._undo_first_seed_draw = state["epoch"] is not None
        if continue_pass:
            self._plan = ResumePlan(batches=state["batches"], done=state["done"],
                                    sampler_rng=state.get("sampler_rng"),
                                    loader_state=state.get("loader_state"), rng=rng)
        elif self._stateful and state.get("loader_state") is not None:
            self.loader.load_state_dict(state["loader_state"])

    # -- iteration ---------------------------------------------------------------------------
    def iterate(self, *, epoch: int = 0, before_batch: Callable[[], None] | None = None) -> Iterator[Any]:
        """Yield the batches of one pass; ``before_batch`` runs before each fetch (preemption)."""
        plan, self._plan = self._plan, None
        if plan is not None and plan.done:
            # This pass had already finished when the checkpoint was taken.
            self.epoch, self.batches, self.done, self.in_progress = epoch, plan.batches, True, False
            return
        self.epoch, self.batches, self.done, self.in_progress = epoch, 0, False, True
        if plan is not None:
            self.batches = plan.batches
        iterator = self._start(plan)
        while True:
            if before_batch is not None:
                before_batch()
            try:
                batch = next(iterator)
            except StopIteration:
                break
            self.batches += 1
            try:
                yield batch
            except GeneratorExit:
                # The loop broke out (``break``): the pass, and so the epoch, ends here. An error
                # in the loop body also closes the generator, but then the run fails unsaved.
                self.in_progress, self.done = False, True
                raise
        self.in_progress, self.done = False, True

    def _start(self, plan: ResumePlan | None) -> Iterator[Any]:
        if self._stateful:
            if plan is not None and plan.loader_state is not None:
                if getattr(self.loader, "num_workers", 0) > 0:
                    warn(
                        f"{type(self.loader).__name__} restores its position and order but not the "
                        "random state inside its worker processes: random augmentations done in "
                        "workers will differ from the interrupted run. For a bit-identical resume, "
                        "use a plain DataLoader with run.iterate().",
                    )
                self.loader.load_state_dict(plan.loader_state)
            iterator = iter(self.loader)
            if plan is not None:
                restore_rng(plan.rng)
            return iterator
        if self._clone is not None:
            self._pending = plan
            if self._undo_first_seed_draw and self._clone.persistent_workers and self._clone._iterator is None:
                self._before_iterator = _capture_torch_rng(self.loader)
            self._undo_first_seed_draw = False
            return iter(self._clone)
        return self._replay_iterator(plan)

    def _replay_iterator(self, plan: ResumePlan | None) -> Iterator[Any]:
        # Iterable datasets (and iterables that are not DataLoaders) can only skip by reading.
        if plan is not None and plan.batches:
            warn(
                f"resuming inside an epoch of {type(self.loader).__name__} over an iterable "
                f"dataset: reading {plan.batches} batches again to reach the saved position. "
                "Use torchdata's StatefulDataLoader to resume without re-reading.",
            )
        return self._begin_pass(plan, lambda: iter(self.loader))

    # Called by the wrapped batch sampler, lazily, when the sampler starts a pass.
    def _sampler_pass(self, inner: Any) -> Iterator[Any]:
        plan, self._pending = self._pending, None
        yield from self._begin_pass(plan, lambda: iter(inner))

    def _begin_pass(self, plan: ResumePlan | None, start: Callable[[], Iterator[Any]]) -> Iterator[Any]:
        """Record the generators a fresh pass starts from; or set them back, skip the batches
        already done (index lists for a sampler, whole batches for a replay) and restore the
        run's saved random state."""
        if self._before_iterator is not None:  # see _undo_first_seed_draw
            _restore_torch_rng(self.loader, self._before_iterator)
            self._before_iterator = None
        if plan is None:
            self._sampler_rng = _capture_torch_rng(self.loader)
            return start()
        if plan.sampler_rng is not None:
            _restore_torch_rng(self.loader, plan.sampler_rng)
        self._sampler_rng = plan.sampler_rng
        iterator = start()
        for _ in range(plan.batches):
            next(iterator, None)
        restore_rng(plan.rng)
        return iterator


# -- the wrapped copy of a plain DataLoader -------------------------------------------------
class _PositionedSampler:
    """Wraps the loader's batch sampler (or sampler): reports pass starts, tags worker seeds."""

    def __init__(self, inner: Any, tracker: LoaderTracker, *, tag: bool, batched: bool) -> None:
        self.inner, self.tracker, self.tag, self.batched = inner, tracker, tag, batched

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[Any]:
        passes = self.tracker._sampler_pass(self.inner)
        if not self.tag:
            yield from passes
            return
        key = None
        for number, item in enumerate(passes, start=self.tracker.batches):
            if key is None:  # the pass's random state is known once the pass has started
                key = _seed_key(self.tracker._sampler_rng)
            seed = xxhash.xxh64_intdigest(key + number.to_bytes(8, "little")) & (2**63 - 1)
            if self.batched:
                yield [_Tagged(i, seed if n == 0 else None) for n, i in enumerate(item)]
            else:
                yield _Tagged(item, seed)


@dataclass(frozen=True)
class _Tagged:
    index: Any
    seed: int | None


class _ReseedingDataset(torch.utils.data.Dataset):
    """In a worker, re-seeds python/numpy/torch at the first sample of each batch."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, tagged: Any) -> Any:
        if not isinstance(tagged, _Tagged):
            return self.inner[tagged]
        _reseed(tagged.seed)
        return self.inner[tagged.index]

    def __getitems__(self, tagged: list) -> list:
        if tagged and isinstance(tagged[0], _Tagged):
            _reseed(tagged[0].seed)
            tagged = [t.index for t in tagged]
        getitems = getattr(self.inner, "__getitems__", None)
        if getitems:
            return getitems(tagged)
        return [self.inner[i] for i in tagged]


class _IgnoreInterrupts:
    """Worker start-up: leave Ctrl-C to the main process, then run the user's own init.

    A terminal's Ctrl-C reaches the whole process group; a worker that died of it would break
    the batch the main process still needs while it finishes the step and saves. SIGTERM stays
    as it is: DataLoader's shutdown relies on terminating a worker that does not exit by itself.
    """

    def __init__(self, user_init: Callable[[int], None] | None) -> None:
        self.user_init = user_init

    def __call__(self, worker_id: int) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if self.user_init is not None:
            self.user_init(worker_id)


def _reseed(seed: int | None) -> None:
    if seed is None or get_worker_info() is None:
        return  # in the main process the run's own saved random state already covers loading
    random.seed(seed)
    torch.manual_seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed % 2**32)


def _positioned_copy(loader: DataLoader, tracker: LoaderTracker) -> DataLoader:
    # A shallow copy keeps every setting of the user's loader (and of a DataLoader subclass);
    # DataLoader forbids setting samplers after construction, hence object.__setattr__.
    clone = copy.copy(loader)
    tag = loader.num_workers > 0
    if loader.batch_sampler is not None:
        wrapped = _PositionedSampler(loader.batch_sampler, tracker, tag=tag, batched=True)
        object.__setattr__(clone, "batch_sampler", wrapped)
    else:
        wrapped = _PositionedSampler(loader.sampler, tracker, tag=tag, batched=False)
        object.__setattr__(clone, "sampler", wrapped)
    if tag:
        object.__setattr__(clone, "dataset", _ReseedingDataset(loader.dataset))
        object.__setattr__(clone, "worker_init_fn", _IgnoreInterrupts(loader.worker_init_fn))
    object.__setattr__(clone, "_iterator", None)
    return clone


def _length(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:  # an iterable dataset, a generator: no length
        return None


def _generators(loader: Any) -> dict[str, torch.Generator]:
    found: dict[str, torch.Generator] = {}
    for name, owner in (("loader", loader), ("sampler", getattr(loader, "sampler", None)),
                        ("batch_sampler", getattr(getattr(loader, "batch_sampler", None), "sampler", None))):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found.values()):
            found[name] = generator
    return found


def _capture_generators(loader: Any) -> dict[str, torch.Tensor]:
    return {name: generator.get_state() for name, generator in _generators(loader).items()}


def _restore_generators(loader: Any, state: dict[str, Any]) -> None:
    for name, generator in _generators(loader).items():
        if name in state:
            generator.set_state(state[name])


def _capture_torch_rng(loader: Any) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), **_capture_generators(loader)}


def _restore_torch_rng(loader: Any, state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    _restore_generators(loader, state)


def _seed_key(sampler_rng: dict[str, Any] | None) -> bytes:
    if sampler_rng is None:
        return b""
    digest = xxhash.xxh3_64()
    for name in sorted(sampler_rng):
        digest.update(name.encode())
        digest.update(sampler_rng[name].numpy().tobytes())
    return digest.digest()
