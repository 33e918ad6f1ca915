"""The import graph of the three packages, read from the source (every `import` statement,
also those inside functions): no cycles, and dependencies one way only: `pipelines` imports
neither `monitor` nor `finetune`; `monitor` never imports `finetune` (the `monitor finetune`
commands come through an entry point). Also the layout rules: at most 14 modules flat in
`monitor/`, no product file over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

from support import REPO

PACKAGES = ("monitor", "pipelines", "finetune")
MAX_FLAT_MODULES = 14
MAX_LINES = 400


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports: `from a.b import c` is a.b.c when c is a module,
    else a.b; relative imports resolved against the module's package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a name inside a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imported_modules(name, path, known) for name, path in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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


def test_the_checker_finds_a_cycle_and_a_wrong_way_import() -> None:
    """The checks below can fail: a made-up graph with a cycle is reported."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    files = module_files()
    # A real import inside a function counts: monitor.describe.factory imports the VLM describer lazily.
    assert "monitor.describe.vlm" in imported_modules(
        "monitor.describe.factory", files["monitor.describe.factory"], set(files)
    )


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_dependencies_point_one_way() -> None:
    wrong = []
    for name, targets in graph().items():
        top = name.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if (top == "pipelines" and other in ("monitor", "finetune")) or (top == "monitor" and other == "finetune"):
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_monitor_is_a_package_per_stage() -> None:
    flat = sorted(p.name for p in (REPO / "monitor").glob("*.py"))
    assert len(flat) <= MAX_FLAT_MODULES, flat
    stages = (
        "config",
        "sources",
        "gate",
        "describe",
        "detect",
        "order",
        "sinks",
        "daemon",
        "readers",
        "bench",
        "scene",
    )
    for stage in stages:
        assert (REPO / "monitor" / stage / "__init__.py").is_file(), stage


def test_no_product_file_over_400_lines() -> None:
    long = {}
    for path in module_files().values():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            long[str(path.relative_to(REPO))] = lines
    assert long == {}
