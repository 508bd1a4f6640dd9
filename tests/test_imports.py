"""No module of savegame imports another in a circle, and the commands that only read stay torch-free.

The graph is read from the source with ``ast`` (nothing is imported: a circle can make an import
fail, and the test must still name it). Its nodes are the modules under ``src/savegame``, found
the way ``pkgutil.walk_packages`` finds them (a package is its ``__init__``). ``A -> B`` when
running A's code can import B:

* **Every import statement counts**, at module level or inside a function, method, class or
  ``try``: a function's import runs when it is called, so a circle through one is still a circle
  (one refactor away from an ImportError, and a sign that two modules are one concept). Left out:
  ``if TYPE_CHECKING:`` blocks (never run) and ``if __name__ == "__main__":`` blocks (they run only
  when the file is the script ``__main__``, a module that nothing imports).
* **Packages on the way.** ``import a.b.c`` and ``from a.b import c`` run the ``__init__`` of ``a``
  and ``a.b`` first, so the edge goes to them too, except to the packages that contain A: those
  are imported before A runs. So ``__init__`` importing its own submodules is not a circle by
  itself, and a submodule's ``from . import tables`` (a module) is an edge to ``tables`` only.
* **``from P import x``**: to the module ``P.x`` if there is one; else x is a name that P's
  ``__init__`` defines, so the edge goes to P, even from inside P: a submodule importing a name of
  its package's ``__init__``, which imports that submodule back, is a circle (the name may not
  exist yet when the submodule runs).
* **Lazy names.** ``savegame/__init__.py`` loads its public names on first use (PEP 562) from its
  ``_EXPORTS`` table: ``from savegame import Run`` or ``savegame.Run`` (after ``import savegame``)
  is an edge to the module that table names for ``Run`` (``savegame.run``), made where the name is
  used; the package itself gets no edge to every module of its table. A literal
  ``importlib.import_module("savegame.x")`` is an edge, and so is each entry of the CLI's command
  table, ``Command(module="savegame.cli.ls", ...)`` (a ``module=`` keyword given a literal that
  names a savegame module): ``main`` imports the chosen one.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = "savegame"
SOURCE = Path(importlib.util.find_spec(PACKAGE).submodule_search_locations[0])


def modules(root: Path = SOURCE, prefix: str = PACKAGE) -> dict[str, Path]:
    """``{dotted name: file}`` of every module and package under ``root``, as
    ``pkgutil.walk_packages`` lists them, but without importing the packages to recurse."""
    found = {prefix: root / "__init__.py"}
    for info in pkgutil.iter_modules([str(root)]):
        name = f"{prefix}.{info.name}"
        if info.ispkg:
            found.update(modules(root / info.name, name))
        else:
            found[name] = root / f"{info.name}.py"
    return found


def _never_imported(test: ast.expr) -> bool:
    """``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``) and ``if __name__ == "__main__":``."""
    if isinstance(test, (ast.Name, ast.Attribute)):
        return getattr(test, "id", getattr(test, "attr", None)) == "TYPE_CHECKING"
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators))


def _nodes_that_run(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except those under a TYPE_CHECKING or ``__main__`` guard."""
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        found.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _never_imported(child.test):
                stack.extend(child.orelse)
            else:
                stack.append(child)
    return found


def lazy_exports(known: dict[str, Path]) -> dict[str, dict[str, str]]:
    """``{package: {name: module}}`` from each package ``__init__``'s ``_EXPORTS`` table (PEP 562)."""
    tables: dict[str, dict[str, str]] = {}
    for name, path in known.items():
        if path.name != "__init__.py":
            continue
        for node in ast.parse(path.read_text()).body:
            names = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            if isinstance(node, ast.Assign) and "_EXPORTS" in names:
                table = ast.literal_eval(node.value)
                tables[name] = {export: importlib.util.resolve_name(module, name)
                                for module, exports in table.items() for export in exports}
    return tables


