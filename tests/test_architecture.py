"""The house rules, read from the source with ``ast`` (issue #25; the map is docs/development.md).

1. No import cycle among shipper's modules. Every import counts: at the top, deferred into a
   function, relative (``from . import x``), and under ``if TYPE_CHECKING:`` too. A typing-only
   import does not run, but a module that names another's class for its annotations depends on
   it all the same; where two modules need each other's types, a ``Protocol`` (or a third
   module both import) says the same without the cycle. ``importlib.import_module("shipper.x")``
   with a literal name counts as an import.
2. No module imports another module's private name: ``from x import _y``, or ``x._y`` where
   ``x`` is a module it imported. Dunders (``__version__``) are not private; importing a private
   *module* (``shipper._units``) is how the package is meant to be used, so that is allowed.
   Only shipper's own modules are checked, as importers and as owners of the names.
3. No module over :data:`MAX_LINES` lines.
4. Every module has a docstring (its one job).
5. Layers (see :data:`LAYERS`): the delivery engine imports only the event contract and
   itself; ``shipper.loki`` never imports the command line; nothing outside ``shipper.cli``
   imports it (``shipper/__main__.py``, the ``python -m shipper`` door to the command, apart).

An import edge goes to the module named, and for ``from package import name`` to the submodule
``package.name`` when there is one, else to the package; importing ``a.b.c`` also runs the
``__init__`` of ``a`` and ``a.b``, but those implicit edges are not counted (every submodule
would otherwise "cycle" with the package that re-exports it), as import graph tools do.

Each checker is tried first on a small synthetic tree in ``tmp_path`` that breaks its rule.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "shipper"
MAX_LINES = 800


@dataclass(frozen=True)
class Layer:
    """Modules under ``importer`` (the package and its submodules) may import, of shipper's
    modules, only those under ``only`` (when given) and none under ``never``; ``exempt`` are
    importers the rule does not apply to."""

    name: str
    importer: str
    only: tuple[str, ...] = ()
    never: tuple[str, ...] = ()
    exempt: tuple[str, ...] = ()
    outside: bool = False  # the rule applies to every module NOT under ``importer``


LAYERS = (
    Layer("the delivery engine imports only the event contract and itself",
          "shipper.delivery",
          only=("shipper.delivery", "shipper.event", "shipper.config", "shipper.redact",
                "shipper._units", "shipper._version", "shipper._files")),
    Layer("shipper.loki never imports the command line", "shipper.loki",
          never=("shipper.cli",)),
    Layer("nothing outside shipper.cli imports it (the public modules included)", "shipper.cli",
          never=("shipper.cli",), exempt=("shipper.__main__",), outside=True),
)


# --------------------------------------------------------------------------- reading the tree


@dataclass(frozen=True)
class Import:
    """One imported name: ``target`` is the module it binds to (or is taken from)."""

    importer: str
    target: str
    name: str | None  # the name taken from ``target`` (``from target import name``)
    line: int
    how: str  # "top", "deferred" (inside a function) or "typing" (under TYPE_CHECKING)


@dataclass
class Module:
    name: str
    path: str  # relative to the folder that holds the package
    tree: ast.Module
    lines: int
    imports: list[Import] = field(default_factory=list)
    private_uses: list[tuple[str, int]] = field(default_factory=list)  # "x._y", line


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_package(root: Path, package: str = PACKAGE) -> dict[str, Module]:
    """Every module of ``package`` (a folder under ``root``), with its imports resolved."""
    modules: dict[str, Module] = {}
    for path in sorted((root / package).rglob("*.py")):
        if "node_modules" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        name = _module_name(root, path)
        modules[name] = Module(name, path.relative_to(root).as_posix(), ast.parse(text, str(path)),
                               len(text.splitlines()))
    for module in modules.values():
        _resolve(module, modules, package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, how: str) -> Iterator[tuple[ast.AST, str]]:
    """Every node under ``node`` with how an import there runs."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            yield child.test, how
            for part in child.body:
                yield part, "typing"
                yield from _walk(part, "typing")
            for part in child.orelse:
                yield part, how
                yield from _walk(part, how)
            continue
        inner = "deferred" if how == "top" and isinstance(
            child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) else how
        yield child, how
        yield from _walk(child, inner)


