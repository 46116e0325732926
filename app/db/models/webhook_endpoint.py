"""A URL the CRM registered for signed event deliveries (Standard Webhooks).

An empty `event_types` list subscribes to every event type. `owner_user_id` and
`mailbox_id`, when set, narrow that further to one CRM user's or one mailbox's
events (app.notify.channels says how they match). `mailbox_id` has no foreign
key on purpose: deleting the mailbox must neither delete the endpoint nor turn
its filter into "every mailbox". Too many failed
deliveries in a row disable the endpoint and say why in `disabled_reason`.
After a secret rotation the replaced secret keeps signing, beside the new one,
until `previous_secret_expires_at`.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field

from app.db.models.base import Model, utcnow


class WebhookEndpointBase(Model):
    url: str = Field(max_length=2048)
    event_types: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    enabled: bool = True
    owner_user_id: str | None = Field(default=None, max_length=255)
    mailbox_id: int | None = None


class WebhookEndpoint(WebhookEndpointBase, table=True):
    __tablename__ = "webhook_endpoint"

    id: int | None = Field(default=None, primary_key=True)
    secret_enc: str = Field(sa_type=sa.Text)
    previous_secret_enc: str | None = Field(default=None, sa_type=sa.Text)
    previous_secret_expires_at: datetime | None = None
    disabled_reason: str | None = Field(default=None, sa_type=sa.Text)
    failure_count: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow, sa_column_kwargs={"onupdate": utcnow})
