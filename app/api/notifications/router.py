"""Pending login notifications, their acknowledgement, and who hears about system mailboxes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Body, Path

from app.api.auth import full_key_router
from app.api.deps import DATABASE_ONLY, MAX_ROW_ID, SessionDep
from app.api.notifications.schemas import NotificationRead, NotificationRecipientItem
from app.api.pagination import (
    CursorQuery,
    LimitQuery,
    Page,
    decode_id_cursor,
    id_page,
)
from app.api.problems import (
    ApiError,
    FieldError,
    missing,
    problem_responses,
)
from app.db.repositories.notifications import pending_notifications
from app.notify.login_notifications import acknowledge_notification, set_notification_recipients

router = full_key_router("/v1", "notifications")

UserIdPath = Annotated[
    str, Path(min_length=1, max_length=255, pattern=r"^[^\x00]+$", description="A CRM user id.")
]
NotificationIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="A notification id.")]


@router.get(
    "/users/{user_id}/notifications",
    operation_id="list_pending_notifications",
    summary="The user's unacknowledged notifications, oldest first (show them after login)",
    response_model=Page[NotificationRead],
    dependencies=[DATABASE_ONLY],
)
def list_pending_notifications(
    session: SessionDep, user_id: UserIdPath, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> Page[NotificationRead]:
    after_id = decode_id_cursor(cursor)
    pending = pending_notifications(session, user_id, limit=limit + 1, after_id=after_id)
    return id_page(pending, limit, NotificationRead.of)


@router.post(
    "/notifications/{notification_id}/ack",
    operation_id="acknowledge_notification",
    summary="Mark a notification seen, so it is no longer pending",
    response_model=NotificationRead,
    responses=problem_responses(missing("notification")),
    dependencies=[DATABASE_ONLY],
)
def ack_notification(session: SessionDep, notification_id: NotificationIdPath) -> NotificationRead:
    return NotificationRead.of(acknowledge_notification(session, notification_id))


@router.put(
    "/notification-recipients",
    operation_id="set_notification_recipients",
    summary="Set the CRM users who hear about system mailboxes (replaces the whole list)",
    response_model=list[NotificationRecipientItem],
    dependencies=[DATABASE_ONLY],
)
def put_notification_recipients(
    session: SessionDep, body: Annotated[list[NotificationRecipientItem], Body()]
) -> list[NotificationRecipientItem]:
    user_ids = [item.user_id for item in body]
    if len(set(user_ids)) != len(user_ids):
        message = "each user_id may appear once"
        raise ApiError(
            422,
            "validation_error",
            "The request is invalid",
            message,
            errors=[FieldError(field="user_id", message=message)],
        )
    rows = set_notification_recipients(session, [(item.user_id, item.email) for item in body])
    return [NotificationRecipientItem.of(row) for row in rows]