def _base(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.name.split(".")
    if not module.path.endswith("/__init__.py"):
        package.pop()
    if node.level > 1:
        package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, node.module] if node.module else package)


def _known(dotted: str, modules: dict[str, Module]) -> str | None:
    """The longest prefix of ``dotted`` that is one of the modules."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def _resolve(module: Module, modules: dict[str, Module], package: str) -> None:
    bound: dict[str, str] = {}  # local name → the module it is bound to
    for node, how in _walk(module.tree, "top"):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known(alias.name, modules)
                if target is None:
                    continue
                module.imports.append(Import(module.name, target, None, line, how))
                if alias.asname:
                    bound[alias.asname] = target
                else:
                    head = alias.name.split(".")[0]
                    if head in modules:
                        bound[head] = head
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, node)
            if not _under(base, package):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    module.imports.append(Import(module.name, sub, None, line, how))
                    bound[alias.asname or alias.name] = sub
                elif base in modules:
                    name = None if alias.name == "*" else alias.name
                    module.imports.append(Import(module.name, base, name, line, how))
        elif isinstance(node, ast.Call) and _dotted(node.func) in (
                "importlib.import_module", "import_module") and node.args and \
                isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            target = _known(node.args[0].value, modules)
            if target is not None:
                module.imports.append(Import(module.name, target, None, line, how))
    # x._y on a module bound above (x may be a dotted chain: shipper.event._line)
    for node in ast.walk(module.tree):
        if not isinstance(node, ast.Attribute) or not _private(node.attr):
            continue
        owner = _dotted(node.value)
        if owner is None:
            continue
        head, _, rest = owner.partition(".")
        if head not in bound:
            continue
        target = bound[head] + ("." + rest if rest else "")
        if target in modules and target != module.name:
            module.private_uses.append((f"{target}.{node.attr}", node.lineno))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _where(module: Module, line: int) -> str:
    return f"{module.path}:{line}"


# --------------------------------------------------------------------------- the checkers


def find_cycles(modules: dict[str, Module]) -> list[list[Import]]:
    """One shortest cycle per strongly connected group of modules, as the imports that close it."""
    edges: dict[str, dict[str, Import]] = {name: {} for name in modules}
    for module in modules.values():
        for imp in module.imports:
            if imp.target != module.name:
                edges[module.name].setdefault(imp.target, imp)
    cycles = []
    for group in _strongly_connected(edges):
        if len(group) < 2:
            continue
        start = min(group)
        # breadth first from start back to start, inside the group
        came: dict[str, Import] = {}
        queue = deque([start])
        while queue:
            here = queue.popleft()
            for there, imp in sorted(edges[here].items()):
                if there not in group or there in came:
                    continue
                came[there] = imp
                if there == start:
                    queue.clear()
                    break
                queue.append(there)
        path: list[Import] = []
        at = start
        while True:
            imp = came[at]
            path.append(imp)
            at = imp.importer
            if at == start:
                break
        cycles.append(path[::-1])
    return cycles


def _strongly_connected(edges: dict[str, dict[str, Import]]) -> list[set[str]]:
    """Tarjan's algorithm, without recursion."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    groups.append(group)
    return groups


def describe_cycle(cycle: list[Import], modules: dict[str, Module]) -> str:
    steps = [f"{imp.importer} -> {imp.target} ({imp.how}, "
             f"{_where(modules[imp.importer], imp.line)})" for imp in cycle]
    return "cycle: " + "; ".join(steps)


def private_imports(modules: dict[str, Module]) -> list[str]:
    out = []
    for module in modules.values():
        for imp in module.imports:
            if imp.name is not None and _private(imp.name) and imp.target != module.name:
                out.append(f"{_where(module, imp.line)}: imports {imp.target}.{imp.name}")
        for dotted, line in module.private_uses:
            out.append(f"{_where(module, line)}: uses {dotted}")
    return out


