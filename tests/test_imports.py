"""Dependencies point one way: the model folders import `smolhub_hub`, never the reverse, and no module imports
itself back through others. Every import counts, also one inside a function (it runs sooner or later)."""

from __future__ import annotations

import ast
import random
import subprocess
import sys
from pathlib import Path

from smolhub_hub.registry import family_names
from tests.helpers import REPO

PACKAGES = ["smolhub_hub", *family_names(), "smol_experiments"]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def imported_modules(name: str, path: Path) -> set[str]:
    """The repository's modules that `name` imports anywhere in its file (module level or inside a function)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . / from ..x
                root = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*root, base] if base else root)
            targets = [f"{base}.{a.name}" for a in node.names]  # a submodule, or else a name in `base`
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import a.b.c` where c is a function: the module a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def test_smolhub_hub_imports_no_model_folder():
    folders = tuple(f"{f}." for f in family_names()) + tuple(family_names())
    edges = [(a, b) for a, targets in GRAPH.items() if a.startswith("smolhub_hub") for b in targets
             if b.startswith(folders)]
    assert not edges, f"smolhub_hub imports model folders: {edges}"
    text = "\n".join(p.read_text() for n, p in MODULES.items() if n.startswith("smolhub_hub"))
    assert "__import__(" not in text and "import_module(f\"{" not in text  # nor by a computed name


def test_there_is_no_import_cycle():
    """Depth-first search for a back edge; the message names the cycle."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str):
        state[node] = 1
        path.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)


def test_every_module_imports_alone_and_in_any_order():
    """One fresh interpreter imports every module in a shuffled order: a module that works only when another
    was imported first (a hidden cycle or a missing import) fails here. The order is printed on failure."""
    names = sorted(MODULES)
    random.Random().shuffle(names)
    code = f"import importlib\nfor name in {names!r}:\n    importlib.import_module(name)\nprint('ok')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), f"order {names}:\n{proc.stderr[-3000:]}"
