"""``savegame preflight [TARGET]``: run the checks on the demo or on your own setup.

TARGET is ``demo`` (the default: the demo's CNN on the digits) or ``module:function``, a function
that takes no argument and returns ``(model, loss_fn, data)`` or a dict with those keys (plus any
``preflight()`` keyword, e.g. ``optimizer``). Exit 0 when no check failed, 1 when one did, 2 on
bad input.

    savegame preflight                          # the demo
    savegame preflight mypkg.train:setup --quick --json
    savegame preflight mypkg.train:setup --time-budget 60   # a big model: a minute per training check
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

from ..errors import SavegameError


class PreflightTargetError(SavegameError, ValueError):
    """TARGET cannot be imported or does not return a setup."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", nargs="?", default="demo", metavar="TARGET",
                        help="'demo' (default) or module:function returning (model, loss_fn, data)")
    parser.add_argument("--quick", action="store_true", help="only the cheap checks (a few seconds)")
    parser.add_argument("--gradcheck", action="store_true", help="also run gradcheck on custom modules")
    parser.add_argument("--steps", type=int, default=None, help="step budget of the training checks")
    parser.add_argument("--time-budget", type=_seconds, default=argparse.SUPPRESS, metavar="SECONDS",
                        help="seconds each training check may run (default 10; 'none': no limit)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _seconds(text: str) -> float | None:
    if text.strip().lower() in ("none", "inf", "unlimited"):
        return None
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0 or 'none', got {text!r}")
    return value


def load_target(target: str) -> dict[str, Any]:
    """``{"model": ..., "loss_fn": ..., "data": ..., **options}`` from ``demo`` or ``module:function``."""
    if target == "demo":
        from ..examples.digits import preflight_setup
        return preflight_setup()
    module_name, _, function_name = target.partition(":")
    if not module_name or not function_name:
        raise PreflightTargetError(f"TARGET {target!r} is not 'demo' nor module:function (e.g. train:setup)")
    sys.path.insert(0, "")  # the current folder, as `python -m` would
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise PreflightTargetError(f"cannot load {target}: {type(error).__name__}: {error}") from None
    result = function()
    if isinstance(result, dict) and {"model", "loss_fn", "data"} <= set(result):
        return dict(result)
    if isinstance(result, (tuple, list)) and len(result) == 3:
        return dict(zip(("model", "loss_fn", "data"), result))
    raise PreflightTargetError(f"{target}() returned {type(result).__name__}; expected (model, loss_fn, data) "
                               "or a dict with those keys")


def run(args: argparse.Namespace, console: Any) -> int:
    from . import preflight

    setup = load_target(args.target)
    options = {k: v for k, v in {"quick": args.quick, "gradcheck": args.gradcheck, "steps": args.steps}.items() if v}
    if hasattr(args, "time_budget"):  # not given: preflight's default
        options["time_budget"] = args.time_budget
    report = preflight(setup.pop("model"), setup.pop("loss_fn"), setup.pop("data"), **{**setup, **options})
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        console.print(report.table())
    return 0 if report.passed else 1
