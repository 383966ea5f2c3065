"""The shape of the import graph beyond what import-linter checks (its layers and acyclic contracts live in
pyproject.toml): the longest chain of drama modules importing one another, counting imports inside functions (they
run too) and leaving out ``if TYPE_CHECKING:`` blocks. A long chain means a change deep down ripples far up."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
LONGEST_CHAIN = 10
"""Most modules on one chain of imports (docs/design.md, "Architecture")."""


def import_graph() -> dict[str, set[str]]:
    """drama module -> the drama modules it imports."""
    modules = {}
    for path in (SRC / "drama").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        type_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                     and "TYPE_CHECKING" in ast.unparse(block.test) for node in ast.walk(block)}
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def longest_chain(graph: dict[str, set[str]]) -> list[str]:
    @functools.cache
    def from_(module: str, seen: frozenset[str]) -> tuple[str, ...]:
        best: tuple[str, ...] = ()
        for target in graph[module] - seen:
            chain = from_(target, seen | {module})
            best = chain if len(chain) > len(best) else best
        return (module, *best)

    return list(max((from_(module, frozenset()) for module in graph), key=len))


def test_the_longest_chain_of_imports_is_short():
    chain = longest_chain(import_graph())
    print(f"{len(chain)} modules: {' -> '.join(chain)}")
    assert len(chain) <= LONGEST_CHAIN, " -> ".join(chain)


def test_the_chain_is_measured_through_function_level_imports():
    graph = import_graph()
    assert "drama.fit" in graph["drama.cli"]  # cmd_fit imports drama.fit inside the function
    assert "drama.world_model" not in graph["drama.acting"]  # only under TYPE_CHECKING there
