"""training/ has no import cycles: a static check of every import statement (also the ones inside functions), and
the modules that used to form cycles import on their own in a fresh interpreter."""
from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from conftest import REPO


def _module_name(path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _training_imports(path, modules: set[str]) -> set[str]:
    """Names of training modules that ``path`` imports anywhere (module level, functions, TYPE_CHECKING blocks)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]  # from pkg import module
        found |= {n for n in names if n in modules}
    return found


def _import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in (REPO / "training").rglob("*.py")}
    modules = set(files)
    return {m: _training_imports(p, modules) - {m} - {m.rpartition(".")[0]} for m, p in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_training_import_graph_has_no_cycle():
    graph = _import_graph()
    assert "training.data.bag_index" in graph and "training.evaluate" in graph
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])
    # the two circles that were untied, and the names that stay importable from where they are used
    assert "training.data.bag_index" not in graph["training.data.pairs"]
    assert "training.trainer" not in graph["training.evaluate"]


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", ["training.data.pairs", "training.data.bag_index", "training.data.build",
                                    "training.evaluate", "training.trainer"])
def test_module_imports_alone_in_a_fresh_interpreter(module):
    code = (f"import {module} as m; from training.data.bag_index import Pair, PairConfig, make_pairs; "
            "from training.trainer import build_dataset, find_bags; from training.evaluate import evaluate_dataset")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
