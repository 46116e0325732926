"""A key for the `/v1` API, stored as a SHA-256 hash; only `prefix` is shown again.

`scope` says what the key opens: `full`, every route (the CRM backend's key), or
`status`, only the health routes (the read-only key an operator pastes into the
status page: the one key meant for a browser).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field

from app.db.models.base import Model, enum_type, utcnow


class ApiKeyScope(StrEnum):
    """What a key opens: every route, or the health routes alone."""

    FULL = "full"
    STATUS = "status"


class ApiKeyBase(Model):
    name: str = Field(max_length=100)


class ApiKey(ApiKeyBase, table=True):
    __tablename__ = "api_key"

    id: int | None = Field(default=None, primary_key=True)
    prefix: str = Field(max_length=16, unique=True)
    key_hash: str = Field(max_length=64)
    scope: ApiKeyScope = Field(
        default=ApiKeyScope.FULL,
        sa_type=enum_type(ApiKeyScope),
        sa_column_kwargs={"server_default": sa.text("'full'")},
    )
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
