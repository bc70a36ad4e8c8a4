"""The shape of the code, read with ``ast``: which module imports which, and where.

- No import cycle inside ``engine/``, and no import inside a function body there (a function-local
  import is how a cycle hides), except for the optional dependencies listed below.
- ``engine/`` imports nothing from the rest of nnserve.
- ``worker/`` uses only what ``engine/__init__.py`` exports.
- The layers import downwards only: engine ← service ← worker ← cli (the ``nnserve`` command), in
  function bodies too; the client (``nnserve/client.py``) imports neither the service, the worker nor
  the command; and no cycle inside the service, the worker or the command.

The helpers take a package folder and give plain data (a graph, a list of imports).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Imports an engine function body may make: optional dependencies, which a module must not need at
# import time. (None today: NumPy is the engine's only dependency.) Module name -> why.
OPTIONAL_DEPENDENCIES: dict[str, str] = {}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted ("nnserve.engine.model")
    target: str  # the imported module, absolute ("nnserve.engine.training", "numpy")
    names: tuple[str, ...]  # for ``from target import a, b``; () for ``import target``
    line: int
    in_function: bool


def modules(package: Path, name: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package folder ``package`` (imported as ``name``)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        dotted = ".".join((name, *parts[:-1])) if parts[-1] == "__init__" else ".".join((name, *parts))
        found[dotted] = path
    return found


def imports(package: Path, name: str) -> list[Import]:
    """Every import statement in the package, relative ones made absolute."""
    found = []
    known = modules(package, name)
    for module, path in known.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, in_function in _walk(tree, in_function=False):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.append(Import(module, alias.name, (), node.lineno, in_function))
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node.module, node.level)
                names = tuple(alias.name for alias in node.names)
                # ``from . import archive`` imports a module; ``from .errors import SpecError`` a name.
                submodules = [n for n in names if f"{base}.{n}" in known]
                for sub in submodules:
                    found.append(Import(module, f"{base}.{sub}", (), node.lineno, in_function))
                rest = tuple(n for n in names if n not in submodules)
                if rest or not submodules:
                    found.append(Import(module, base, rest, node.lineno, in_function))
    return found


def _walk(node: ast.AST, in_function: bool):
    for child in ast.iter_child_nodes(node):
        inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield child, in_function
        yield from _walk(child, inside)


def _resolve(module: str, is_package: bool, target: str | None, level: int) -> str:
    if level == 0:
        return target or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def graph(found: list[Import], within: str) -> dict[str, set[str]]:
    """Module -> the modules under ``within`` it imports at import time (function bodies left out)."""
    edges: dict[str, set[str]] = {}
    for item in found:
        edges.setdefault(item.module, set())
        inside = item.target == within or item.target.startswith(within + ".")
        if inside and not item.in_function and item.target != item.module:
            edges[item.module].add(item.target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted: the cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def exported(init: Path) -> set[str]:
    """The names a package's ``__init__.py`` lists in ``__all__``."""
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


