"""``Setup``: what every preflight check works from, built once from the user's arguments.

Checks never touch the user's objects: ``fresh_model()`` is a deep copy, ``fresh_optimizer()``
builds an optimizer of the user's kind and hyperparameters over a copy's parameters, and the
batches are the first few of the user's data, already on the device.

>>> import torch
>>> net = torch.nn.Linear(4, 3)
>>> data = [(torch.randn(8, 4), torch.randint(0, 3, (8,)))]
>>> setup = Setup.build(net, torch.nn.CrossEntropyLoss(), data)
>>> x, y = setup.split(setup.batches[0])
>>> setup.loss(setup.fresh_model(), setup.batches[0]).shape
torch.Size([])
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from .budget import TIME_BUDGET, Budget, check_interrupt

# Keys tried, in order, for the inputs and targets of a dict batch.
INPUT_KEYS = ("input", "inputs", "x", "image", "images", "input_ids", "data", "features")
TARGET_KEYS = ("target", "targets", "y", "label", "labels")


class SetupError(ValueError):
    """The arguments cannot be turned into a setup (an empty loader, a batch of unknown shape);
    ``preflight`` reports it as a failed "setup" check, never raises it."""


@dataclass
class Setup:
    model: nn.Module                      # the user's model: read, never trained or moved
    loss_fn: Callable[..., torch.Tensor]
    batches: list[Any]                    # the first few batches, on ``device``
    device: torch.device
    optimizer_factory: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
    forward: Callable[[nn.Module, Any], torch.Tensor] | None = None  # user's forward(model, batch) -> loss
    steps: int = 50                       # step budget of the training checks
    time_budget: float | None = TIME_BUDGET  # seconds each training check may run (None: no limit)
    keys: tuple[str, str] | None = None   # (input key, target key) for dict batches
    quick: bool = False

    @classmethod
    def build(cls, model: nn.Module, loss_fn: Callable, data: Iterable, *, optimizer: Any = None,
              steps: int | None = None, device: Any = None, forward: Callable | None = None,
              keys: tuple[str, str] | None = None, quick: bool = False, max_batches: int = 2,
              time_budget: float | None = TIME_BUDGET) -> "Setup":
        device = torch.device(device) if device is not None else _model_device(model)
        if time_budget is not None and not time_budget >= 0:
            raise SetupError(f"time_budget must be a number of seconds >= 0, or None for no limit; got {time_budget!r}")
        try:
            batches = []
            for batch in itertools.islice(iter(data), max_batches):
                batches.append(batch)
                check_interrupt()  # a slow loader: Ctrl-C stops after this batch
        except Exception as error:  # noqa: BLE001 - the loader itself is broken: say so
            raise SetupError(f"reading the first batches of the data failed: {type(error).__name__}: {error}") from error
        if not batches:
            raise SetupError("the data yielded no batch (an empty DataLoader or dataset); "
                             "check the dataset length and drop_last")
        return cls(model=model, loss_fn=loss_fn, batches=[to_device(b, device) for b in batches],
                   device=device, optimizer_factory=_optimizer_factory(optimizer),
                   forward=forward, steps=steps or (20 if quick else 50), keys=keys, quick=quick,
                   time_budget=time_budget)

    # -- copies ---------------------------------------------------------------------------
    def fresh_model(self) -> nn.Module:
        """A deep copy of the user's model on the device, in train mode."""
        model = copy.deepcopy(self.model).to(self.device)
        model.train()
        return model

    def fresh_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return self.optimizer_factory([p for p in model.parameters() if p.requires_grad])

    def budget(self) -> Budget:
        """The clock of one training check: ``time_budget`` seconds from now; asked between steps."""
        return Budget(self.time_budget)

    # -- batches --------------------------------------------------------------------------
    def split(self, batch: Any) -> tuple[Any, torch.Tensor]:
        """``(inputs, targets)`` of a ``(x, y)`` tuple/list or a dict batch; ``SetupError``
        for anything else (then pass ``forward=``)."""
        if isinstance(batch, (tuple, list)) and len(batch) >= 2:
            return batch[0], batch[1]
        if isinstance(batch, dict):
            x_key, y_key = self.keys or (_first_key(batch, INPUT_KEYS), _first_key(batch, TARGET_KEYS))
            if x_key in batch and y_key in batch:
                return batch[x_key], batch[y_key]
            raise SetupError(f"a dict batch with keys {sorted(batch)}: cannot tell inputs from targets; "
                             "pass keys=(input_key, target_key) or forward=")
        raise SetupError(f"a batch of type {type(batch).__name__} is not (inputs, targets) nor a dict; "
                         "pass forward=lambda model, batch: loss")

    def output(self, model: nn.Module, batch: Any) -> torch.Tensor:
        inputs, _ = self.split(batch)
        return model(inputs)

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The training loss of ``model`` on ``batch`` (the user's ``forward`` when given)."""
        if self.forward is not None:
            return self.forward(model, batch)
        inputs, targets = self.split(batch)
        return self.loss_fn(model(inputs), targets)

    @property
    def splittable(self) -> bool:
        try:
            self.split(self.batches[0])
            return True
        except SetupError:
            return False


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def _first_key(batch: dict, candidates: Sequence[str]) -> str:
    return next((k for k in candidates if k in batch), candidates[0])


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _optimizer_factory(optimizer: Any) -> Callable:
    """Adam by default; an instance gives its class and hyperparameters (the user's optimizer
    itself is never stepped); a callable is used as is."""
    if optimizer is None:
        return lambda params: torch.optim.Adam(params, lr=1e-3)
    if isinstance(optimizer, torch.optim.Optimizer):
        defaults = dict(optimizer.defaults)
        return lambda params: type(optimizer)(params, **defaults)
    if callable(optimizer):
        return optimizer
    raise SetupError(f"optimizer must be an optimizer, a factory params -> optimizer, or None; "
                     f"got {type(optimizer).__name__}")


# Known error texts from torch and what they usually mean, in the user's terms: (substring, hint).
_ERROR_HINTS = (
    ("is out of bounds", "a label is out of range: labels must be 0..C-1 for a model with C outputs "
                         "(1-based labels? subtract 1; more classes? widen the final layer)"),
    ("same device", "the model and the data are on different devices: move both with .to(device), "
                    "or pass device= to preflight"),
    ("expected device", "the model and the data are on different devices: move both with .to(device), "
                        "or pass device= to preflight"),
    ("multi-target not supported", "the targets have an extra dimension: CrossEntropyLoss wants class "
                                   "indices of shape (B,), e.g. y.squeeze(1)"),
    ("expected target dtype", "CrossEntropyLoss/NLLLoss want integer class labels: y.long()"),
    ("expected scalar type", "a dtype mismatch between the inputs and the model: convert the inputs, "
                             "e.g. x.float(), or the model, e.g. model.double()"),
    ("cannot be multiplied", "the input's feature size does not match the first layer's in_features"),
    ("must be the same as input size", "the output and the target shapes differ: reshape the output "
                                       "(out.squeeze(-1)) or the target to match"),
    ("does not require grad", "the loss is not connected to the model's parameters: remove .detach(), "
                              ".item() or torch.no_grad() in forward, and check that some parameters "
                              "have requires_grad=True"),
)


def explain_error(error: BaseException) -> str:
    """``"IndexError: Target 5 is out of bounds. — <likely cause and fix>"``: an exception in plain
    words, for a check's message.

    >>> explain_error(IndexError("Target 5 is out of bounds."))[:50]
    'IndexError: Target 5 is out of bounds. — a label i'
    """
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    head = f"{type(error).__name__}: {text}" if text else type(error).__name__
    for needle, hint in _ERROR_HINTS:
        if needle in str(error):
            return f"{head} — {hint}"
    return head
