"""Cursor pagination (`?limit=&cursor=` -> `next_cursor`), stable while rows are added.

A cursor is the sort key of the last row served, opaque to clients
(URL-safe base64 of JSON). Pages continue *after* that key, so rows inserted
meanwhile never make a page repeat or skip a row already listed.

A list asks its query for one row more than the page shows: that row only
tells whether another page follows, so the last page never carries a cursor
to an empty one.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Generic, Protocol, TypeVar

from fastapi import Query
from pydantic import BaseModel

from app.api.deps import MAX_ROW_ID
from app.api.problems import ApiError, FieldError

T = TypeVar("T")

MAX_PAGE_SIZE = 500

LimitQuery = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page.")]
# The document states what a cursor can look like (unpadded URL-safe base64); whether it
# is one this API made, only decoding tells (a 422 naming `cursor`).
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"
CursorQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=512,
        pattern=CURSOR_PATTERN,
        description="`next_cursor` of the previous page, as it was returned.",
    ),
]


class Page(BaseModel, Generic[T]):
    """One page of a list; `next_cursor` is null on the last page."""

    items: list[T]
    next_cursor: str | None


def encode_cursor(key: list[Any]) -> str:
    """Make an opaque cursor from the sort key of the last row of a page."""
    raw = json.dumps(key, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, length: int) -> list[Any]:
    """Read a cursor back; a cursor this API did not make is a 422 naming `cursor`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise bad_cursor() from exc
    if not isinstance(key, list) or len(key) != length:
        raise bad_cursor()
    return key


class _HasId(Protocol):
    @property
    def id(self) -> int | None: ...


RowT = TypeVar("RowT", bound=_HasId)


def id_page(rows: Sequence[RowT], limit: int, item: Callable[[RowT], T]) -> Page[T]:
    """Serve the first `limit` of `rows` (asked for with `limit + 1`) as a page of a list
    ordered by id; the cursor, after the last row served, only when more rows follow."""
    served = rows[:limit]
    next_cursor = encode_cursor([served[-1].id]) if len(rows) > limit else None
    return Page(items=[item(row) for row in served], next_cursor=next_cursor)


def decode_id_cursor(cursor: str | None) -> int | None:
    """Read a cursor made of one row id (lists ordered by id); no cursor, the first page."""
    if cursor is None:
        return None
    (row_id,) = decode_cursor(cursor, 1)
    if type(row_id) is not int or not 0 < row_id <= MAX_ROW_ID:
        raise bad_cursor()
    return row_id


def bad_cursor() -> ApiError:
    """The 422 for a cursor this API did not make."""
    message = "not a cursor this API returned"
    return ApiError(
        422,
        "validation_error",
        "The request is invalid",
        f"cursor: {message}",
        errors=[FieldError(field="cursor", message=message)],
    )