def long_modules(modules: dict[str, Module], limit: int = MAX_LINES) -> list[str]:
    return [f"{m.path}: {m.lines} lines (limit {limit})"
            for m in modules.values() if m.lines > limit]


def undocumented(modules: dict[str, Module]) -> list[str]:
    return [f"{m.path}: no module docstring" for m in modules.values()
            if not (ast.get_docstring(m.tree) or "").strip()]


def layer_violations(modules: dict[str, Module], layers: Iterable[Layer] = LAYERS) -> list[str]:
    out = []
    for layer in layers:
        for module in modules.values():
            inside = _under(module.name, layer.importer)
            if inside == layer.outside or module.name in layer.exempt:
                continue
            for imp in module.imports:
                bad = any(_under(imp.target, n) for n in layer.never) or (
                    bool(layer.only) and not any(_under(imp.target, o) for o in layer.only))
                message = (f"{_where(module, imp.line)}: {module.name} imports {imp.target} "
                           f"({imp.how}): {layer.name}")
                if bad and message not in out:  # once for `from x import a, b`
                    out.append(message)
    return out


# --------------------------------------------------------------------------- the checkers, tried


def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Module]:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return read_package(tmp_path)


_DOC = '"""Doc."""\n'


def test_a_deferred_import_that_closes_a_cycle_is_found_and_printed(tmp_path: Path) -> None:
    modules = _tree(tmp_path, {
        "shipper/__init__.py": _DOC,
        "shipper/a.py": _DOC + "from shipper.b import B\n",
        "shipper/b.py": _DOC + "B = 1\ndef f() -> None:\n    from shipper import a\n",
        "shipper/c.py": _DOC + "from shipper import a, b\n",
    })
    (cycle,) = find_cycles(modules)
    text = describe_cycle(cycle, modules)
    assert text == ("cycle: shipper.a -> shipper.b (top, shipper/a.py:2); "
                    "shipper.b -> shipper.a (deferred, shipper/b.py:4)")


def test_relative_and_typing_only_imports_count_for_cycles(tmp_path: Path) -> None:
    modules = _tree(tmp_path, {
        "shipper/__init__.py": _DOC,
        "shipper/side/__init__.py": _DOC,
        "shipper/side/run.py": _DOC + "from .work import Pool\n",
        "shipper/side/work.py": _DOC + "from typing import TYPE_CHECKING\n"
                                       "Pool = 1\nif TYPE_CHECKING:\n    from . import run\n",
        "shipper/x.py": _DOC + "from . import y\n",
        "shipper/y.py": _DOC + "import importlib\n"
                               "def f():\n    importlib.import_module('shipper.x')\n",
    })
    found = sorted(describe_cycle(c, modules) for c in find_cycles(modules))
    assert found == [
        "cycle: shipper.side.run -> shipper.side.work (top, shipper/side/run.py:2); "
        "shipper.side.work -> shipper.side.run (typing, shipper/side/work.py:5)",
        "cycle: shipper.x -> shipper.y (top, shipper/x.py:2); "
        "shipper.y -> shipper.x (deferred, shipper/y.py:4)",
    ]


def test_no_cycle_when_imports_go_one_way(tmp_path: Path) -> None:
    modules = _tree(tmp_path, {
        "shipper/__init__.py": _DOC + "from shipper.a import A\n",  # a re-export
        "shipper/a.py": _DOC + "import shipper.b\nA = 1\n",
        "shipper/b.py": _DOC + "import os\n",
    })
    assert find_cycles(modules) == []


