"""Every list ordered by id ends on its last full page: no next cursor leads to an empty page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from app.db import session_scope
from app.db.models import Notification, SyncRun, WebhookDelivery, WebhookEndpoint
from tests.support.factories import create_mailbox, id_of
from tests.support.live_api import LiveApi

LIMIT = 2
# Adds `n` rows to one list; returns the list's path and the new ids in the order it lists them.
AddRows = Callable[[Session, int], tuple[str, list[int]]]


def ids(rows: list[SyncRun] | list[WebhookDelivery] | list[Notification]) -> list[int]:
    return [row.id for row in rows if row.id is not None]


def new_endpoint(session: Session) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(url="https://hooks.example/x", secret_enc="not-a-real-token")
    session.add(endpoint)
    session.flush()
    return endpoint


def add_mailboxes(session: Session, n: int) -> tuple[str, list[int]]:
    mailboxes = [create_mailbox(session, owner_user_id="pager") for _ in range(n)]
    return "/v1/mailboxes?owner=pager", [id_of(mailbox) for mailbox in mailboxes]


def add_sync_runs(session: Session, n: int) -> tuple[str, list[int]]:
    mailbox_id = id_of(create_mailbox(session))
    runs = [SyncRun(mailbox_id=mailbox_id) for _ in range(n)]
    session.add_all(runs)
    session.flush()
    return f"/v1/mailboxes/{mailbox_id}/sync-runs", ids(runs)[::-1]  # newest first


def add_webhooks(session: Session, n: int) -> tuple[str, list[int]]:
    endpoints = [new_endpoint(session) for _ in range(n)]
    return "/v1/webhooks", [endpoint.id for endpoint in endpoints if endpoint.id is not None]


def add_deliveries(session: Session, n: int) -> tuple[str, list[int]]:
    endpoint = new_endpoint(session)
    assert endpoint.id is not None
    attempts = [
        WebhookDelivery(endpoint_id=endpoint.id, webhook_id=f"msg_{i}", event_type="webhook.test")
        for i in range(n)
    ]
    session.add_all(attempts)
    session.flush()
    return f"/v1/webhooks/{endpoint.id}/deliveries", ids(attempts)[::-1]  # newest first


def add_notifications(session: Session, n: int) -> tuple[str, list[int]]:
    pending = [Notification(user_id="pager", kind="test", title="Hello") for _ in range(n)]
    session.add_all(pending)
    session.flush()
    return "/v1/users/pager/notifications", ids(pending)


LISTS: dict[str, AddRows] = {
    "mailboxes": add_mailboxes,
    "sync runs": add_sync_runs,
    "webhooks": add_webhooks,
    "webhook deliveries": add_deliveries,
    "notifications": add_notifications,
}


def follow(live_api: LiveApi, path: str) -> list[dict[str, Any]]:
    """Every page from the first to the one without a `next_cursor` (at most ten)."""
    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(pages) < 10:
        params: dict[str, Any] = {"limit": LIMIT} | ({"cursor": cursor} if cursor else {})
        answer = live_api.client.get(path, params=params)
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        cursor = pages[-1]["next_cursor"]
        if cursor is None:
            break
    return pages


@pytest.mark.parametrize("add_rows", LISTS.values(), ids=LISTS.keys())
def test_the_last_full_page_has_no_next_cursor(
    live_api: LiveApi, engine: Engine, add_rows: AddRows
) -> None:
    with session_scope(engine) as session:
        path, listed = add_rows(session, 2 * LIMIT)

    pages = follow(live_api, path)

    assert [[item["id"] for item in page["items"]] for page in pages] == [
        listed[:LIMIT],
        listed[LIMIT:],
    ]
    assert pages[-1]["next_cursor"] is None
