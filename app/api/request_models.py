"""What every request body shares: JSON types taken as the OpenAPI document states them.

FastAPI validates a decoded body in pydantic's Python mode, whose lax rules read more
than the document says: `"yes"` or `1` as a boolean, `"5"` as an integer, `0` as a date
(1970-01-01, a sync window of the whole mailbox), a number as an instant. Request
models derive from `RequestModel` instead: strict types, and fields the document does
not list are refused rather than silently dropped. A day is an ISO `YYYY-MM-DD` string
(`IsoDate`), an instant an ISO 8601 one (`IsoDateTime`, for query parameters too), and
a count or id a `WholeNumber`: JSON Schema's `integer` includes `5.0`, which strict
mode alone would refuse.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Strict

# PostgreSQL text cannot hold NUL: a user id with one is refused, not a 500 from the database.
USER_ID_PATTERN = r"^[^\x00]+$"
NO_NUL_PATTERN = r"^[^\x00]*$"
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}.*)?")


class RequestModel(BaseModel):
    """A request body or a part of one: strict JSON types, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


def _iso_day(value: object) -> object:
    """Let only a `YYYY-MM-DD` string (or a date, from Python callers) through to parsing."""
    if isinstance(value, date) or (isinstance(value, str) and _ISO_DAY.fullmatch(value)):
        return value
    raise ValueError("must be a day written YYYY-MM-DD")


def _iso_instant(value: object) -> object:
    """Let only an ISO 8601 string (or a datetime, from Python callers) through to parsing."""
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_INSTANT.fullmatch(value)):
        return value
    raise ValueError("must be an ISO 8601 date-time, e.g. 2024-05-01T12:00:00Z")


def _whole_number(value: object) -> object:
    """Let an integer through, or a JSON number with no fraction (`5.0`); never a bool."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError("must be a whole number")


# Strict mode refuses strings for dates in Python mode; the string is checked here instead.
IsoDate = Annotated[date, Strict(False), BeforeValidator(_iso_day)]
IsoDateTime = Annotated[datetime, Strict(False), BeforeValidator(_iso_instant)]
WHOLE_NUMBER = BeforeValidator(_whole_number)
WholeNumber = Annotated[int, WHOLE_NUMBER]
# A bounded one that may be null: `Annotated[int, Field(ge=1), WHOLE_NUMBER] | None`. Bounds
# given after the validator (`WholeNumber | None = Field(ge=1)`) still hold, but reach the
# OpenAPI document as pydantic's `ge`, which no client knows, instead of `minimum`.
