"""Client credentials of one OAuth provider (built in or plug-in), set over the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field

from app.db.models.base import Model, utcnow


class OAuthProviderSettingsBase(Model):
    client_id: str | None = Field(default=None, max_length=255)
    tenant: str | None = Field(default=None, max_length=255)
    enabled: bool = False
    extra: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)


class OAuthProviderSettings(OAuthProviderSettingsBase, table=True):
    __tablename__ = "oauth_provider_settings"

    name: str = Field(max_length=64, primary_key=True)
    client_secret_enc: str | None = Field(default=None, sa_type=sa.Text)
    updated_at: datetime = Field(default_factory=utcnow, sa_column_kwargs={"onupdate": utcnow})
