"""The documents name only files that exist: a moved module must take its mentions along.

`docs/architecture.md`, `README.md` and `bench/README.md` cite code by path in
backticks (`app/sync/service.py`); the README's "What is where" table also
names files relative to its row's directory (`problems.py` in `app/api/`).
Every such path must exist in the tree, or a reader following the map gets lost.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ("docs/architecture.md", "README.md", "bench/README.md")

# A backticked path into the tree; what a bench run writes under bench/results/ is not.
TREE_PATH = re.compile(r"`((?:app|tests|bench|alembic|docs)/[^`\s]*)`")
GENERATED = "bench/results/"

# A backticked file or directory name without a leading package, e.g. `problems.py`.
RELATIVE_NAME = re.compile(r"`([\w.]+(?:\.py|\.md|/))`")


def _missing(paths: set[str], under: Path = ROOT) -> list[str]:
    return sorted(path for path in paths if not (under / path).exists())


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_path_a_document_names_exists(document: str) -> None:
    text = (ROOT / document).read_text(encoding="utf-8")
    paths = {path for path in TREE_PATH.findall(text) if not path.startswith(GENERATED)}
    assert paths, f"{document} names no path at all: the pattern no longer matches it"
    assert not _missing(paths), f"{document} names paths that do not exist: {_missing(paths)}"


def _what_is_where_rows() -> list[tuple[list[str], str]]:
    """The README table's rows: the directories or files of the first cell, and the second."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## What is where", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            rows.append((re.findall(r"`([^`]+)`", cells[0]), cells[1]))
    return rows


def test_the_what_is_where_table_names_files_that_exist() -> None:
    rows = _what_is_where_rows()
    assert len(rows) > 10, f"the README's 'What is where' table was not found: {rows}"
    missing = []
    for places, description in rows:
        missing += [f"first cell {place}" for place in _missing(set(places))]
        directories = [ROOT / place for place in places if place.endswith("/")]
        for name in set(RELATIVE_NAME.findall(description)):
            if not any((where / name).exists() for where in [*directories, ROOT]):
                missing.append(f"{name} (row {places})")
    assert not missing, f"the 'What is where' table names what does not exist: {missing}"
