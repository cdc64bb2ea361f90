"""The package's layering, read from the source with ast (function-local imports count too):
no import cycle among dlmkit modules, no experiment imports another, and the shared layers
below never import an experiment."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dlmkit"


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if "assets" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The dlmkit modules `name` imports (a package's own submodule for `from package import sub`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def experiment_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "experiments" else None


def test_no_import_cycle_among_dlmkit_modules():
    edges = graph()
    # Tarjan's strongly connected components: any component of two or more modules is a cycle.
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    # a package __init__ importing its own submodules is not a cycle worth flagging unless they import back
    assert not cycles, f"import cycles: {cycles}"


def test_no_experiment_imports_another():
    crossing = [(a, b) for a, targets in graph().items() for b in targets
                if experiment_of(a) and experiment_of(b) and experiment_of(a) != experiment_of(b)]
    assert not crossing, crossing


def test_shared_layers_never_import_experiments():
    upward = [(a, b) for a, targets in graph().items() for b in targets
              if not a.startswith("dlmkit.experiments") and b.startswith("dlmkit.experiments")]
    assert not upward, upward


def test_the_experiments_are_where_the_layout_says():
    experiments = sorted(p.name for p in (PACKAGE / "experiments").iterdir() if (p / "__init__.py").exists())
    assert experiments == ["bridge", "clsd", "inverse", "self_spec", "specdiff"]
    assert not (PACKAGE / "phases").exists() and not (PACKAGE / "bridge").exists()
