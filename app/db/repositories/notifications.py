"""Queries on `notification` (pending login messages) and `notification_recipient`."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from app.db.models import Notification, NotificationRecipient
from app.db.repositories.results import rows_changed


def add_notification(
    session: Session,
    *,
    user_id: str,
    mailbox_id: int | None,
    kind: str,
    title: str,
    body: str,
    reconnect_url: str | None = None,
) -> Notification:
    notification = Notification(
        user_id=user_id,
        mailbox_id=mailbox_id,
        kind=kind,
        title=title,
        body=body,
        reconnect_url=reconnect_url,
    )
    session.add(notification)
    return notification


def get_notification(session: Session, notification_id: int) -> Notification | None:
    return session.get(Notification, notification_id)


def pending_notifications(
    session: Session, user_id: str, *, limit: int, after_id: int | None = None
) -> list[Notification]:
    """Return the user's unacknowledged notifications, oldest first, after `after_id`."""
    statement = select(Notification).where(
        Notification.user_id == user_id, col(Notification.acknowledged_at).is_(None)
    )
    if after_id is not None:
        statement = statement.where(col(Notification.id) > after_id)
    return list(session.exec(statement.order_by(col(Notification.id)).limit(limit)))


def acknowledge_mailbox_notifications(
    session: Session, mailbox_id: int, kind: str, now: datetime
) -> int:
    """Acknowledge every pending notification of this kind about the mailbox."""
    result = session.execute(
        sa.update(Notification)
        .where(
            col(Notification.mailbox_id) == mailbox_id,
            col(Notification.kind) == kind,
            col(Notification.acknowledged_at).is_(None),
        )
        .values(acknowledged_at=now)
    )
    return rows_changed(result)


def notification_recipients(session: Session) -> list[NotificationRecipient]:
    statement = select(NotificationRecipient).order_by(col(NotificationRecipient.user_id))
    return list(session.exec(statement))


def get_notification_recipient(session: Session, user_id: str) -> NotificationRecipient | None:
    return session.get(NotificationRecipient, user_id)


def replace_notification_recipients(
    session: Session, recipients: list[NotificationRecipient]
) -> None:
    """Make `recipients` the whole set: the capability is granted as one list."""
    session.execute(sa.delete(NotificationRecipient))
    session.add_all(recipients)
    session.flush()
