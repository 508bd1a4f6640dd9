"""Cheap training signals, sampled every ``every`` optimizer steps: the gradient norm per layer,
the update-to-weight ratio per layer, the fraction of dead ReLU units and the number of
parameters with a non-finite gradient (the checks of cs231n and Karpathy's "recipe").

Hooks on the optimizer do the work, so the user's loop only gains two lines. Values reach
``log`` as 0-d tensors: nothing here copies a CUDA tensor to the host, the caller's logger does.

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
>>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
>>> logged = []
>>> signals = Signals(model, opt, every=2, log=lambda values, step: logged.append((step, values)))
>>> for _ in range(4):
...     opt.zero_grad()
...     model(torch.randn(16, 4)).pow(2).mean().backward()
...     opt.step()
>>> [step for step, _ in logged]
[2, 4]
>>> sorted(logged[0][1])[:4]
['doctor/dead_relu/1', 'doctor/grad_norm/0', 'doctor/grad_norm/2', 'doctor/grad_norm/total']
>>> signals.close()
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["Signals"]

LogFn = Callable[[dict[str, Any], int], None]
TINY = 1e-12  # keeps the update ratio finite for an all-zero layer
RELUS = (nn.ReLU, nn.ReLU6)
ROOT = "root"  # the layer name of parameters owned by the model itself (its qualified name is "")


class Signals:
    """Sample training signals every ``every`` optimizer steps and hand them to ``log``.

    ``log(values, step)`` receives ``{tag: value}`` once per sample, with the tags
    ``{prefix}/grad_norm/{layer}``, ``{prefix}/grad_norm/total``, ``{prefix}/update_ratio/{layer}``,
    ``{prefix}/dead_relu/{module}`` and ``{prefix}/nonfinite_grads``. A layer is the module that
    owns the parameters (weight and bias of one Linear together), named by its qualified name.
    ``step()`` gives the current global step (a Run's ``run.step``); samples are taken when it is
    a multiple of ``every``, so a resumed run samples the same steps as an uninterrupted one. By
    default the count of optimizer steps (1 after the first) is used.

    With torch's own writer: ``log=lambda values, step: [w.add_scalar(k, v, step) for k, v in
    values.items()]``. Call :meth:`close` to remove every hook.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, every: int = 50,
                 log: LogFn, step: Callable[[], int] | None = None, prefix: str = "doctor") -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"Signals(every=...) must be an int >= 1 (sample every N optimizer steps), "
                             f"but got {every=!r}; pass e.g. every=50.")
        if not callable(log):
            raise TypeError(f"Signals(log=...) must be a callable log(values, step), but got {log!r}; "
                            "pass e.g. log=lambda values, step: print(step, values).")
        if step is not None and not callable(step):
            raise TypeError(f"Signals(step=...) must be a callable returning the global step or None, "
                            f"but got {step!r}; pass e.g. step=lambda: run.step.")
        self._every = every
        self._log = log
        self._step_fn = step
        self._prefix = prefix
        self._count = 0

        owners = _owners(model)
        in_optimizer = [p for group in optimizer.param_groups for p in group["params"]]
        self._params = [p for p in dict.fromkeys(in_optimizer) if p in owners]
        if not self._params:
            raise ValueError("Signals(model, optimizer): none of the optimizer's parameters belongs to the "
                             "model, so there is nothing to watch; build the optimizer from "
                             "model.parameters() (or pass the model it trains).")
        self._layers = list(dict.fromkeys(owners[p] for p in self._params))
        self._layer_of = {p: self._layers.index(owners[p]) for p in self._params}

        self._relus = [(name, m) for name, m in model.named_modules() if isinstance(m, RELUS)]
        self._relu_handles: list[Any] = []
        self._dead: dict[str, torch.Tensor] = {}
        self._pending: dict[str, Any] | None = None  # a sample between the pre- and the post-hook
        self._handles = [optimizer.register_step_pre_hook(self._pre_step),
                         optimizer.register_step_post_hook(self._post_step)]
        if (self._now() + 1) % self._every == 0:  # the next step is a sample: watch its forward pass
            self._arm()

    def _now(self) -> int:
        # The caller's step when given (a Run's: a resumed run then samples the same steps as an
        # uninterrupted one), else this object's count of optimizer steps.
        return self._step_fn() if self._step_fn is not None else self._count

    # -- hooks -------------------------------------------------------------------------------

    def _pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._count += 1
        if self._now() % self._every:  # the common case: nothing else runs
            return
        with torch.no_grad():
            self._pending = self._measure_grads()

    def _post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            with torch.no_grad():
                self._finish(pending)
            self._disarm()  # also when a ReLU module never ran: its hook must not stay on forever
        if self._relus and (self._now() + 1) % self._every == 0:
            self._arm()

    # -- measuring ---------------------------------------------------------------------------

    def _measure_grads(self) -> dict[str, Any]:
        params = [p for p in self._params if p.grad is not None]
        values: dict[str, Any] = {}
        step = self._now()
        if not params:
            return {"values": values, "step": step, "params": [], "before": []}
        norms = _layer_norms([p.grad for p in params], [self._layer_of[p] for p in params], len(self._layers))
        per_tensor, per_layer, seen = norms
        pre = self._prefix
        for i in seen:
            values[f"{pre}/grad_norm/{self._layers[i]}"] = per_layer[i]
        values[f"{pre}/grad_norm/total"] = per_layer.square().sum().sqrt()
        # a NaN or inf anywhere in a gradient makes its norm non-finite: one check per tensor
        values[f"{pre}/nonfinite_grads"] = (~torch.isfinite(per_tensor)).sum()
        # one fused copy of the parameters: the post-hook turns it into the update
        before = torch._foreach_mul([p.detach() for p in params], 1.0)
        return {"values": values, "step": step, "params": params, "before": before}

    def _finish(self, pending: dict[str, Any]) -> None:
        values, params, before = pending["values"], pending["params"], pending["before"]
        if params:
            slots = [self._layer_of[p] for p in params]
            _, weight, seen = _layer_norms(before, slots, len(self._layers))
            torch._foreach_sub_(before, [p.detach() for p in params])  # before := before - after
            _, update, _ = _layer_norms(before, slots, len(self._layers))
            ratio = update / (weight + TINY)
            for i in seen:
                values[f"{self._prefix}/update_ratio/{self._layers[i]}"] = ratio[i]
        for name, dead in self._dead.items():
            values[f"{self._prefix}/dead_relu/{name}"] = dead
        self._dead = {}
        self._log(values, pending["step"])

    def _arm(self) -> None:
        """Hook every ReLU for the next forward pass in training mode (then the hooks go)."""
        if self._relu_handles:
            return
        for name, module in self._relus:
            self._relu_handles.append(module.register_forward_hook(self._relu_hook(name)))

    def _relu_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            # an evaluation pass between two steps says nothing about training: wait for the next one
            if not module.training or not isinstance(output, torch.Tensor) or output.dim() == 0:
                return
            with torch.no_grad():
                self._dead[name] = _dead_fraction(output)
            if len(self._dead) == len(self._relus):
                self._disarm()
        return hook

    def _disarm(self) -> None:
        for handle in self._relu_handles:
            handle.remove()
        self._relu_handles = []

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Remove every hook this object installed; calling it again does nothing."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._disarm()
        self._relus = []
        self._pending = None

    def __enter__(self) -> Signals:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _owners(model: nn.Module) -> dict[nn.Parameter, str]:
    """Each parameter's layer: the qualified name of the first module holding it directly."""
    owners: dict[nn.Parameter, str] = {}
    for name, module in model.named_modules():
        for param in module.parameters(recurse=False):
            owners.setdefault(param, name or ROOT)
    return owners


