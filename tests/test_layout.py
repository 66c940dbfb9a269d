"""The house rules of issue 25, checked: components never import a stage, and no module
grows past what a newcomer reads in one sitting (torchtune's tests/test_import_recipes.py habit)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "llava_star"
MAX_LINES = 500
# the recipes, and the command line that dispatches to them, may import stages
MAY_IMPORT_STAGES = ("stages/", "cli.py", "__main__.py")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_component_imports_a_stage():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(MAY_IMPORT_STAGES):
            continue
        stages = sorted(name for name in imported_modules(path) if name.startswith("llava_star.stages"))
        if stages:
            offenders[relative] = stages
    assert not offenders, f"components import stages (move what they need below the stage): {offenders}"


def test_no_module_is_longer_than_500_lines():
    long = {
        path.relative_to(PACKAGE).as_posix(): count
        for path in sorted(PACKAGE.rglob("*.py"))
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"
