"""Cheap training signals, sampled every ``every`` optimizer steps: the gradient norm per layer,
the update-to-weight ratio per layer, the fraction of dead ReLU units and the number of
parameters with a non-finite gradient (the checks of cs231n and Karpathy's "recipe").

Hooks on the optimizer do the work, so the user's loop only gains two lines. Values reach
``log`` as 0-d tensors: nothing here copies a CUDA tensor to the host, the caller's logger does.

Memory: the update ``||w_after - w_before||`` needs the weights from before the step, so a sample
copies at most ``update_sample`` elements (default :data:`UPDATE_SAMPLE`, 1,048,576: 4 MB in
float32), never every weight. The budget goes first to whole parameters, smallest first, while
they fit their share of it; each larger parameter gets an equal share of the rest, taken as a
fixed, evenly spread sample of its elements (one per stratum of the flattened tensor), and its
update norm is estimated from it (``sqrt(numel / sample * sum of squared sampled updates)``). A
model within the budget is measured exactly, as before; weight norms are always exact (norms
need no copy). Between the two hooks nothing else is kept but a few norms.

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

__all__ = ["Signals", "UPDATE_SAMPLE"]

LogFn = Callable[[dict[str, Any], int], None]
TINY = 1e-12  # keeps the update ratio finite for an all-zero layer
UPDATE_SAMPLE = 1 << 20  # elements of the weights copied per sample, at most (plus one per parameter)
_SPREAD = 40503  # a prime: moves each sampled element to another place within its stratum
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

    ``update_sample`` bounds the weights copied to measure the update ratios (see the module's
    docstring): a model with fewer weights is measured exactly, a larger one from a fixed sample
    of its large parameters' elements.
    """

    UPDATE_SAMPLE = UPDATE_SAMPLE

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, every: int = 50,
                 log: LogFn, step: Callable[[], int] | None = None, prefix: str = "doctor",
                 update_sample: int = UPDATE_SAMPLE) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"Signals(every=...) must be an int >= 1 (sample every N optimizer steps), "
                             f"but got {every=!r}; pass e.g. every=50.")
        if isinstance(update_sample, bool) or not isinstance(update_sample, int) or update_sample < 1:
            raise ValueError(f"Signals(update_sample=...) must be an int >= 1 (weights copied per sample, at "
                             f"most), but got {update_sample=!r}; pass e.g. update_sample={UPDATE_SAMPLE}.")
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
        # how many elements of each parameter a sample copies (its numel: the whole of it)
        self._sample = dict(zip(self._params, _sample_sizes([p.numel() for p in self._params], update_sample)))

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
        slots = [self._layer_of[p] for p in params]
        weights = [p.detach() for p in params]
        _, weight, seen = _layer_norms(weights, slots, len(self._layers))  # exact: a norm needs no copy
        # what the post-hook turns into the update: whole small parameters (one fused copy), a
        # bounded sample of the elements of each large one
        whole = [w for w, p in zip(weights, params) if self._sample[p] >= p.numel()]
        before = torch._foreach_mul(whole, 1.0) if whole else []
        parts = iter(before)
        before = [next(parts) if self._sample[p] >= p.numel() else torch.take(w, self._index(p))
                  for w, p in zip(weights, params)]
        return {"values": values, "step": step, "params": params, "slots": slots, "weight": weight,
                "seen": seen, "before": before}

    def _index(self, param: torch.Tensor) -> torch.Tensor:
        return _sample_index(param.numel(), self._sample[param], param.device)

    def _finish(self, pending: dict[str, Any]) -> None:
        values, params, before = pending["values"], pending["params"], pending["before"]
        if params:
            whole = [(b, p.detach()) for b, p in zip(before, params) if self._sample[p] >= p.numel()]
            if whole:
                torch._foreach_sub_([b for b, _ in whole], [a for _, a in whole])  # before := before - after
            for b, p in zip(before, params):
                if self._sample[p] < p.numel():
                    b.sub_(torch.take(p.detach(), self._index(p)))
            # a sample of k of a parameter's n elements stands for all of them: its squared norm x n/k
            scales = [p.numel() / self._sample[p] if self._sample[p] < p.numel() else 1.0 for p in params]
            _, update, _ = _layer_norms(before, pending["slots"], len(self._layers), scales)
            ratio = update / (pending["weight"] + TINY)
            for i in pending["seen"]:
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


def _layer_norms(tensors: list[torch.Tensor], slots: list[int], n_layers: int, scales: list[float] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """``(norm per tensor, L2 norm per layer, layers present)`` with a handful of batched kernels;
    ``scales`` multiply each tensor's squared norm in its layer's sum (a sample standing for more).

    The norms are float32 so fp16 / bf16 gradients neither overflow nor lose the small ones.
    """
    device = tensors[0].device
    norms = torch._foreach_norm(tensors, 2, dtype=torch.float32)
    # a model spread over devices: bring the scalars to one (tiny, asynchronous copies)
    per_tensor = torch.stack([n.to(device, non_blocking=True) for n in norms])
    index = _slot_index(tuple(slots), device)
    squares = per_tensor.square()
    if scales is not None and any(scale != 1.0 for scale in scales):
        squares = squares * _scale_tensor(tuple(scales), device)
    per_layer = torch.zeros(n_layers, dtype=torch.float32, device=device)
    per_layer.index_add_(0, index, squares)
    return per_tensor, per_layer.sqrt(), sorted(set(slots))


@functools.lru_cache(maxsize=64)
def _slot_index(slots: tuple[int, ...], device: torch.device) -> torch.Tensor:
    # the same parameters have grads at almost every sample: copy their layer index to the device once
    return torch.tensor(slots, device=device)


@functools.lru_cache(maxsize=64)
def _scale_tensor(scales: tuple[float, ...], device: torch.device) -> torch.Tensor:
    return torch.tensor(scales, dtype=torch.float32, device=device)  # the same at almost every sample too


def _sample_sizes(sizes: list[int], budget: int) -> list[int]:
    """Elements of each parameter to copy, ``budget`` in all (at least one each): whole parameters,
    smallest first, while they fit an equal share of what is left; an equal share for the rest.

    >>> _sample_sizes([10, 1000, 5, 1000], 500)
    [10, 242, 5, 243]
    """
    out = [0] * len(sizes)
    left, remaining = budget, len(sizes)
    for i in sorted(range(len(sizes)), key=sizes.__getitem__):
        out[i] = min(sizes[i], max(left // remaining, 1))
        left, remaining = max(left - out[i], 0), remaining - 1
    return out


def _sample_index(n: int, k: int, device: torch.device) -> torch.Tensor:
    """``k`` distinct flat indices spread over ``0..n-1``: one in each of ``k`` equal strata, at a
    fixed pseudo-random place in it, so rows and columns of a weight matrix are all represented.
    Deterministic (the pre- and the post-hook pick the same), and no random generator is touched.

    >>> _sample_index(10, 4, torch.device("cpu")).tolist()
    [0, 3, 5, 8]
    """
    i = torch.arange(k, device=device, dtype=torch.int64)
    return i * n // k + (i * _SPREAD) % max(n // k, 1)


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