def imports_of(name: str, path: Path, known: dict[str, Path], lazy: dict[str, dict[str, str]]
               ) -> dict[str, int]:
    """``{savegame module: line}``: what running the module ``name`` can import (the rules above)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    inside = {name, *(name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1))}  # A and its packages
    edges: dict[str, int] = {}
    bound: dict[str, str] = {}  # local name -> the package with a lazy table it is bound to

    def add(target: str, line: int) -> None:  # target, and the packages on its way not holding A
        parts = target.split(".")
        for module in (".".join(parts[:k]) for k in range(1, len(parts) + 1)):
            if module in known and module != name and (module == target or module not in inside):
                edges[module] = min(line, edges.get(module, line))

    nodes = _nodes_that_run(ast.parse(path.read_text(), str(path)))
    for node in sorted(nodes, key=lambda n: not isinstance(n, ast.Import)):  # bindings before uses
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    if alias.name not in inside:  # `import savegame` inside savegame binds, runs nothing new
                        add(alias.name, node.lineno)
                    top = alias.name if alias.asname else alias.name.split(".")[0]
                    if top in lazy:
                        bound[alias.asname or top] = top
        elif isinstance(node, ast.ImportFrom):
            source = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
                if node.level else node.module
            if source is None or source.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                if f"{source}.{alias.name}" in known:  # a submodule (and the packages on its way)
                    add(f"{source}.{alias.name}", node.lineno)
                else:  # a name P's __init__ defines, or loads lazily
                    add(source, node.lineno)
                    if alias.name in lazy.get(source, {}):
                        add(lazy[source][alias.name], node.lineno)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
            module = lazy[bound[node.value.id]].get(node.attr)
            if module:
                add(module, node.lineno)
        elif isinstance(node, ast.Call):
            literals = [k.value for k in node.keywords if k.arg == "module"]
            function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if function == "import_module" and node.args:
                literals.append(node.args[0])
            for literal in literals:
                if isinstance(literal, ast.Constant) and literal.value in known:
                    add(literal.value, node.lineno)
    return edges


def import_graph() -> dict[str, dict[str, int]]:
    known = modules()
    lazy = lazy_exports(known)
    return {name: imports_of(name, path, known, lazy) for name, path in known.items()}


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The groups of modules that import each other in circles (strongly connected, Tarjan), each
    sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One circle ``[a, b, ..., a]`` per group of :func:`circles`: the shortest through its first."""
    return [_shortest_circle(graph, group) for group in circles(graph)]


def _shortest_circle(graph: dict[str, dict[str, int]], group: list[str]) -> list[str]:
    start, members = group[0], set(group)
    paths = {start: [start]}
    queue = [start]
    for node in queue:  # breadth first: the shortest way back to start
        for nxt in sorted(graph[node]):
            if nxt == start:
                return paths[node] + [start]
            if nxt in members and nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    raise AssertionError(f"no circle through {start}")  # cannot happen in a strongly connected group


def describe(graph: dict[str, dict[str, int]], group: list[str]) -> str:
    """The shortest circle through the group's first module, then every import inside the group."""
    known = modules()
    inner = [f"{a} -> {b} ({os.path.relpath(known[a], SOURCE.parent)}:{line})"
             for a in group for b, line in sorted(graph[a].items()) if b in group]
    return " -> ".join(_shortest_circle(graph, group)) + "\n    " + "\n    ".join(inner)


def test_no_module_of_savegame_imports_another_in_a_circle():
    graph = import_graph()
    found = circles(graph)
    assert not found, "import circles:\n  " + "\n  ".join(describe(graph, group) for group in found)


# The graph's rules, each on a tiny package of its own -------------------------------------------

def _graph_of(tmp_path: Path, files: dict[str, str]) -> dict[str, dict[str, int]]:
    root = tmp_path / PACKAGE
    for relative, text in {"__init__.py": "", **files}.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    known = modules(root)
    return {name: set(imports_of(name, path, known, lazy_exports(known))) for name, path in known.items()}


def test_a_circle_through_a_function_level_import_is_found_and_named(tmp_path):
    graph = _graph_of(tmp_path, {"cli.py": "def main():\n    from . import demo\n",
                                 "demo.py": "def run():\n    from .cli import CliError\n"})
    assert cycles(graph) == [["savegame.cli", "savegame.demo", "savegame.cli"]]


