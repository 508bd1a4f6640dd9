"""What goes where when a checkpoint is loaded into live objects, decided before a byte is read.

Two questions, both answered from the manifest and the file's header alone:

* **Does the saved state fit the objects?** :func:`plan_load` lists every missing or unexpected
  key and every shape mismatch at once (or, with ``strict=False``, warns and keeps what fits);
  :func:`load_planned` then runs each object's ``load_state_dict`` on its part. ``savegame.load``
  and :class:`~savegame.checkpoint.restore.CheckpointReader` both load through these two.
* **Which saved tensor can be read straight into which live tensor?** :func:`_refs` and
  :func:`_top_level` tell which tensors each saved key refers to; :func:`_module_targets` and
  :func:`_optimizer_targets` pair saved tensors with a module's parameters and buffers or an
  optimizer's state, only where ``load_state_dict`` would copy them as they are;
  :func:`_plain_tensor` and :func:`_without_overlaps` keep only memory that takes the file's
  bytes unchanged, one saved tensor per live one.

>>> import torch
>>> net = torch.nn.Linear(2, 1)
>>> [(name, keys) for name, _, keys in plan_load("demo", {"model": net.state_dict()}, {"model": net}, strict=True)]
[('model', None)]
>>> sorted(key for _, _, key in _module_targets(net, net.state_dict(), None))
['bias', 'weight']
"""

from __future__ import annotations

from itertools import chain
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from savegame.checkpoint import codec
from savegame.errors import CheckpointCorruptError, StateMismatchError
from savegame.messages import warn

__all__ = ["plan_load", "load_planned"]

# Module classes whose _load_from_state_dict copies each tensor as is (the norms only add a
# missing num_batches_tracked, or refuse stray running stats).
_PLAIN_LOADS = tuple(
    cls._load_from_state_dict for cls in (nn.Module, nn.modules.batchnorm._NormBase,
                                          nn.modules.instancenorm._InstanceNorm)
)


def _module_problems(name: str, saved: Any, module: nn.Module) -> tuple[list[str], dict]:
    """Every key/shape difference between ``saved`` and ``module``, and the loadable subset."""
    if not isinstance(saved, Mapping):
        return [f"'{name}' was saved as a {type(saved).__name__}, not a module's state_dict"], {}
    want = module.state_dict()
    missing = [k for k in want if k not in saved]
    unexpected = [k for k in saved if k not in want]
    shapes, fits = [], {}
    for key in want:
        if key not in saved:
            continue
        a, b = saved[key], want[key]
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape != b.shape:
            shapes.append(f"{key}: saved {tuple(a.shape)}, model {tuple(b.shape)}")
        else:
            fits[key] = a
    problems = []
    if missing:
        problems.append(f"'{name}' missing keys (in the model, not saved): {', '.join(missing)}")
    if unexpected:
        problems.append(f"'{name}' unexpected keys (saved, not in the model): {', '.join(unexpected)}")
    if shapes:
        problems.append(f"'{name}' shape mismatches: {'; '.join(shapes)}")
    return problems, fits


def plan_load(source: str, state: Mapping[str, Any], into: Mapping[str, Any], *,
              strict: bool) -> list[tuple[str, Any, list[str] | None]]:
    """Check ``into`` against ``state`` before anything is loaded: ``[(name, object, keys)]``,
    where ``keys`` lists the module keys to load with ``strict=False`` (None: all of it).

    Raises :class:`StateMismatchError` listing every missing/unexpected key and shape mismatch,
    naming ``source``; with ``strict=False`` it warns instead. Module states only need shapes
    here, so ``state`` may hold meta tensors.
    """
    problems, plan = [], []
    for name, obj in into.items():
        if not callable(getattr(obj, "load_state_dict", None)):
            raise TypeError(f"into[{name!r}] is a {type(obj).__name__}, which has no load_state_dict().")
        if name not in state:
            problems.append(f"'{name}' is not in the checkpoint (it holds: {', '.join(map(str, state))})")
            continue
        if isinstance(obj, nn.Module):
            found, fits = _module_problems(name, state[name], obj)
            problems += found
            plan.append((name, obj, None if strict or not found else list(fits)))
        else:
            plan.append((name, obj, None))
    if problems and strict:
        raise StateMismatchError(
            f"{source} does not fit the objects it is loaded into:\n  " + "\n  ".join(problems) +
            "\nFix: build the objects exactly as when saving, or pass strict=False to load only what matches."
        )
    if problems:
        warn(f"Loading {source} with strict=False skipped:\n  " + "\n  ".join(problems))
    return plan


def load_planned(source: str, name: str, obj: Any, sub: Any, keys: list[str] | None, *, strict: bool) -> None:
    """``obj.load_state_dict`` of a planned entry; a failure names the object and the checkpoint."""
    try:
        if isinstance(obj, nn.Module):
            obj.load_state_dict(sub if keys is None else {k: sub[k] for k in keys}, strict=strict)
        else:
            obj.load_state_dict(sub)
    except (ValueError, KeyError, RuntimeError, TypeError) as e:
        raise StateMismatchError(f"Loading '{name}' from {source} failed: {e}") from e


