"""Login notification and notification-recipient shapes of the API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.api.mailboxes.schemas import EMAIL_ADDRESS
from app.api.request_models import RequestModel
from app.db.models import Notification, NotificationRecipient


class NotificationRead(BaseModel):
    """A message the CRM shows the user after login, until acknowledged."""

    id: int
    user_id: str
    mailbox_id: int | None
    kind: str = Field(description="`credentials_invalid` or `connection_failing`.")
    title: str
    body: str
    reconnect_url: str | None = Field(
        description="The CRM page where the owner fixes the mailbox (REAUTH_URL_TEMPLATE)."
    )
    created_at: datetime
    acknowledged_at: datetime | None

    @classmethod
    def of(cls, notification: Notification) -> NotificationRead:
        """Read every field from the row's column of the same name."""
        return cls.model_validate(notification, from_attributes=True)


class NotificationRecipientItem(RequestModel):
    """A CRM user holding the credential-notification capability."""

    # NUL is refused: PostgreSQL text cannot hold it.
    user_id: str = Field(min_length=1, max_length=255, pattern=r"^[^\x00]+$")
    email: str | None = Field(
        default=None, max_length=320, pattern=EMAIL_ADDRESS, description="Where mail goes."
    )

    @classmethod
    def of(cls, recipient: NotificationRecipient) -> NotificationRecipientItem:
        return cls(user_id=recipient.user_id, email=recipient.email)
