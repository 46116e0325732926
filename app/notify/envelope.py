"""The one shape of an event on every channel: webhook body, SSE `data:`, API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.db.models import Event

# Sent to one endpoint by `POST /v1/webhooks/{id}/test`; no other channel sees it.
WEBHOOK_TEST_EVENT = "webhook.test"
CREDENTIALS_INVALID = "mailbox.credentials_invalid"
CREDENTIALS_RESTORED = "mailbox.credentials_restored"

# Every type the outbox holds (DESIGN "Events"); webhook filters and SSE `types` name these.
EventType = Literal[
    "email.received",
    "email.updated",
    "email.deleted",
    "mailbox.synced",
    "mailbox.sync_failed",
    "mailbox.credentials_invalid",
    "mailbox.credentials_restored",
    "folder.deleted",
    "folder.renamed",
    "folder.reset",
]


class EventEnvelope(BaseModel):
    """An event: what happened (`type`), to which mailbox and owner, and its facts."""

    id: int = Field(description="Increasing; SSE `id:` and the resume point of Last-Event-ID.")
    type: str = Field(description="e.g. `email.received`, `mailbox.credentials_invalid`.")
    created_at: datetime
    mailbox_id: int | None = Field(description="null once the mailbox is deleted.")
    owner: str | None = Field(description="The mailbox owner's CRM user id; null: a system one.")
    data: dict[str, Any]

    @classmethod
    def of(cls, event: Event) -> EventEnvelope:
        assert event.id is not None
        return cls(
            id=event.id,
            type=event.type,
            created_at=event.created_at,
            mailbox_id=event.mailbox_id,
            owner=event.owner_user_id,
            data=event.data,
        )