def _layer_norms(tensors: list[torch.Tensor], slots: list[int], n_layers: int
                 ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """``(norm per tensor, L2 norm per layer, layers present)`` with a handful of batched kernels.

    The norms are float32 so fp16 / bf16 gradients neither overflow nor lose the small ones.
    """
    device = tensors[0].device
    norms = torch._foreach_norm(tensors, 2, dtype=torch.float32)
    # a model spread over devices: bring the scalars to one (tiny, asynchronous copies)
    per_tensor = torch.stack([n.to(device, non_blocking=True) for n in norms])
    index = _index(tuple(slots), device)
    per_layer = torch.zeros(n_layers, dtype=torch.float32, device=device)
    per_layer.index_add_(0, index, per_tensor.square())
    return per_tensor, per_layer.sqrt(), sorted(set(slots))


@functools.lru_cache(maxsize=64)
def _index(slots: tuple[int, ...], device: torch.device) -> torch.Tensor:
    # the same parameters have grads at almost every sample: copy their layer index to the device once
    return torch.tensor(slots, device=device)


def _dead_fraction(output: torch.Tensor) -> torch.Tensor:
    """Fraction of units that are <= 0 for every sample: channels (dim 1) of a conv output
    ``(B, C, ...)``, features (last dim) of ``(B, F)``, elements of a 1-d output."""
    if output.dim() >= 3:
        alive = (output > 0).transpose(0, 1).flatten(1).any(dim=1)
    elif output.dim() == 2:
        alive = (output > 0).any(dim=0)
    else:
        alive = output > 0
    return 1.0 - alive.float().mean()