def uses_of(package: Path, name: str, module: str) -> list[tuple[str, str, int]]:
    """``(using module, name used, line)`` for every name of ``module`` the package uses: names in
    ``from module import ...``, attributes of ``module`` bound by ``from parent import leaf`` or
    ``import module``, and any import of one of its submodules (used name ``"."`` plus the submodule)."""
    uses = []
    parent, _, leaf = module.rpartition(".")
    for using, path in modules(package, name).items():
        tree = ast.parse(path.read_text())
        bound: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == module:
                uses += [(using, alias.name, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module == parent:
                bound |= {alias.asname or alias.name for alias in node.names if alias.name == leaf}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(module + "."):
                uses.append((using, "." + node.module[len(module) + 1 :], node.lineno))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith(module + "."):
                        uses.append((using, "." + alias.name[len(module) + 1 :], node.lineno))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
                uses.append((using, node.attr, node.lineno))
    return uses


# The checks --------------------------------------------------------------------------------------------

ENGINE = ROOT / "engine"


def test_the_engine_has_no_import_cycle():
    assert cycles(graph(imports(ENGINE, "nnserve.engine"), "nnserve.engine")) == []


def test_the_engine_imports_nothing_inside_a_function():
    local = [
        f"{item.module}:{item.line} imports {item.target}"
        for item in imports(ENGINE, "nnserve.engine")
        if item.in_function and item.target.split(".")[0] not in OPTIONAL_DEPENDENCIES
    ]
    assert local == []


def test_the_engine_imports_nothing_from_the_rest_of_nnserve():
    outside = [
        f"{item.module}:{item.line} imports {item.target}"
        for item in imports(ENGINE, "nnserve.engine")
        if item.target.startswith("nnserve") and not item.target.startswith("nnserve.engine")
    ]
    assert outside == []


def test_the_worker_uses_only_what_the_engine_exports():
    public = exported(ENGINE / "__init__.py")
    used = uses_of(ROOT / "worker", "nnserve.worker", "nnserve.engine")
    assert used, "the worker uses the engine"
    assert [
        f"{module}:{line} uses engine{'' if n.startswith('.') else '.'}{n}"
        for module, n, line in used
        if n not in public
    ] == []


LAYERS = {
    "nnserve.engine": (0, ENGINE),
    "nnserve.service": (1, ROOT / "service"),
    "nnserve.worker": (2, ROOT / "worker"),
    "nnserve.cli": (3, ROOT / "nnserve" / "cli"),
}
"""Package -> (layer, folder): a module may import from its own layer and those below it."""
CLIENT = "nnserve.client"
ALIASES = {"nnserve.service.client": "kept so that scripts importing the client from its old place still work"}
"""Modules allowed to break the layering, and why."""


def layer_of(target: str) -> str | None:
    """The layer package ``target`` belongs to, or None (the ``nnserve`` root, the client, a library)."""
    return next((package for package in LAYERS if target == package or target.startswith(package + ".")), None)


def test_the_layers_import_only_downwards():
    upward = []
    for package, (level, folder) in LAYERS.items():
        for item in imports(folder, package):
            if item.module in ALIASES:
                continue
            target = layer_of(item.target)
            if target is not None and LAYERS[target][0] > level:
                upward.append(f"{item.module}:{item.line} imports {item.target}")
            client = item.target == CLIENT or item.target.startswith(CLIENT + ".")
            if client and package != "nnserve.cli":
                upward.append(f"{item.module}:{item.line} imports the client")
    assert upward == []


def test_no_cycle_in_the_service_the_worker_or_the_command():
    for package, (_, folder) in LAYERS.items():
        assert cycles(graph(imports(folder, package), package)) == [], package


def test_the_client_imports_neither_the_service_the_worker_nor_the_command():
    tree = ast.parse((ROOT / "nnserve" / "client.py").read_text())
    targets = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    targets |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert {target for target in targets if layer_of(target) not in (None, "nnserve.engine")} == set()


# The helpers themselves, on a package made for the purpose ---------------------------------------------


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_cycle_hidden_in_a_function_is_found_and_a_straight_line_is_not(tmp_path):
    package = write(
        tmp_path / "pkg",
        {
            "__init__.py": "from .a import f\n__all__ = ['f']\n",
            "a.py": "from . import b\ndef f():\n    return b.g()\n",
            "b.py": "from .c import h\ndef g():\n    from .a import f\n    return h()\n",
            "c.py": "import numpy as np\nfrom pkg.d import x\n",
            "d.py": "x = 1\n",
        },
    )
    found = imports(package, "pkg")
    assert [(i.module, i.target, i.in_function) for i in found if i.in_function] == [("pkg.b", "pkg.a", True)]
    edges = graph(found, "pkg")
    assert edges["pkg.a"] == {"pkg.b"} and edges["pkg.b"] == {"pkg.c"} and edges["pkg.c"] == {"pkg.d"}
    assert cycles(edges) == []
    edges["pkg.b"].add("pkg.a")  # what the function-local import would be at module level
    assert cycles(edges) == [["pkg.a", "pkg.b"]]
    assert exported(package / "__init__.py") == {"f"}


def test_uses_of_a_package_are_every_way_of_reaching_it(tmp_path):
    package = write(
        tmp_path / "user",
        {
            "__init__.py": "",
            "jobs.py": "from lib import engine\nfrom lib.engine import build\nfrom lib.engine.training import T\n"
            "engine.validate(1)\n",
            "other.py": "import lib.engine.model\n",
        },
    )
    uses = {(module, name) for module, name, _ in uses_of(package, "user", "lib.engine")}
    assert uses == {
        ("user.jobs", "build"),
        ("user.jobs", "validate"),
        ("user.jobs", ".training"),
        ("user.other", ".model"),
    }