def test_private_names_taken_from_another_module_are_found(tmp_path: Path) -> None:
    modules = _tree(tmp_path, {
        "shipper/__init__.py": _DOC + "from shipper._version import __version__\n",
        "shipper/_version.py": _DOC + "__version__ = '1'\n",
        "shipper/_units.py": _DOC + "def parse() -> None: ...\n",
        "shipper/ev.py": _DOC + "def _line() -> None: ...\ndef _own() -> None:\n    _line()\n",
        "shipper/h.py": _DOC + "from shipper.ev import _line\n",
        "shipper/g.py": _DOC + "import shipper.ev as ev\nev._line()\n",
        "shipper/k.py": _DOC + "import shipper.ev\nshipper.ev._line()\n",
        "shipper/fine.py": _DOC + "from shipper import __version__, _units\n"
                                  "from shipper._units import parse\n_units.parse()\n",
    })
    assert sorted(private_imports(modules)) == [
        "shipper/g.py:3: uses shipper.ev._line",
        "shipper/h.py:2: imports shipper.ev._line",
        "shipper/k.py:3: uses shipper.ev._line",
    ]


def test_long_and_undocumented_modules_are_found(tmp_path: Path) -> None:
    modules = _tree(tmp_path, {
        "shipper/__init__.py": _DOC,
        "shipper/big.py": _DOC + "x = 1\n" * 800,
        "shipper/bare.py": "x = 1\n",
        "shipper/empty.py": '""" """\n',
    })
    assert long_modules(modules) == ["shipper/big.py: 801 lines (limit 800)"]
    assert sorted(undocumented(modules)) == ["shipper/bare.py: no module docstring",
                                             "shipper/empty.py: no module docstring"]


def test_layer_rules_are_found_broken(tmp_path: Path) -> None:
    modules = _tree(tmp_path, {
        "shipper/__init__.py": _DOC,
        "shipper/__main__.py": _DOC + "from shipper.cli.main import main\n",
        "shipper/event.py": _DOC,
        "shipper/handler.py": _DOC + "def f():\n    import shipper.cli\n",
        "shipper/delivery/__init__.py": _DOC + "from shipper import event\n",
        "shipper/delivery/ok.py": _DOC + "from shipper._units import x\nfrom . import sub\n",
        "shipper/delivery/sub.py": _DOC,
        "shipper/delivery/bad.py": _DOC + "from shipper.handler import H\n",
        "shipper/loki/__init__.py": _DOC,
        "shipper/loki/client.py": _DOC + "from ..cli.main import main, run\n",
        "shipper/cli/__init__.py": _DOC,
        "shipper/cli/main.py": _DOC + "from shipper.loki import client\n",
        "shipper/_units.py": _DOC,
    })
    assert sorted(layer_violations(modules)) == [
        "shipper/delivery/bad.py:2: shipper.delivery.bad imports shipper.handler (top): "
        "the delivery engine imports only the event contract and itself",
        "shipper/handler.py:3: shipper.handler imports shipper.cli (deferred): "
        "nothing outside shipper.cli imports it (the public modules included)",
        "shipper/loki/client.py:2: shipper.loki.client imports shipper.cli.main (top): "
        "nothing outside shipper.cli imports it (the public modules included)",
        "shipper/loki/client.py:2: shipper.loki.client imports shipper.cli.main (top): "
        "shipper.loki never imports the command line",
    ]


# --------------------------------------------------------------------------- the house itself


@pytest.fixture(scope="module")
def house() -> dict[str, Module]:
    return read_package(ROOT)


def test_the_tree_is_read(house: dict[str, Module]) -> None:
    assert {"shipper", "shipper.event", "shipper.delivery.pipeline",
            "shipper.sidecar.runner"} <= set(house)
    assert any(imp.how == "deferred" for m in house.values() for imp in m.imports)


def test_no_import_cycles(house: dict[str, Module]) -> None:
    found = [describe_cycle(c, house) for c in find_cycles(house)]
    assert not found, "\n".join(found)


def test_no_module_imports_another_modules_private_names(house: dict[str, Module]) -> None:
    found = private_imports(house)
    assert not found, "\n".join(found)


def test_no_module_is_over_the_limit(house: dict[str, Module]) -> None:
    found = long_modules(house)
    assert not found, "\n".join(found)


def test_every_module_says_its_job(house: dict[str, Module]) -> None:
    found = undocumented(house)
    assert not found, "\n".join(found)


def test_the_layers_hold(house: dict[str, Module]) -> None:
    found = layer_violations(house)
    assert not found, "\n".join(found)
