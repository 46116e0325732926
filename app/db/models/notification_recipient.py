"""A CRM user holding the credential-notification capability: hears about system mailboxes."""

from __future__ import annotations

from sqlmodel import Field

from app.db.models.base import Model


class NotificationRecipientBase(Model):
    user_id: str = Field(max_length=255, primary_key=True)
    email: str | None = Field(default=None, max_length=320)


class NotificationRecipient(NotificationRecipientBase, table=True):
    __tablename__ = "notification_recipient"
