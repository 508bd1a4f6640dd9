"""Host values as torch's summary builders take them, and torch's writer defaults.

>>> import torch
>>> to_numpy(torch.ones(2, dtype=torch.bfloat16)).dtype
dtype('float32')
>>> len(default_bins())
1549
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

_bins: list[float] | None = None


def default_bins() -> list[float]:
    """torch's "tensorflow" bins: ±1e-12 growing by 1.1 up to 1e20, and 0."""
    global _bins
    if _bins is None:
        v, positive = 1e-12, []
        while v < 1e20:
            positive.append(v)
            v *= 1.1
        _bins = [-b for b in reversed(positive)] + [0] + positive
    return _bins


def to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        if value.dtype in (torch.bfloat16, torch.float16):
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def maybe_numpy(value: Any) -> Any:
    return None if value is None else to_numpy(value)


def to_tensor(value: Any) -> Any:
    return None if value is None else torch.as_tensor(value)


def to_list(value: Any) -> list:
    return value.tolist() if hasattr(value, "tolist") else list(value)


def summary_event(summary: Any) -> Any:
    from tensorboard.compat.proto.event_pb2 import Event
    return Event(summary=summary)


def embedding_folder_name(tag: str) -> str:
    # torch's escaping of an embedding tag into one folder name
    return tag.replace("%", "%25").replace("/", "%2f").replace("\\", "%5c")


