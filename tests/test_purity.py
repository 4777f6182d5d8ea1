"""The package uses the libraries through their public API only and keeps no run state at module level."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vae_lightning"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def tree_of(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_attribute_of_another_object_or_library(path):
    """`obj._name` only on `self` or `cls` (the class's own state); no import from a library's private module."""
    found = []
    for node in ast.walk(tree_of(path)):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module and not node.module.startswith("vae_lightning"):
            names = [*node.module.split("."), *(alias.name for alias in node.names)]
            if any(is_private(name) for name in names):
                found.append(f"line {node.lineno}: from {node.module} import ...")
    assert not found, found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_method_of_another_object_is_replaced(path):
    """No `setattr`, no `__setattr__` override, no assignment to an attribute of a class or module."""
    found = []
    for node in ast.walk(tree_of(path)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr":
            found.append(f"line {node.lineno}: setattr")
        elif isinstance(node, ast.FunctionDef) and node.name == "__setattr__":
            found.append(f"line {node.lineno}: __setattr__")
    assert not found, found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_run_state_or_warning_filters_at_module_level(path):
    """Module level holds constants only: no containers but named constant tables (UPPER_CASE), as a cache keyed
    by `id()` of a run's objects would leak between the jobs of an in-process sweep; no `id()` keys; and no
    warning filters installed at import."""
    found = []
    tree = tree_of(path)
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        constant = all(isinstance(t, ast.Name) and t.id.lstrip("_").isupper() for t in targets)
        if targets and isinstance(node.value, ast.Dict | ast.List | ast.Set) and not constant:
            found.append(f"line {node.lineno}: a mutable container at module level")
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            func = node.value.func
            if isinstance(func, ast.Attribute) and func.attr in ("filterwarnings", "simplefilter"):
                found.append(f"line {node.lineno}: warnings.{func.attr} at import")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "id":
            found.append(f"line {node.lineno}: id()")
    assert not found, found


def test_the_module_reads_like_a_lightning_example():
    assert len((PACKAGE / "module.py").read_text().splitlines()) <= 280  # the contract, building, evaluation
    names = {node.name for node in ast.walk(tree_of(PACKAGE / "module.py")) if isinstance(node, ast.ClassDef)}
    assert names == {"VAEModule"}  # one class; the reducers it uses live in `metrics.py`


def test_the_commands_answer_a_bad_value_without_importing_lightning_or_torch():
    """A mistyped key, `--help` or a bad value is answered in about a second: the commands' modules import
    Lightning and torch (seconds) only when there is work for them."""
    import subprocess
    import sys

    modules = ["vae_lightning.train", "vae_lightning.evaluate", "vae_lightning.export", "vae_lightning.morph"]
    probe = f"import sys\nfor m in {modules}: __import__(m)\nprint(sorted({{'torch', 'lightning'}} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
