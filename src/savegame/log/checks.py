"""Argument checks that run on the caller, so a bad call fails where it was made.

Building a summary happens later on the log thread; an error found there could only be reported at
some later call. Everything cheap to check about shapes, types and optional packages is checked here.

>>> import numpy as np
>>> check_image("add_image", "x", np.zeros((3, 8, 8)), "CHW")
>>> check_image("add_image", "x", np.zeros((2, 3, 8, 8)), "CHW")
Traceback (most recent call last):
    ...
ValueError: add_image('x'): dataformats='CHW' expects a 3-d array (channel, height, width), got shape (2, 3, 8, 8); pass dataformats= to match your layout, e.g. 'NCHW' for a batch (with add_images)
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

_AXES = {"N": "batch", "C": "channel", "H": "height", "W": "width"}


def check_tag(method: str, tag: Any) -> None:
    if not isinstance(tag, str):
        raise TypeError(f"{method}(): the tag must be a str, got {type(tag).__name__} {tag!r}")


def check_subrun(method: str, name: str) -> None:
    """A sub-run's folder (``add_scalars``' ``<main_tag>_<tag>``, ``add_hparams``' ``run_name``) stays
    below the run folder: no ``..`` part, no absolute path, no NUL.

    >>> check_subrun("add_scalars", "loss_train/a")
    >>> check_subrun("add_scalars", "loss_/../../x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: add_scalars(): the sub-run folder 'loss_/../../x' would lie outside the run folder...
    """
    from .eventfile import outside_run

    if outside_run(name):
        raise ValueError(f"{method}(): the sub-run folder {name[:200]!r} would lie outside the run folder or "
                         "holds NUL; name it without '..' parts, a leading '/' or NUL (e.g. 'train')")


def check_step(method: str, step: Any) -> int:
    """The step as an int (TensorBoard's x axis); None is 0, as in torch's writer."""
    if step is None:
        return 0
    if isinstance(step, numbers.Integral):
        return int(step)
    if hasattr(step, "item") and getattr(step, "ndim", 1) == 0:  # a 0-d tensor or numpy integer
        value = step.item()
        if isinstance(value, int):
            return value
    if isinstance(step, float) and step.is_integer():
        return int(step)
    raise TypeError(f"{method}(): global_step must be an int, got {type(step).__name__} {step!r}")


def check_walltime(method: str, walltime: Any) -> float:
    """A caller-given wall time (seconds since the epoch) as an ``ExplicitTime`` float."""
    from .worker import ExplicitTime
    try:
        return ExplicitTime(walltime)
    except (TypeError, ValueError):
        raise TypeError(f"{method}(): walltime must be seconds since the epoch (a float, as "
                        f"time.time() gives), got {type(walltime).__name__} {walltime!r}") from None


def check_image(method: str, tag: str, image: Any, dataformats: str) -> None:
    """The shape rules of ``torch.utils.tensorboard``'s image conversion, as ValueErrors."""
    shape = tuple(getattr(image, "shape", ()))
    fmt = dataformats.upper() if isinstance(dataformats, str) else dataformats
    if (not isinstance(fmt, str) or len(set(fmt)) != len(fmt) or not set(fmt) <= set(_AXES)
            or not {"H", "W"} <= set(fmt)):
        raise ValueError(f"{method}({tag!r}): dataformats={dataformats!r} is not a layout; use letters "
                         "N (batch), C (channel), H (height), W (width) once each, e.g. 'CHW', 'HWC', "
                         "'HW', 'NCHW', 'NHWC'")
    if len(shape) != len(fmt):
        layout = ", ".join(_AXES[a] for a in fmt)
        raise ValueError(f"{method}({tag!r}): dataformats={dataformats!r} expects a {len(fmt)}-d array "
                         f"({layout}), got shape {shape}; pass dataformats= to match your layout, e.g. "
                         "'NCHW' for a batch (with add_images)")
    if "C" in fmt and shape[fmt.index("C")] not in (1, 3, 4):
        raise ValueError(f"{method}({tag!r}): with dataformats={dataformats!r} axis {fmt.index('C')} is the "
                         f"channel axis and must be 1, 3 or 4 long, got shape {shape}; check dataformats")
    dtype = str(getattr(image, "dtype", ""))
    if "complex" in dtype or dtype.endswith("str") or "object" in dtype:
        raise ValueError(f"{method}({tag!r}): images must be uint8 (0-255) or float (0-1), got {dtype}")


def check_audio(tag: str, sound: Any) -> None:
    shape = tuple(getattr(sound, "shape", ()))
    if len([n for n in shape if n != 1]) > 1:
        raise ValueError(f"add_audio({tag!r}): expected one channel of samples (a 1-d array, or (1, L)), "
                         f"got shape {shape}; log each channel under its own tag")


def check_histogram(tag: str, values: Any) -> None:
    count = values.numel() if hasattr(values, "numel") else np.size(values)
    if count == 0:
        raise ValueError(f"add_histogram({tag!r}): got no values; a histogram needs at least one")


def check_same_length(method: str, tag: str, **arrays: Any) -> None:
    lengths = {name: len(a) for name, a in arrays.items() if a is not None}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{method}({tag!r}): these must be equally long, got lengths {lengths}")
