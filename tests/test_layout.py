"""The package's layout: imports between its subpackages and top-level modules point one way
(docs/architecture.md). Function-level imports count too: a circle through a lazy import is still a
circle a reader has to untangle."""

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "bridgedepth"


def _unit(module: str) -> str:
    """The subpackage or top-level module a dotted name belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "bridgedepth"


def _edges() -> dict[tuple[str, str], str]:
    """(unit, imported unit) -> one example import, for every import inside the package."""
    out: dict[tuple[str, str], str] = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("").parts
        module = ".".join(rel[:-1] if rel[-1] == "__init__" else rel)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                if t.startswith("bridgedepth") and _unit(module) != _unit(t):
                    out.setdefault((_unit(module), _unit(t)), f"{path.relative_to(ROOT.parent)}: imports {t}")
    return out


def test_no_import_circles_between_subpackages_and_modules():
    edges = _edges()
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)

    def reaches(a: str, b: str) -> bool:
        seen, todo = set(), [a]
        while todo:
            n = todo.pop()
            if n == b:
                return True
            if n not in seen:
                seen.add(n)
                todo.extend(graph[n])
        return False

    circles = [f"{a} -> {b} ({why}) and back" for (a, b), why in edges.items() if reaches(b, a)]
    assert not circles, "\n".join(circles)
    # the analysis sees lazy imports: the demo's pipeline imports the zoo inside a function
    assert ("pipeline", "zoo") in edges


def test_leaves_import_nothing_of_the_package():
    edges = _edges()
    for leaf in ("errors", "demo_rows"):
        assert not [b for a, b in edges if a == leaf], leaf
    assert {b for a, b in edges if a == "config"} <= {"errors"}
    assert {b for a, b in edges if a == "stages"} <= {"config", "errors"}  # the settings comparison
