"""Pending login notifications and the recipients of system mailboxes, as the API serves them."""

from __future__ import annotations

from sqlmodel import Session

from app.db.models import Notification, NotificationRecipient, utcnow
from app.db.repositories.notifications import (
    get_notification,
    replace_notification_recipients,
)
from app.notify.errors import NotificationNotFoundError


def acknowledge_notification(session: Session, notification_id: int) -> Notification:
    """Mark a notification seen; acknowledging it twice is harmless."""
    notification = get_notification(session, notification_id)
    if notification is None:
        raise NotificationNotFoundError(f"notification {notification_id} does not exist")
    if notification.acknowledged_at is None:
        notification.acknowledged_at = utcnow()
    return notification


def set_notification_recipients(
    session: Session, recipients: list[tuple[str, str | None]]
) -> list[NotificationRecipient]:
    """Replace the set of users who hear about system mailboxes with `(user id, email)` pairs."""
    rows = [NotificationRecipient(user_id=user_id, email=email) for user_id, email in recipients]
    replace_notification_recipients(session, rows)
    return rows
