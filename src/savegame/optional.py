"""The one way savegame imports an optional package: on first use, with an error that names the
feature and what to install (never a bare ``ModuleNotFoundError`` halfway through a run).

>>> require("json", "reading JSON", "json").__name__
'json'
>>> try:
...     require("no_such_package_xyz", "the demo", "'savegame[demo]'")
... except ImportError as error:
...     print(error)
the demo needs the optional package no_such_package_xyz (No module named 'no_such_package_xyz'); install it with: pip install 'savegame[demo]'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError


def require(module: str, feature: str, install: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingDependencyError` saying that ``feature`` needs
    it and to ``pip install <install>``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(f"{feature} needs the optional package {module.split('.')[0]} "
                                     f"({error}); install it with: pip install {install}") from None
