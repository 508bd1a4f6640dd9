"""Argument checks and flattening shared by the save and the keep policies."""

from __future__ import annotations

from typing import Any


def _positive(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{owner} needs {name} > 0, but got {name}={value!r}.")


def _positive_int(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner} needs an integer {name} >= 1, but got {name}={value!r}.")


def _check_mode(owner: str, mode: str) -> None:
    if mode not in ("min", "max"):
        raise ValueError(f"{owner} needs mode='min' (lower is better) or 'max', but got {mode=}.")



def _flat(kind: type, policy: Any) -> tuple:
    # a | b | c builds one AnyOf of three, so its state_dict keys do not depend on nesting
    return policy.policies if type(policy) is kind else (policy,)

