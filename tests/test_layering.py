"""The package's layers, read from its import statements (DESIGN.md, docs/architecture.md).

Rules:
1. Imports point down: `ir` imports nothing of ffcompile outside `ir`; `passes` only
   `ir` and `passes`; `codegen` only `ir`, `passes` and `codegen`. Everything else
   (frontends, transforms, pipeline, api, cli, bench) sits on top.
2. No module imports another module's `_private` name.
3. No import cycle, counting imports inside functions too (deferring an import does not
   make a cycle go away). One cycle is the design: the op registry's VJP rules emit IR
   through the Tracer (`ir.lang`), and the Tracer emits the registry's ops.
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ffcompile"

# layer -> the layers it may import from
ALLOWED = {
    "ir": {"ir"},
    "passes": {"ir", "passes"},
    "codegen": {"ir", "passes", "codegen"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path):
    """(line, imported module, imported names, top level?) for each ffcompile import in path
    (but those under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    top_level = {id(node) for node in tree.body}
    typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                   for inner in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: nothing is loaded
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ffcompile"):
                    yield node.lineno, alias.name, [], id(node) in top_level
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("ffcompile"):
                yield node.lineno, target, [a.name for a in node.names], id(node) in top_level


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


def resolve(target: str, names: list[str]) -> list[str]:
    """The modules an import statement loads: `from ffcompile.ir import ops` loads ir.ops."""
    found = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
    return found or [target]


def test_the_walk_sees_every_module():
    assert {"ffcompile.ir.graph", "ffcompile.passes.fuse", "ffcompile.codegen.backend",
            "ffcompile.pipeline", "ffcompile.api"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m)))
def test_imports_point_down(module):
    allowed = ALLOWED[layer(module)]
    for line, target, names, _ in imports(MODULES[module]):
        for imported in resolve(target, names):
            got = layer(imported) if imported != "ffcompile" else "the package root"
            assert got in allowed, f"{module}:{line} imports {imported} ({got}); {layer(module)} may import {allowed}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_crosses_modules(module):
    for line, target, names, _ in imports(MODULES[module]):
        private = [n for n in names if n.startswith("_") and not n.endswith("__")
                   and f"{target}.{n}" not in MODULES]
        assert not private, f"{module}:{line} imports private {private} from {target}"


DESIGNED_CYCLES = [{"ffcompile.ir.lang", "ffcompile.ir.ops"}]


def test_imports_have_no_cycle():
    graph = nx.DiGraph()
    for module, path in MODULES.items():
        for _, target, names, _ in imports(path):
            for imported in resolve(target, names):
                if imported in MODULES and imported != module:
                    graph.add_edge(module, imported)
    cycles = list(nx.simple_cycles(graph))
    # A package __init__ re-exporting its submodules is no cycle of design.
    cycles = [c for c in cycles if not any(MODULES[m].name == "__init__.py" for m in c)
              and set(c) not in DESIGNED_CYCLES]
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_the_rules_catch_a_violation(tmp_path):
    """The walk really reads imports: a fake ir module importing passes is seen as such."""
    bad = tmp_path / "ffcompile" / "ir" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("from ..passes.fuse import _private_helper\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "ffcompile"
    try:
        [(line, target, names, top)] = list(imports(bad))
    finally:
        PACKAGE = saved
    assert (line, target, names, top) == (1, "ffcompile.passes.fuse", ["_private_helper"], True)
    assert layer(target) == "passes" not in ALLOWED["ir"]
