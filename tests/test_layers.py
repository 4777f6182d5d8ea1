"""The package's layering, read from its source: the foundation (`core/`) imports nothing else of ours; models,
data and callbacks sit above it; the run and the tools on top; and no module imports another in a cycle, counting
imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vae_lightning"

# lower layers may be imported by higher ones, never the other way round
LAYERS = {
    "core": 0,
    "conf": 0,  # the packaged configs: no code
    "distributions": 1,
    "schedules": 1,
    "optim": 1,
    "metrics": 1,
    "posteriors": 1,
    "samplers": 2,
    "nets": 2,
    "likelihoods": 2,
    "priors": 2,
    "losses": 3,
    "data": 3,
    "module": 4,
    "callbacks": 5,
    "run": 6,
    "api": 7,
    "train": 8,
    "evaluate": 8,
    "morph": 8,
    "export": 8,
    "shards": 8,
    "demo": 8,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module of ours that `path` imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.split(".")[0] == "vae_lightning"}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {i for i in imports_of(path) if i in files and i != name} for name, path in files.items()}


def layer(name: str) -> int:
    return LAYERS[name.split(".")[1]] if "." in name else -1


def test_every_module_has_a_layer():
    assert {name.split(".")[1] for name in import_graph() if "." in name} == set(LAYERS)


def test_each_module_imports_only_its_own_layer_or_lower_ones():
    upward = [
        f"{name} imports {other}"
        for name, others in import_graph().items()
        for other in others
        if "." in name and layer(other) > layer(name)
    ]
    assert upward == []


def test_the_foundation_imports_nothing_else_of_ours():
    graph = import_graph()
    outside = {f"{name} -> {o}" for name in graph if name.startswith("vae_lightning.core") for o in graph[name]}
    assert {edge for edge in outside if not edge.split(" -> ")[1].startswith("vae_lightning.core")} == set()


def cycles_in(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of `graph` (module -> the modules it imports) that a depth-first search meets."""
    state: dict[str, str] = {}
    found: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for other in sorted(graph.get(name, ())):
            if state.get(other) == "open":
                found.append([*path[path.index(other) :], other])
            elif other not in state:
                visit(other, [*path, other])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return found


def test_no_module_imports_another_in_a_cycle():
    assert cycles_in(import_graph()) == []


def test_an_import_inside_a_function_counts(tmp_path, monkeypatch):
    """The checks above can fail: two modules that import each other, one of them inside a function, are a cycle."""
    package = tmp_path / "vae_lightning"
    (package / "run").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "module.py").write_text("def f():\n    from vae_lightning.run.checkpoints import load\n")
    (package / "run" / "__init__.py").write_text("")
    (package / "run" / "checkpoints.py").write_text("from vae_lightning.module import f\n\nload = f\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", package)
    graph = import_graph()
    assert cycles_in(graph) == [["vae_lightning.module", "vae_lightning.run.checkpoints", "vae_lightning.module"]]
    assert "vae_lightning.module imports vae_lightning.run.checkpoints" in [
        f"{name} imports {other}" for name, others in graph.items() for other in others if layer(other) > layer(name)
    ]
