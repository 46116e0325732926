"""Tests and the bench share code only through `tests.support`: no module imports a test
module or a conftest, so a test can be moved, renamed or deleted without breaking another."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    modules = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    modules |= {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    return modules


def test_tests_and_bench_import_nothing_of_tests_but_the_support_package() -> None:
    wrong = {
        f"{path.relative_to(ROOT)} imports {module}"
        for folder in ("tests", "bench")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for module in imported_modules(path)
        if (module == "tests" or module.startswith("tests."))
        and not module.startswith("tests.support")
    }
    assert sorted(wrong) == [], "move what is shared to tests/support"
