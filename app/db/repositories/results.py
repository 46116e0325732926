"""What a statement's result says that SQLAlchemy's types leave out."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import CursorResult, Result


def rows_changed(result: Result[Any]) -> int:
    """Return how many rows an UPDATE or DELETE matched.

    `Session.execute` is typed to return a `Result`; for a DML statement it is the
    `CursorResult` that carries `rowcount`.
    """
    if not isinstance(result, CursorResult):
        raise TypeError(f"{type(result).__name__} is not the result of an UPDATE or DELETE")
    return result.rowcount
