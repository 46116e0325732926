"""A pending "flash" message the CRM shows a user after login, until acknowledged."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field

from app.db.models.base import Model, utcnow


class NotificationBase(Model):
    user_id: str = Field(max_length=255)
    mailbox_id: int | None = Field(
        default=None, foreign_key="mailbox.id", ondelete="CASCADE", index=True
    )
    kind: str = Field(max_length=64, description="e.g. credentials_invalid")
    title: str = Field(max_length=255)
    body: str = Field(default="", sa_type=sa.Text)
    reconnect_url: str | None = Field(
        default=None, max_length=2048, description="Where the owner fixes the mailbox."
    )


class Notification(NotificationBase, table=True):
    __table_args__ = (
        sa.Index("ix_notification_user_id_acknowledged_at", "user_id", "acknowledged_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    acknowledged_at: datetime | None = None
