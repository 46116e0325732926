"""The layers hold: the import contracts of `pyproject.toml`, and SQL only under `app/db`.

`make lint` runs the contracts with `lint-imports`; here they run on the real
tree (kept) and on a copy of it with one wrong-way import added (broken, and
the report names that import), so a contract that checks nothing cannot pass
unnoticed. What an import rule cannot say, that SQL statements are built and
run only in the repositories, is an AST walk over `app/`.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

# Constructors of SQL statements, from sqlalchemy or sqlmodel.
STATEMENTS = frozenset({"select", "update", "delete", "insert", "text"})
SQL_PACKAGES = ("sqlalchemy", "sqlmodel")


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run the project's contracts over the `app` package found in `tree`."""
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(tree / "pyproject.toml")],
        cwd=tree,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_tree_keeps_every_import_contract() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, f"lint-imports failed:\n{result.stdout}{result.stderr}"
    assert "0 broken" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("module", "wrong_import", "reported"),
    [
        ("app/imap/errors.py", "import app.db.models", "app.imap.errors -> app.db.models"),
        ("app/db/engine.py", "import app.sync.errors", "app.db.engine -> app.sync.errors"),
        ("app/notify/errors.py", "import app.api.links", "app.notify.errors -> app.api.links"),
        ("app/sync/errors.py", "import app.watch", "app.sync.errors -> app.watch"),
        ("app/watch/__init__.py", "import app.api.links", "app.watch -> app.api.links"),
        ("app/api/links.py", "import app.sync.errors", "app.api.links -> app.sync.errors"),
        ("app/api/links.py", "import app.imap.wire", "app.api.links -> app.imap.wire"),
    ],
)
def test_a_wrong_way_import_breaks_a_contract(
    tmp_path: Path, module: str, wrong_import: str, reported: str
) -> None:
    shutil.copytree(ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    source = tmp_path / module
    source.write_text(f"{source.read_text()}\n{wrong_import}  # the wrong way\n")

    result = _lint_imports(tmp_path)

    assert result.returncode != 0, f"lint-imports let `{wrong_import}` in {module} pass"
    assert reported in result.stdout, f"the report does not name {reported}:\n{result.stdout}"


def _sql_statements(path: Path) -> list[int]:
    """Return the lines where `path` builds or runs a SQL statement."""
    tree = ast.parse(path.read_text(), filename=str(path))
    sql_modules = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name in SQL_PACKAGES
    }
    return sorted(
        {
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.stmt | ast.expr) and _is_sql(node, sql_modules)
        }
    )


def _is_sql(node: ast.AST, sql_modules: set[str]) -> bool:
    if isinstance(node, ast.ImportFrom):  # from sqlmodel import select
        imported = {alias.name for alias in node.names}
        return (node.module or "").startswith(SQL_PACKAGES) and bool(imported & STATEMENTS)
    if isinstance(node, ast.Attribute):  # sa.text(...)
        module = node.value.id if isinstance(node.value, ast.Name) else None
        return node.attr in STATEMENTS and module in sql_modules
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        # session.exec(...), connection.execute(statement); a Redis pipeline's execute()
        # takes no argument.
        return node.func.attr == "exec" or (node.func.attr == "execute" and bool(node.args))
    return False


def _offenders() -> dict[str, list[int]]:
    found = {}
    for path in sorted((ROOT / "app").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if not relative.startswith("app/db/") and (lines := _sql_statements(path)):
            found[relative] = lines
    return found


def test_sql_statements_live_only_under_app_db() -> None:
    offenders = _offenders()
    report = "\n".join(f"{path}:{line}" for path, lines in offenders.items() for line in lines)
    assert not offenders, f"SQL outside app/db (move it into a repository):\n{report}"


def test_the_sql_check_finds_each_kind_of_statement(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text(
        "import sqlalchemy as sa\n"
        "from sqlmodel import col, select\n"
        "session.exec(query)\n"
        "connection.execute(sa.text('SELECT 1'))\n"
        "pipeline.execute()\n"
        "sa.exc.DBAPIError\n"
    )
    assert _sql_statements(module) == [2, 3, 4]
