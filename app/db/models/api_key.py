"""A key for the `/v1` API, stored as a SHA-256 hash; only `prefix` is shown again."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field

from app.db.models.base import Model, utcnow


class ApiKeyBase(Model):
    name: str = Field(max_length=100)


class ApiKey(ApiKeyBase, table=True):
    __tablename__ = "api_key"

    id: int | None = Field(default=None, primary_key=True)
    prefix: str = Field(max_length=16, unique=True)
    key_hash: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
