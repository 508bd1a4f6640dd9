"""Values the training thread hands to the writer, made safe to read later on another thread.

The caller must not wait for a GPU: a CUDA tensor is copied to pinned host memory with
``non_blocking=True`` and a CUDA event is recorded after the copy on the caller's current stream;
the writer thread polls the event (``query`` never synchronizes) and only then reads the copy.
A CPU tensor or numpy array is copied at once, because training mutates parameters in place right
after they are logged.

>>> import torch
>>> scalar_on_host(torch.tensor(2.5), "loss")
2.5
>>> host = tensor_on_host(torch.ones(3))
>>> resolve(host).tolist()
[1.0, 1.0, 1.0]
"""

from __future__ import annotations

import copy
import numbers
import time
from typing import Any

import numpy as np
import torch


class OnDevice:
    """A device tensor's host copy in flight; ``resolve`` waits for it on the writer thread."""

    __slots__ = ("_event", "_host")

    def __init__(self, tensor: torch.Tensor):
        # Pinned memory (non_blocking D2H allocates it) makes the copy truly asynchronous.
        self._host = tensor.detach().to("cpu", non_blocking=True)
        self._event = torch.cuda.Event()
        self._event.record()

    def resolve(self) -> torch.Tensor:
        while not self._event.query():
            time.sleep(0.0002)
        return self._host


def scalar_on_host(value: Any, tag: str) -> float | OnDevice:
    """A scalar for ``add_scalar``: a float now, or an ``OnDevice`` for a CUDA tensor."""
    if isinstance(value, torch.Tensor):
        if value.is_cuda:
            if value.numel() != 1:
                raise _not_one_value(tag, value)
            return OnDevice(value)
        # tolist(), not item() or float(): those release the GIL, and the log thread then holds
        # it for up to a switch interval (5 ms); tolist() keeps it (median ~0.7 µs either way).
        number = value.tolist()
        while type(number) is list:
            if len(number) != 1:
                raise _not_one_value(tag, value)
            number = number[0]
        if isinstance(number, complex):
            raise TypeError(f"add_scalar({tag!r}): got a complex tensor; log .real and .imag, or .abs()")
        return float(number)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray) and value.size == 1:
        return float(value.item())
    raise TypeError(f"add_scalar({tag!r}): expected a number or a one-element tensor, got "
                    f"{type(value).__name__}")


def _not_one_value(tag: str, value: torch.Tensor) -> ValueError:
    return ValueError(f"add_scalar({tag!r}): expected a single value, got a tensor of shape "
                      f"{tuple(value.shape)}; log a reduction such as .mean(), or use add_histogram "
                      "for many values")


def tensor_on_host(value: Any) -> Any:
    """A private copy of an argument, taken now: a tensor (CUDA: copied asynchronously), a numpy
    array, or a list/tuple/dict (a caller may reuse its buffer right after the call)."""
    if isinstance(value, torch.Tensor):
        if value.device.type == "cuda":
            return OnDevice(value)
        return value.detach().to("cpu", copy=True)
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (list, tuple, dict)):
        return copy.deepcopy(value)
    return value


def resolve(value: Any) -> Any:
    """On the writer thread: the host value behind ``value`` (waits for a device copy)."""
    return value.resolve() if isinstance(value, OnDevice) else value