def test_an_init_importing_its_submodules_is_not_a_circle_but_a_submodule_taking_a_name_from_it_is(tmp_path):
    files = {"cli/__init__.py": "from .tables import Fitted\n", "cli/tables.py": "from . import _common\n",
             "cli/_common.py": "X = 1\n"}
    assert cycles(_graph_of(tmp_path / "a", files)) == []
    files["cli/_common.py"] = "from . import Fitted\n"  # a name of cli/__init__, which imports it back
    assert cycles(_graph_of(tmp_path / "b", files)) == [
        ["savegame.cli", "savegame.cli.tables", "savegame.cli._common", "savegame.cli"]]


def test_importing_a_submodule_runs_the_packages_on_the_way(tmp_path):
    graph = _graph_of(tmp_path, {"demo.py": "from savegame.cli.tables import Fitted\n",
                                 "cli/__init__.py": "def main():\n    import savegame.demo\n",
                                 "cli/tables.py": ""})
    assert graph["savegame.demo"] == {"savegame.cli", "savegame.cli.tables"}
    assert cycles(graph) == [["savegame.cli", "savegame.demo", "savegame.cli"]]


def test_lazy_names_count_where_they_are_used_and_type_checking_or_main_blocks_not_at_all(tmp_path):
    graph = _graph_of(tmp_path, {
        "__init__.py": "_EXPORTS = {'.run': ['Run']}\nfrom typing import TYPE_CHECKING\n"
                       "if TYPE_CHECKING:\n    from .run import Run\n",
        "run.py": "from .info import new\n",
        "info.py": "from . import __version__\nif __name__ == '__main__':\n    from .run import Run\n",
        "demo.py": "import savegame\nsavegame.Run\n",
        "cli/__init__.py": "import importlib\nCOMMANDS = dict(demo=dict(module='savegame.cli.demo'))\n"
                           "def main():\n    importlib.import_module('savegame.cli.ls')\n",
        "cli/demo.py": "from savegame import Run\n", "cli/ls.py": ""})
    assert graph["savegame"] == set() and graph["savegame.info"] == {"savegame"}
    assert graph["savegame.demo"] == {"savegame.run"}
    assert graph["savegame.cli"] == {"savegame.cli.demo", "savegame.cli.ls"}
    assert graph["savegame.cli.demo"] == {"savegame", "savegame.run"}
    assert cycles(graph) == []


# Startup: what the commands that only read never import ----------------------------------------

def _imports_torch(code: str) -> bool:
    done = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint('torch' in sys.modules)"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().splitlines()[-1] == "True"


def test_importing_the_cli_and_asking_it_for_help_does_not_import_torch():
    assert not _imports_torch("import savegame.cli")
    assert not _imports_torch("import contextlib, io\nfrom savegame.cli import main\n"
                              "with contextlib.redirect_stdout(io.StringIO()):\n"
                              "    try:\n        main(['--help'])\n    except SystemExit:\n        pass")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A folder with one finished savegame run: run.json, two checkpoints, event files."""
    import savegame
    import torch

    root = tmp_path_factory.mktemp("imports") / "runs"
    net = torch.nn.Linear(2, 1)
    with savegame.Run(root / "a", keep=savegame.Keep(last=2, best=1, metric="loss/val"), handle_signals=False) as run:
        run.track(model=net)
        for epoch in run.epochs(2):
            run.step += 1
            run.log({"loss/train": 1.0 / (epoch + 1), "loss/val": 1.0 / (epoch + 1)})
            run.save(metrics={"loss/val": 1.0 / (epoch + 1)})
    return root


@pytest.mark.parametrize("argv", [["ls", "{runs}"], ["ls", "--json", "{runs}"], ["show", "{runs}/a"],
                                  ["doctor", "{runs}"], ["doctor", "--json", "{runs}/a"]], ids=" ".join)
def test_a_command_that_only_reads_run_folders_does_not_import_torch(runs, argv):
    argv = [a.format(runs=runs) for a in argv]
    assert not _imports_torch("import contextlib, io\nfrom savegame.cli import main\n"
                              f"with contextlib.redirect_stdout(io.StringIO()):\n    code = main({argv!r})\n"
                              "assert code in (0, 1), code")
