"""Pickle-free codec: a state tree becomes a JSON tree plus a flat dict of named tensors.

``encode`` walks what ``state_dict()`` methods and RNG getters return (dicts with int keys,
tuples, ``torch.Size``, tensors, numpy arrays, ``inf`` ...) and produces a JSON-able tree in
which every tensor is replaced by a reference ``{"$tensor": "model/fc.weight"}``. ``decode``
reverses it exactly. Nothing is ever unpickled, so a checkpoint cannot run code when loaded.

Markers (JSON objects whose single key starts with ``$``) carry what JSON cannot:
``$float`` (nan/inf), ``$dict`` (non-str keys), ``$tuple``, ``$size``, ``$tensor``, ``$ndarray``,
``$np`` (numpy scalars), ``$bytes``, ``$dtype``, ``$device``.

``requires_grad`` is not stored: loaded tensors are plain tensors, which is what
``load_state_dict`` expects.

>>> import torch
>>> tree, tensors = encode({"w": torch.ones(2), "betas": (0.9, 0.999), 0: float("inf")})
>>> sorted(tensors)
['w']
>>> decode(tree, tensors)["betas"]
(0.9, 0.999)
"""

from __future__ import annotations

import base64
import math
from typing import Any, Callable, Mapping

import numpy as np
import torch

from savegame.errors import CheckpointCorruptError, NotSerializableError

__all__ = ["encode", "decode", "format_path", "SAFETENSORS_DTYPES"]

# torch dtype -> safetensors dtype string; built with getattr so older torch builds still import.
SAFETENSORS_DTYPES: dict[torch.dtype, str] = {
    getattr(torch, name): code
    for name, code in [
        ("float64", "F64"), ("float32", "F32"), ("float16", "F16"), ("bfloat16", "BF16"),
        ("int64", "I64"), ("int32", "I32"), ("int16", "I16"), ("int8", "I8"),
        ("uint64", "U64"), ("uint32", "U32"), ("uint16", "U16"), ("uint8", "U8"),
        ("bool", "BOOL"), ("complex64", "C64"),
        ("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2"),
        ("float8_e4m3fnuz", "F8_E4M3FNUZ"), ("float8_e5m2fnuz", "F8_E5M2FNUZ"),
    ]
    if hasattr(torch, name)
}

_ALLOWED = (
    "None, bool, int, float, str, bytes, list, tuple, dict, torch.Size, torch.Tensor, "
    "numpy arrays and scalars, torch.dtype and torch.device"
)
_MARKERS = frozenset(
    ["$float", "$dict", "$tuple", "$size", "$tensor", "$ndarray", "$np", "$bytes", "$dtype", "$device"]
)
_NP_SCALAR_KINDS = "biufc"  # bool, int, uint, float, complex
# Containers nested deeper are refused when saving: each level is up to 3 levels of JSON, and a
# manifest deeper than jsonread.MAX_DEPTH is read as damaged (a hostile one must not exhaust the stack).
MAX_NESTING = 32


def format_path(path: tuple) -> str:
    """Render a key path the way Python would index it: ``extras['paths'][2]``.

    >>> format_path(("extras", "paths", 2))
    "extras['paths'][2]"
    """
    if not path:
        return "<root>"
    head, *rest = path
    text = head if isinstance(head, str) else f"[{head!r}]"
    return text + "".join(f"[{key!r}]" for key in rest)


def _hint(value: Any) -> str:
    """A fix for the types people most often leave in their state."""
    import datetime
    import os

    if isinstance(value, os.PathLike):
        return "convert it with str(path) and back with Path(...) after loading"
    if isinstance(value, (datetime.datetime, datetime.date)):
        return "store value.isoformat() or value.timestamp() instead"
    if isinstance(value, (set, frozenset)):
        return "store sorted(value) (a list) instead"
    if isinstance(value, tuple):  # namedtuple and other tuple subclasses
        return "store value._asdict() or tuple(value) instead"
    if isinstance(value, bytearray):
        return "store bytes(value) instead"
    if callable(getattr(value, "state_dict", None)):
        return "store value.state_dict() and restore it with load_state_dict()"
    if callable(value):
        return "functions and classes cannot be saved; recreate them in code when resuming"
    return "convert it to one of those types (or give its class state_dict()/load_state_dict())"


