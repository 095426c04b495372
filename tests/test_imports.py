"""No import cycles in archdsl: the module import graph (every `import` statement, at module level
or inside a function) is acyclic, and every module imports on its own in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "archdsl"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The archdsl modules `name` imports (a `from package import module` counts the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    # imports under `if TYPE_CHECKING:` never run: annotations only, no runtime circle
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in known:
                    out.add(sub)
                elif base in known:
                    out.add(base)
    out.discard(name)
    return out


def import_graph() -> nx.DiGraph:
    mods = modules()
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    for name, path in mods.items():
        for target in imported(name, path, set(mods)):
            g.add_edge(name, target)
    return g


def test_the_import_graph_is_acyclic():
    g = import_graph()
    cycles = list(nx.simple_cycles(g))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c + c[:1]) for c in cycles[:5])


def test_the_checker_sees_a_cycle(tmp_path):
    """The checker itself: a function-level import that closes a circle is found."""
    g = import_graph()
    g.add_edge("archdsl.runtime.tune", "archdsl.bench.harness")  # the circle this package once had
    assert any("archdsl.runtime.tune" in c for c in nx.simple_cycles(g))


@pytest.mark.parametrize("name", ["archdsl.runtime", "archdsl.runtime.tune", "archdsl.runtime.model",
                                  "archdsl.bench.harness", "archdsl.bench.report", "archdsl.codegen.schedule",
                                  "archdsl.passes.fold", "archdsl.ops.registry"])
def test_each_module_imports_alone(name):
    subprocess.run([sys.executable, "-c", f"import {name}"], check=True, timeout=120)