def _refs(tree: Any) -> Iterator[tuple[str, str]]:
    """``(marker, tensor name)`` for every tensor an encoded tree refers to (see ``codec``)."""
    if type(tree) is list:
        for value in tree:
            yield from _refs(value)
    elif type(tree) is dict:
        for marker in ("$tensor", "$ndarray"):
            if marker in tree:
                if isinstance(tree[marker], str):  # else damaged: decoding names it
                    yield marker, tree[marker]
                return
        if "$dict" in tree:
            yield from _refs(tree["$dict"])
        elif "$tuple" in tree:
            yield from _refs(tree["$tuple"])
        elif not any(key.startswith("$") for key in tree):
            for value in tree.values():
                yield from _refs(value)


def _top_level(tree: Any) -> dict[Any, Any] | None:
    """The encoded tree's top-level entries by decoded key, or None if it is not a dict."""
    if type(tree) is dict and not any(key.startswith("$") for key in tree):
        return dict(tree)
    if type(tree) is dict and tree.keys() == {"$dict"} and type(tree["$dict"]) is list:
        try:
            return {codec.decode(key, {}): value for key, value in tree["$dict"]}
        except (CheckpointCorruptError, TypeError, ValueError):
            return None  # keys holding tensors, or a damaged tree: decoded whole instead
    return None


def _plain_tensor(t: Any, dtype: torch.dtype, shape: list[int]) -> bool:
    """Memory the file's bytes can be read into as they are, without any conversion."""
    return (type(t) in (torch.Tensor, nn.Parameter) and t.layout == torch.strided and t.dtype == dtype
            and list(t.shape) == shape and t.numel() > 0 and t.is_contiguous() and not t.is_inference()
            and not t.is_conj() and not t.is_neg() and t.device.type in ("cpu", "cuda"))


def _module_targets(module: nn.Module, saved: Any, keys: list[str] | None) -> Iterator[tuple[Any, Any, str]]:
    """``(saved placeholder, registered tensor, key)`` for keys whose loading is a plain copy."""
    if type(module).load_state_dict is not nn.Module.load_state_dict or not isinstance(saved, Mapping) \
            or torch.__future__.get_swap_module_params_on_conversion():
        return
    blocked = [prefix for prefix, m in module.named_modules()
               if m._load_state_dict_pre_hooks or type(m)._load_from_state_dict not in _PLAIN_LOADS]
    if "" in blocked:
        return
    mine = dict(chain(module.named_parameters(remove_duplicate=False), module.named_buffers(remove_duplicate=False)))
    for key in saved if keys is None else keys:
        if key in mine and not any(key.startswith(prefix + ".") for prefix in blocked):
            yield saved[key], mine[key], key


def _optimizer_targets(opt: torch.optim.Optimizer, saved: Any) -> Iterator[tuple[Any, Any, str]]:
    """``(saved placeholder, existing state tensor, key path)``, matched to parameters the way
    ``Optimizer.load_state_dict`` does (by position), when it would adopt the saved state."""
    if type(opt).load_state_dict is not torch.optim.Optimizer.load_state_dict \
            or opt._optimizer_load_state_dict_pre_hooks or not isinstance(saved, Mapping):
        return
    groups, saved_groups, state = opt.param_groups, saved.get("param_groups"), saved.get("state")
    if not isinstance(saved_groups, list) or len(saved_groups) != len(groups) or not isinstance(state, Mapping):
        return  # load_state_dict raises, as it would have: nothing may be touched before
    if not all(isinstance(s, Mapping) and isinstance(s.get("params"), list) and len(s["params"]) == len(g["params"])
               for s, g in zip(saved_groups, groups)):
        return
    id_map = dict(zip(chain.from_iterable(s["params"] for s in saved_groups),
                      chain.from_iterable(g["params"] for g in groups)))
    for k, entries in state.items():
        live = opt.state.get(id_map[k]) if k in id_map else None
        if isinstance(live, Mapping) and isinstance(entries, Mapping):
            for key, value in entries.items():
                yield value, live.get(key), f"['state'][{k!r}][{key!r}]"


def _without_overlaps(in_place: dict[str, tuple[torch.Tensor, list]]) -> dict:
    """Drop destinations whose memory overlaps another's (views into one buffer): those are
    loaded through fresh tensors, in ``load_state_dict``'s own order."""
    spans = sorted((t.data_ptr(), t.data_ptr() + t.numel() * t.element_size(), n) for n, (t, _) in in_place.items())
    bad, end, owner = set(), -1, None
    for start, stop, n in spans:
        if start < end:
            bad.update((n, owner))
        if stop > end:
            end, owner = stop, n
    return {n: v for n, v in in_place.items() if n not in bad}
