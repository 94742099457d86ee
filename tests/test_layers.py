"""Layers point one way: the run imports tasks, algos and core; core imports none of them; launchers own their
settings and the Hydra plugins import them, never the reverse. Checked on every import statement, lazy ones
included, and every module is imported once to show it imports without starting anything."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

from rlforge_testing import ROOT

# Package -> top-level packages it must never import.
FORBIDDEN = {
    "core": {"runner", "tasks", "algos", "launchers", "hydra_plugins", "bench", "reports", "video"},
    "tasks": {"runner", "algos", "launchers", "hydra_plugins", "bench", "reports", "video"},
    "algos": {"runner", "tasks", "launchers", "hydra_plugins", "bench", "reports", "video"},
    "launchers": {"runner", "tasks", "algos", "hydra_plugins", "bench", "reports", "video"},
    "video": {"runner", "algos", "launchers", "hydra_plugins", "bench", "reports"},
    "runner": {"hydra_plugins"},
}
PACKAGES = sorted({*FORBIDDEN, "hydra_plugins", "bench", "reports"})


def modules_of(package: str) -> list[str]:
    """Every module of a top-level package of the project, the package itself included."""
    if package == "hydra_plugins":
        return [
            f"hydra_plugins.{path.parent.name}.{path.stem}".removesuffix(".__init__")
            for path in sorted((ROOT / "hydra_plugins").glob("*/*.py"))
            if path.parent.name.endswith("_launcher")
        ]
    found = [package]
    for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
        found.append(info.name)
    return found


def imported_packages(path: Path) -> set[str]:
    """Top-level names of everything a source file imports, at module level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package):
    offences = []
    for path in sorted((ROOT / package).rglob("*.py")):
        wrong = imported_packages(path) & FORBIDDEN[package]
        offences += [f"{path.relative_to(ROOT)} imports {name}" for name in sorted(wrong)]
    assert offences == []


def test_the_check_sees_lazy_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from tasks.registry import build_env\n    import algos.ppo\n")
    assert imported_packages(source) == {"tasks", "algos"}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_imports(package):
    for name in modules_of(package):
        importlib.import_module(name)
