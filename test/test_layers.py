"""The packages form layers and no import runs upward (README, "Layers"): a module may import its own
package and the packages below it, never one above. Imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Bottom to top. Perception sits below the policy because ARP reuses ViCLIP's transformer layers.
LAYERS = ("mirror_common", "sim_bridge", "mirror_perception", "mirror_policy", "mirror")
RANK = {name: rank for rank, name in enumerate(LAYERS)}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import of a package of this repository in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, name.split(".")[0]) for name in names if name.split(".")[0] in RANK]
    return found


def upward_imports(package: str) -> list[str]:
    rank = RANK[package]
    return [
        f"{path.relative_to(REPO)}:{line} imports {target} (layer {RANK[target]} above {package}, {rank})"
        for path in sorted((REPO / package).rglob("*.py"))
        for line, target in imported_packages(path)
        if RANK[target] > rank
    ]


@pytest.mark.parametrize("package", LAYERS)
def test_no_import_runs_upward(package: str) -> None:
    assert (REPO / package / "__init__.py").is_file()
    assert upward_imports(package) == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import os\n\ndef f():\n    from mirror.agent import MirrorAgent\n    import sim_bridge.cameras\n"
    )
    assert imported_packages(module) == [(4, "mirror"), (5, "sim_bridge")]


def test_every_package_of_the_repository_has_a_layer() -> None:
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert packages == set(LAYERS)
