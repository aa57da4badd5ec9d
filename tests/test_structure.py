"""The package's shape: nothing in hparam_sweep/ imports a top-level script, and its modules import
one another one way only (no cycle), counting imports inside functions too."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hparam_sweep"
SCRIPTS = {p.stem for p in ROOT.glob("*.py")}  # train, hparams, data_split


def imports(path):
    """The top-level module names and the hparam_sweep modules that the file at path imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            if node.module == "hparam_sweep":
                names |= {f"hparam_sweep.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom):  # relative: from . import x, from .x import y
            raise AssertionError(f"{path.name}: use absolute imports (from hparam_sweep import ...)")
    return names


def graph():
    """{module: {hparam_sweep modules it imports}} over the package."""
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    return {p.stem: {n.split(".")[1] for n in imports(p) if n.startswith("hparam_sweep.")} & modules
            for p in PACKAGE.glob("*.py") if p.stem in modules}


def cycle(edges):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = "done"
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_package_never_imports_a_top_level_script():
    assert SCRIPTS >= {"train", "hparams", "data_split"}
    offending = {p.name: sorted(imports(p) & SCRIPTS) for p in PACKAGE.glob("*.py") if imports(p) & SCRIPTS}
    assert not offending, f"the package imports top-level scripts: {offending}"


def test_the_packages_imports_go_one_way():
    edges = graph()
    assert len(edges) >= 10 and edges["loop"] >= {"experiment", "search", "trial"}  # the graph is really read
    assert cycle(edges) is None, f"import cycle: {' -> '.join(cycle(edges))}"


@pytest.mark.parametrize("edges, expected", [({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
                                             ({"a": {"b"}, "b": set()}, None)])
def test_a_cycle_is_found(edges, expected):
    assert cycle(edges) == expected