def _not_serializable(value: Any, path: tuple, why: str | None = None) -> NotSerializableError:
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    reason = why or f"a {kind} is not one of the types a checkpoint holds ({_ALLOWED})"
    return NotSerializableError(f"Cannot save {format_path(path)}: {reason}. Fix: {_hint(value)}.")


def _enc_float(x: float) -> Any:
    if math.isfinite(x):
        return x  # json writes repr(float), which round-trips bit-exactly
    return {"$float": "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")}


_PLAIN = frozenset({bool, int, str, type(None)})  # values the encoder returns as they are


class _Encoder:
    def __init__(self, *, copy: bool, copier: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
                 seen_tensor: Callable[[str, torch.Tensor], None] | None = None) -> None:
        self.copy = copy
        self.copier = copier
        self.seen_tensor = seen_tensor
        self.tensors: dict[str, torch.Tensor] = {}
        # Tied weights: state_dict() returns a fresh detached object per key, so identity is not
        # enough; the same view of the same memory (pointer, shape, strides, dtype) is one tensor.
        self.seen: dict[tuple, str] = {}
        self.stack: set[int] = set()  # containers on the current path, to report cycles

    def name_for(self, path: tuple) -> str:
        base = "/".join(str(k) for k in path) or "tensor"
        name, n = base, 1
        # "__metadata__" is reserved by the safetensors header.
        while name in self.tensors or name == "__metadata__":
            n += 1
            name = f"{base}#{n}"
        return name

    def tensor(self, t: torch.Tensor, path: tuple) -> dict:
        if t.layout != torch.strided or t.is_quantized or t.is_nested or t.is_meta:
            kind = "nested" if t.is_nested else "quantized" if t.is_quantized else (
                "meta" if t.is_meta else str(t.layout))
            raise NotSerializableError(
                f"Cannot save {format_path(path)}: a {kind} tensor has no plain memory layout. "
                "Fix: convert it to a dense tensor first (t.to_dense(), t.dequantize(), or "
                "materialize meta tensors) before saving."
            )
        if t.dtype not in SAFETENSORS_DTYPES:
            raise NotSerializableError(
                f"Cannot save {format_path(path)}: dtype {t.dtype} is not supported by the "
                f"safetensors format (supported: {', '.join(sorted(map(str, SAFETENSORS_DTYPES)))}). "
                "Fix: convert it, e.g. a complex128 tensor with torch.view_as_real(t)."
            )
        key = (t.device, t.data_ptr(), t.dtype, tuple(t.shape), t.stride())
        out: dict[str, Any] = {"$tensor": self.seen.get(key)}
        if out["$tensor"] is None:
            name = self.name_for(path)
            if self.seen_tensor is not None:
                self.seen_tensor(name, t)  # the source, before the copy
            self.tensors[name] = self.copier(name, t) if self.copier is not None else _host_copy(t, copy=self.copy)
            self.seen[key] = out["$tensor"] = name
        if t.device.type != "cpu":
            out["device"] = str(t.device)
        return out

    def ndarray(self, a: np.ndarray, path: tuple) -> dict:
        if a.dtype.hasobject:
            raise _not_serializable(a, path, "a numpy array of Python objects (dtype=object) "
                                    "would need pickle")
        name = self.name_for(path)
        out: dict[str, Any] = {"$ndarray": name, "dtype": a.dtype.str}
        a = np.ascontiguousarray(a)
        try:
            t = torch.from_numpy(a) if a.dtype.isnative else None
        except TypeError:  # numpy dtypes torch has no twin for (str, datetime64, ...)
            t = None
        if t is None or t.dtype not in SAFETENSORS_DTYPES:
            # Store the raw bytes; dtype and shape in the tree make the round trip exact.
            t = torch.from_numpy(a.reshape(-1).view(np.uint8))
            out["shape"] = list(a.shape)
        self.tensors[name] = t.clone() if self.copy else t
        return out

    def __call__(self, x: Any, path: tuple = ()) -> Any:
        # Exact types: bool is an int and numpy's float64 is a float, and both must stay distinct.
        if x is None or type(x) in (bool, int, str):
            return x
        if type(x) is float:
            return _enc_float(x)
        if isinstance(x, torch.Tensor):
            return self.tensor(x, path)
        if isinstance(x, np.ndarray):
            return self.ndarray(x, path)
        if isinstance(x, np.generic):
            return _enc_np_scalar(x, path)
        if type(x) is bytes:
            return {"$bytes": base64.b64encode(x).decode("ascii")}
        if isinstance(x, torch.dtype):
            return {"$dtype": str(x).removeprefix("torch.")}
        if isinstance(x, torch.device):
            return {"$device": str(x)}
        if type(x) in (dict, list, tuple, torch.Size) or (
            isinstance(x, dict) and type(x).__module__ == "collections"  # OrderedDict
        ):
            if id(x) in self.stack:
                raise _not_serializable(x, path, "the structure contains itself (a cycle)")
            if len(path) >= MAX_NESTING:
                raise _not_serializable(x, path, f"it is nested more than {MAX_NESTING} containers deep, "
                                        "more than a checkpoint holds (flatten it, e.g. join nested keys)")
            self.stack.add(id(x))
            try:
                return self.container(x, path)
            finally:
                self.stack.discard(id(x))
        raise _not_serializable(x, path)

    def container(self, x: Any, path: tuple) -> Any:
        if isinstance(x, dict):
            if all(type(k) is str and not k.startswith("$") for k in x):
                return {k: self(v, path + (k,)) for k, v in x.items()}
            return {"$dict": [[self(k, path + (f"<key {k!r}>",)), self(v, path + (k,))]
                              for k, v in x.items()]}
        if all(type(v) in _PLAIN for v in x):  # Python's RNG state: 625 ints, a call each was 1 ms a save
            items = list(x)
        else:
            items = [self(v, path + (i,)) for i, v in enumerate(x)]
        if type(x) is list:
            return items
        return {"$size" if type(x) is torch.Size else "$tuple": items}


