"""A sweep's spec: what to train, what to optimize, how to sample and prune, and the search space.

The YAML shape (``savegame sweep run SPEC.yaml``) and the keyword arguments of
``savegame.sweep(...)`` are the same spec; :func:`parse_spec` checks either and names the field
that is wrong, what was expected and how to fix it, before any trial starts.

>>> spec = parse_spec({"train": "mypkg.train:train", "objective": {"metric": "acc/val", "direction": "maximize"},
...                    "n_trials": 4, "space": {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
...                                             "opt": {"type": "categorical", "choices": ["adam", "sgd"]},
...                                             "epochs": 5}}, name="digits-lr")
>>> spec.name, spec.sampler, spec.pruner, sorted(spec.space), spec.constants
('digits-lr', 'tpe', 'none', ['lr', 'opt'], {'epochs': 5})
>>> parse_spec({"train": "m:f", "objective": {"metric": "loss/val"}, "space": {"lr": {"type": "float", "low": 1, "high": 0}}})
Traceback (most recent call last):
...
savegame.sweeps.spec.SpecError: space.lr: low (1) must be below high (0); swap them
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import SavegameError

__all__ = ["SweepSpec", "Param", "SpecError", "parse_spec", "load_spec", "spec_from_record", "SAMPLERS", "PRUNERS"]

SAMPLERS = ("grid", "random", "tpe", "cmaes")  # Optuna's
PRUNERS = ("none", "median", "asha", "hyperband")  # Optuna's
TYPES = ("float", "int", "categorical")
_MAX_NAME = 200  # bytes: a folder name (255 at most on most file systems), with room for suffixes
_MAX_SPEC = 1_000_000  # bytes of a YAML spec file
_MAX_GRID = 1_000_000  # values of one parameter the grid sampler may try: more is a step typed wrong
_MAX_NODES = 100_000  # values in a spec, aliases written out
KEYS = {"name", "train", "objective", "n_trials", "sampler", "pruner", "space", "seed", "doctor"}


class SpecError(SavegameError, ValueError):
    """The sweep spec is invalid: the message names the field and the fix."""


@dataclass(frozen=True)
class Param:
    """One searched parameter: ``float``/``int`` between ``low`` and ``high`` (``log``, ``step``),
    or ``categorical`` over ``choices``."""

    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any, name: str) -> Any:
        """The value of this parameter for an Optuna trial (the one already chosen, on a resume)."""
        if self.type == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_categorical(name, list(self.choices))

    def grid(self, name: str) -> list[Any]:
        """Every value the grid sampler tries."""
        if self.type == "categorical":
            return list(self.choices)
        if self.step is None:
            raise SpecError(f"space.{name}: the grid sampler needs a finite set of values; give a {self.type} "
                            "parameter a step (e.g. step: 0.01), or make it categorical with choices")
        count = (self.high - self.low) / self.step + 1e-9
        if not count < _MAX_GRID:
            raise SpecError(f"space.{name}: the grid sampler would try {count:.3g} values from {self.low:g} to "
                            f"{self.high:g} in steps of {self.step:g}, more than {_MAX_GRID:,}; use a larger step")
        count = int(math.floor(count)) + 1
        values = [self.low + i * self.step for i in range(count)]
        return [int(v) for v in values] if self.type == "int" else values


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep spec (see :func:`parse_spec`)."""

    name: str
    train: str | Callable[..., Any]     # "module:function", or the function itself (Python API)
    metric: str
    direction: str = "minimize"
    use: str = "best"                   # the trial's result: the metric's best value, or its last
    n_trials: int = 16
    sampler: str = "tpe"
    pruner: str = "none"
    space: Mapping[str, Param] = field(default_factory=dict)
    constants: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    doctor: bool = True                 # prune a trial the live doctor calls diverged

    def config(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's config: the constants with its sampled parameters."""
        return {**self.constants, **params}

    def fingerprint(self) -> dict[str, Any]:
        """What must not change between two runs of the same sweep folder (n_trials may)."""
        train = self.train if isinstance(self.train, str) else f"{self.train.__module__}:{self.train.__qualname__}"
        return {"train": train, "objective": {"metric": self.metric, "direction": self.direction, "use": self.use},
                "sampler": self.sampler, "pruner": self.pruner, "seed": self.seed, "doctor": self.doctor,
                "space": {k: {f: list(v) if isinstance(v, tuple) else v for f, v in asdict(p).items()
                              if f == "type" or not (v is None or v is False or v == ())}
                          for k, p in sorted(self.space.items())},
                "constants": dict(sorted(self.constants.items()))}


def spec_from_record(record: Mapping[str, Any]) -> SweepSpec:
    """The spec a sweep folder recorded (``sweep.json``), as a worker process reads it."""
    fingerprint = record["spec"]
    space = {name: {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in param.items()}
             for name, param in fingerprint["space"].items()}
    return parse_spec({"name": record["name"], "train": fingerprint["train"], "objective": fingerprint["objective"],
                       "n_trials": record["n_trials"], "sampler": fingerprint["sampler"],
                       "pruner": fingerprint["pruner"], "seed": fingerprint["seed"],
                       "doctor": fingerprint.get("doctor", True),
                       "space": {**fingerprint["constants"], **space}})


def load_spec(path: str | Path) -> SweepSpec:
    """The spec in a YAML file; its name defaults to the file's stem."""
    import yaml

    path = Path(path)
    try:
        if path.is_file() and (size := path.stat().st_size) > _MAX_SPEC:
            raise SpecError(f"{path} has {size:,} bytes; a sweep spec is a short YAML file (at most {_MAX_SPEC:,})")
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SpecError(f"cannot read the sweep spec {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise SpecError(f"{path} is not a text file (UTF-8): {error}; a sweep spec is YAML") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpecError(f"{path} is not valid YAML: {error}") from None
    except RecursionError:
        raise SpecError(f"{path} nests its YAML deeper than a sweep spec ever needs; it is not a spec") from None
    if not isinstance(data, Mapping):
        raise SpecError(f"{path} must hold a mapping (train:, objective:, space: ...), not {type(data).__name__}")
    _check_expansion(data, str(path))
    return parse_spec(data, name=path.stem, where=str(path))


def _check_expansion(data: Any, where: str, budget: int = _MAX_NODES) -> None:
    """Refuse a spec whose values, with aliases (``*name``) written out, exceed ``budget`` nodes:
    an alias repeats a value without copying it, so a few lines of anchors can stand for a value
    that fills memory when it is written to sweep.json (a "billion laughs"). The walk stops at the
    budget, so it never expands the value itself."""
    stack, seen = [data], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > budget:
            raise SpecError(f"{where}: its values, with the aliases (*name) written out, hold more than {budget:,} "
                            "items; a sweep spec is small: write it without nested aliases")
        if isinstance(node, Mapping):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def parse_spec(data: Mapping[str, Any], *, name: str | None = None, where: str = "the sweep spec") -> SweepSpec:
    """Check a spec given as a mapping (the YAML's, or ``sweep()``'s keyword arguments)."""
    unknown = sorted(map(str, set(data) - KEYS))
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {', '.join(unknown)}; the fields are {', '.join(sorted(KEYS))}")
    train = data.get("train")
    if callable(train):
        pass
    elif not isinstance(train, str) or ":" not in train or not all(train.split(":", 1)):
        raise SpecError(f"train: expected 'module:function' (e.g. mypkg.train:train), called as train(config, run); "
                        f"got {train!r}")
    metric, direction, use = _objective(data.get("objective"))
    n_trials = data.get("n_trials", 16)
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise SpecError(f"n_trials: expected a whole number >= 1, got {n_trials!r}")
    sampler = _choice("sampler", data.get("sampler", "tpe"), SAMPLERS)
    pruner = _choice("pruner", data.get("pruner", "none"), PRUNERS)
    space_data = data.get("space")
    if not isinstance(space_data, Mapping) or not space_data:
        raise SpecError("space: expected a mapping of parameter names to {type: float|int|categorical, ...} "
                        "(or constants), got " + repr(space_data))
    space, constants = {}, {}
    for key, value in space_data.items():
        if isinstance(value, Mapping):
            space[str(key)] = _param(str(key), value)
        else:
            constants[str(key)] = value
    if not space:
        raise SpecError("space: every entry is a constant; search at least one parameter "
                        "(e.g. lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true})")
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise SpecError(f"seed: expected a whole number or nothing, got {seed!r}")
    doctor = data.get("doctor", True)
    if not isinstance(doctor, bool):
        raise SpecError(f"doctor: expected true or false, got {doctor!r}")
    spec_name = data.get("name", name)
    if not isinstance(spec_name, str) or not spec_name or "/" in spec_name or "\0" in spec_name \
            or spec_name in (".", "..") or len(spec_name.encode("utf-8", "surrogateescape")) > _MAX_NAME:
        raise SpecError(f"name: expected a folder name (not . or .., without '/' or NUL, at most {_MAX_NAME} "
                        f"bytes: sweeps/<name> is its folder), got {str(spec_name)[:300]!r}")
    spec = SweepSpec(name=spec_name, train=train, metric=metric, direction=direction, use=use, n_trials=n_trials,
                     sampler=sampler, pruner=pruner, space=space, constants=constants, seed=seed, doctor=doctor)
    if sampler == "grid":
        for key, param in space.items():
            param.grid(key)  # raises for a continuous parameter
    return spec


def _finite(number: int | float) -> bool:
    try:
        return math.isfinite(number)  # float(number): an int past 1e308 overflows
    except OverflowError:
        return False


def _objective(value: Any) -> tuple[str, str, str]:
    if not isinstance(value, Mapping) or "metric" not in value:
        raise SpecError("objective: expected {metric: <a tag you log, e.g. acc/val>, direction: minimize|maximize}, "
                        f"got {value!r}")
    unknown = sorted(map(str, set(value) - {"metric", "direction", "use"}))
    if unknown:
        raise SpecError(f"objective: unknown field(s) {', '.join(unknown)}; the fields are metric, direction, use")
    metric = value["metric"]
    if not isinstance(metric, str) or not metric:
        raise SpecError(f"objective.metric: expected the tag of a logged value (e.g. acc/val), got {metric!r}")
    direction = _choice("objective.direction", value.get("direction", "minimize"), ("minimize", "maximize"))
    use = _choice("objective.use", value.get("use", "best"), ("best", "last"))
    return metric, direction, use


def _choice(field_name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise SpecError(f"{field_name}: expected one of {', '.join(allowed)}, got {value!r}")
    return value


def _param(key: str, value: Mapping[str, Any]) -> Param:
    where = f"space.{key}"
    kind = value.get("type")
    if kind not in TYPES:
        raise SpecError(f"{where}.type: expected one of {', '.join(TYPES)}, got {kind!r}")
    allowed = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log", "step"}
    unknown = sorted(map(str, set(value) - allowed))
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {', '.join(unknown)} for a {kind} parameter; "
                        f"its fields are {', '.join(sorted(allowed))}")
    if kind == "categorical":
        choices = value.get("choices")
        if not isinstance(choices, (list, tuple)) or not choices:
            raise SpecError(f"{where}.choices: expected a non-empty list of values, got {choices!r}")
        bad = [c for c in choices if c is not None and not isinstance(c, (bool, int, float, str))]
        if bad:
            raise SpecError(f"{where}.choices: each choice must be a number, string, bool or null, got {bad[0]!r}")
        return Param("categorical", choices=tuple(choices))
    bounds = []
    for bound in ("low", "high"):
        number = value.get(bound)
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not _finite(number):
            raise SpecError(f"{where}.{bound}: expected a finite number, got {number!r}")
        if kind == "int" and not float(number).is_integer():
            raise SpecError(f"{where}.{bound}: an int parameter needs whole bounds, got {number!r}")
        bounds.append(number)
    low, high = bounds
    if low >= high:
        raise SpecError(f"{where}: low ({low:g}) must be below high ({high:g}); swap them")
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise SpecError(f"{where}.log: expected true or false, got {log!r}")
    if log and low <= 0:
        raise SpecError(f"{where}: a log scale needs low > 0, got low {low:g}")
    step = value.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
            raise SpecError(f"{where}.step: expected a number > 0, got {step!r}")
        if log:
            raise SpecError(f"{where}: step and log cannot be combined (Optuna's rule); drop one")
    return Param(kind, low=low, high=high, log=log, step=step)
