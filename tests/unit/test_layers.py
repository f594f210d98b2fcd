"""The layers read from the tree, and no import runs back up them: checked on the source (AST).

Lowest first — the pure core, the shared schema, the edges, the simulator, the actors, their
supervisors, the runtime that composes them, the research tools, the commands. A module may
import only from its own layer or from the layers `ALLOWED` names for it. Every import counts:
at module level, inside functions and under `TYPE_CHECKING` alike, so a cycle cannot hide behind
a deferred import. Beside the layer rule, no two project modules may import each other, even
through others (no module cycle). The README's Architecture section draws the same picture.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.unit.test_purity import _resolve

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("extmm", "actors", "supervisors")

# (layer, module prefixes) lowest first; a module belongs to the layer of its longest prefix.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("domain", ("extmm.domain",)),
    ("base", ("extmm.config", "extmm.markets", "extmm.argtypes")),
    ("edges", ("extmm.venue", "extmm.ops", "extmm.journal")),
    ("sim", ("extmm.sim",)),
    ("actors", ("actors",)),
    ("supervisors", ("supervisors",)),
    ("runtime", ("extmm.runtime",)),
    ("research", ("extmm.research",)),
    ("commands", ("extmm.commands", "extmm.cli", "extmm.__main__")),
)
# The package `extmm` itself (its __init__: the version) is part of the shared base.
EXACT = {"extmm": "base"}

_BELOW_ACTORS = {"domain", "base", "edges"}
ALLOWED: dict[str, set[str]] = {
    "domain": {"domain"},
    "base": {"domain", "base"},
    "edges": {"domain", "base", "edges"},
    "sim": _BELOW_ACTORS | {"sim"},
    "actors": _BELOW_ACTORS | {"actors"},
    "supervisors": _BELOW_ACTORS | {"actors", "supervisors"},
    "runtime": _BELOW_ACTORS | {"sim", "actors", "supervisors", "runtime"},
    "research": _BELOW_ACTORS | {"sim", "actors", "supervisors", "runtime", "research"},
    "commands": {name for name, _ in LAYERS},
}


def modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted name → source file, for every module of the project's packages."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(known: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the project modules it imports (anywhere in its source)."""
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node.module or "", node.level, name, is_package)
                for alias in node.names:
                    child = f"{base}.{alias.name}"
                    targets.add(child if child in known else base)
        graph[name] = set()
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    return graph


def layer_of(module: str) -> str | None:
    if module in EXACT:
        return EXACT[module]
    best: tuple[int, str] | None = None
    for layer, prefixes in LAYERS:
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), layer)
    return best[1] if best else None


def back_edges(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module in sorted(graph):
        layer = layer_of(module)
        if layer is None:
            problems.append(f"{module}: in no layer (move it into a layer's folder or name it in LAYERS)")
            continue
        for target in sorted(graph[module]):
            target_layer = layer_of(target)
            if target_layer is not None and target_layer not in ALLOWED[layer]:
                problems.append(f"{module} ({layer}) imports {target} ({target_layer})")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_runs_back_up_the_layers():
    assert back_edges(imports(modules(ROOT))) == []


def test_no_module_cycle():
    assert cycles(imports(modules(ROOT))) == []


def test_every_product_module_is_in_a_layer():
    unplaced = [m for m in modules(ROOT) if layer_of(m) is None]
    assert unplaced == []


def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for rel, source in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return imports(modules(tmp_path))


def test_the_check_sees_a_back_edge_even_inside_a_function(tmp_path):
    graph = _tree(tmp_path, {
        "extmm/__init__.py": "",
        "extmm/domain/__init__.py": "",
        "extmm/domain/model.py": "def f():\n    from extmm.config import BotConfig\n",
        "extmm/config.py": "",
        "extmm/venue/__init__.py": "",
        "extmm/venue/rest.py": "from ..research import tool\n",
        "extmm/research/__init__.py": "",
        "extmm/research/tool.py": "",
        "actors/__init__.py": "",
        "actors/quoter.py": "import supervisors.market\n",
        "supervisors/__init__.py": "",
        "supervisors/market.py": "",
    })
    assert back_edges(graph) == [
        "actors.quoter (actors) imports supervisors.market (supervisors)",
        "extmm.domain.model (domain) imports extmm.config (base)",
        "extmm.venue.rest (edges) imports extmm.research.tool (research)",
    ]


def test_the_check_sees_a_cycle_held_together_by_a_deferred_import(tmp_path):
    graph = _tree(tmp_path, {
        "extmm/__init__.py": "",
        "extmm/sim/__init__.py": "",
        "extmm/sim/runner.py": "from extmm.sim.http_api import app\n",
        "extmm/sim/http_api.py": "def app():\n    from extmm.sim import server\n",
        "extmm/sim/server.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .runner import X\n",
        "extmm/sim/wire.py": "from extmm.sim import model\n",
        "extmm/sim/model.py": "",
    })
    assert back_edges(graph) == []
    assert cycles(graph) == [["extmm.sim.http_api", "extmm.sim.runner", "extmm.sim.server"]]


def test_a_module_outside_every_layer_is_named(tmp_path):
    graph = _tree(tmp_path, {"extmm/__init__.py": "", "extmm/helpers.py": ""})
    assert back_edges(graph) == ["extmm.helpers: in no layer (move it into a layer's folder or name it in LAYERS)"]