def _host_copy(t: torch.Tensor, *, copy: bool) -> torch.Tensor:
    # Conjugate/negative "views" keep unresolved memory; resolve so raw bytes mean what they say.
    t = t.detach().resolve_conj().resolve_neg()
    if t.device.type != "cpu":
        return t.to("cpu").contiguous()  # the transfer already is a private copy
    if copy:
        return t.clone(memory_format=torch.contiguous_format)
    return t.contiguous()


def _enc_np_scalar(x: np.generic, path: tuple) -> dict:
    dtype = x.dtype
    if dtype.kind not in _NP_SCALAR_KINDS or (dtype.kind == "f" and dtype.itemsize > 8) or (
        dtype.kind == "c" and dtype.itemsize > 16
    ):
        raise _not_serializable(x, path, f"numpy scalars of dtype {dtype} are not supported")
    if dtype.kind == "b":
        value: Any = bool(x)
    elif dtype.kind in "iu":
        value = int(x)
    elif dtype.kind == "f":
        value = _enc_float(float(x))  # float16/32 -> float64 is exact, and so is the way back
    else:
        value = [_enc_float(float(x.real)), _enc_float(float(x.imag))]
    return {"$np": dtype.name, "value": value}


def encode(tree: Any, *, copy: bool = False, copier: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
           seen_tensor: Callable[[str, torch.Tensor], None] | None = None) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split ``tree`` into a JSON-able tree and a dict of named, contiguous CPU tensors.

    Tensor names are the key paths joined with ``/`` (``optimizer/state/0/exp_avg``); a tensor
    reached twice (tied weights) is stored once and referenced twice. With ``copy=True`` every
    tensor is a private copy, so training may keep changing the originals (async saves);
    ``copier(name, tensor)``, when given, makes those copies instead (``HostBuffers.copy``).
    ``seen_tensor(name, tensor)`` is called with each original tensor (incremental saves note its
    version counter there, to skip comparing tensors an in-place op changed).
    Raises :class:`NotSerializableError` naming the key path of any value it cannot hold.

    >>> import torch
    >>> tree, tensors = encode({"state": {0: {"step": torch.tensor(3.0)}}})
    >>> tree
    {'state': {'$dict': [[0, {'step': {'$tensor': 'state/0/step'}}]]}}
    """
    encoder = _Encoder(copy=copy, copier=copier, seen_tensor=seen_tensor)
    return encoder(tree), encoder.tensors


def _corrupt(path: tuple, what: str) -> CheckpointCorruptError:
    return CheckpointCorruptError(
        f"The saved state at {format_path(path)} is damaged: {what}. The manifest was altered "
        "or written by an incompatible tool; restore this checkpoint from a backup or use another one."
    )


def _dec_float(x: Any, path: tuple) -> float:
    if isinstance(x, dict) and x.keys() == {"$float"} and x["$float"] in ("nan", "inf", "-inf"):
        return float(x["$float"])
    if type(x) in (int, float):
        return float(x)
    raise _corrupt(path, f"expected a float, found {x!r}")


def decode(tree: Any, tensors: Mapping[str, torch.Tensor], *, map_location: Any = None) -> Any:
    """Rebuild the original state from ``encode``'s output.

    Tensors come back on the CPU unless ``map_location`` names a device (``load_state_dict``
    moves them to the parameters' device anyway). Raises :class:`CheckpointCorruptError` for
    unknown markers or tensor names missing from ``tensors``.

    >>> import torch
    >>> tree, tensors = encode({(1, 2): torch.Size([3]), "lr": 0.1})
    >>> decode(tree, tensors)
    {(1, 2): torch.Size([3]), 'lr': 0.1}
    """
    device = torch.device(map_location) if map_location is not None else None
    try:
        return _Decoder(tensors, device)(tree, ())
    except RecursionError:  # a tree read from a file is bounded (jsonread); one built in memory may not be
        raise _corrupt((), f"it is nested deeper than a checkpoint holds ({MAX_NESTING} containers)") from None


class _Decoder:
    def __init__(self, tensors: Mapping[str, torch.Tensor], device: torch.device | None) -> None:
        self.tensors = tensors
        self.device = device
        self.moved: dict[str, torch.Tensor] = {}  # keeps tied tensors tied after .to(device)

    def tensor(self, name: Any, path: tuple) -> torch.Tensor:
        if not isinstance(name, str) or name not in self.tensors:
            raise _corrupt(path, f"it refers to tensor {name!r}, which the tensor file does not hold")
        if self.device is None:
            return self.tensors[name]
        if name not in self.moved:
            self.moved[name] = self.tensors[name].to(self.device)
        return self.moved[name]

    def __call__(self, x: Any, path: tuple) -> Any:
        if x is None or type(x) in (bool, int, float, str):
            return x
        if type(x) is list:
            return [self(v, path + (i,)) for i, v in enumerate(x)]
        if type(x) is not dict:
            raise _corrupt(path, f"unexpected JSON value {x!r}")
        marker = next((k for k in x if k.startswith("$")), None)
        if marker is None:
            return {k: self(v, path + (k,)) for k, v in x.items()}
        if marker not in _MARKERS:
            raise _corrupt(path, f"unknown marker {marker!r} (a newer savegame may have written it)")
        try:
            return self.marker(marker, x, path)
        except (TypeError, ValueError, KeyError, AttributeError, RuntimeError, OverflowError) as e:
            if isinstance(e, CheckpointCorruptError):
                raise
            raise _corrupt(path, f"malformed {marker} entry {str(x)[:200]} ({e})") from e

    def marker(self, marker: str, x: dict, path: tuple) -> Any:
        value = x[marker]
        if marker == "$float":
            return _dec_float(x, path)
        if marker == "$dict":
            return {self(k, path + ("<key>",)): self(v, path + ("<value>",)) for k, v in value}
        if marker == "$tuple":
            return tuple(self(v, path + (i,)) for i, v in enumerate(value))
        if marker == "$size":
            return torch.Size(value)
        if marker == "$tensor":
            return self.tensor(value, path)
        if marker == "$ndarray":
            if not isinstance(value, str) or value not in self.tensors:
                return self.tensor(value, path)  # raises the "missing tensor" error
            t, dtype = self.tensors[value], np.dtype(x["dtype"])  # numpy lives on the CPU
            if "shape" in x:
                return t.numpy().view(dtype).reshape(x["shape"])
            return t.numpy().view(dtype)
        if marker == "$np":
            dtype = np.dtype(value)
            if dtype.kind == "c":
                re, im = (_dec_float(v, path) for v in x["value"])
                return dtype.type(complex(re, im))
            if dtype.kind == "f":
                return dtype.type(_dec_float(x["value"], path))
            return dtype.type(x["value"])
        if marker == "$bytes":
            return base64.b64decode(value, validate=True)
        if marker == "$dtype":
            dtype = getattr(torch, value)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"{value!r} is not a torch dtype")
            return dtype
        return torch.device(value)  # $device
