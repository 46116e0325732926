"""The declarative base every table shares, and the column helpers they use.

Our own registry (not SQLModel's global one) carries a naming convention, so
every index and constraint has a predictable name that migrations can refer
to, and nothing a test or a library declares leaks into our metadata.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.orm import registry
from sqlmodel import SQLModel

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Model(SQLModel, registry=registry(metadata=sa.MetaData(naming_convention=NAMING_CONVENTION))):
    """Root of every `XBase` and table model; its `metadata` is what Alembic compares."""


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime, the only kind the tables store."""
    return datetime.now(UTC)


def _enum_values(enum_cls: type[StrEnum]) -> list[str]:
    return [member.value for member in enum_cls]


def enum_type(enum_cls: type[StrEnum]) -> sa.Enum:
    """Store a StrEnum by value in a VARCHAR(32): adding a member needs no migration.

    No native PostgreSQL enum and no CHECK constraint, on purpose; reads still
    return enum members, and writing an unknown value fails at flush time.
    """
    return sa.Enum(
        enum_cls,
        native_enum=False,
        length=32,
        values_callable=_enum_values,
        validate_strings=True,
    )


class Stored(Protocol):
    """A table row, whose `id` the database gives it when its INSERT is flushed."""

    @property
    def id(self) -> int | None: ...


def persisted_id(row: Stored) -> int:
    """Return the id of a row the database has stored (read, or added and flushed)."""
    if row.id is None:
        raise ValueError(f"the {type(row).__name__} has no id before its INSERT is flushed")
    return row.id


def column_values(row: SQLModel, wanted: type[BaseModel]) -> dict[str, Any]:
    """Return the row's columns that `wanted` has a field of the same name for, read through
    the session (an expired attribute loads); no other column, a secret one least of all."""
    columns = type(row).model_fields
    return {name: getattr(row, name) for name in wanted.model_fields if name in columns}
