"""Login notifications: made once per credential failure, listed, acknowledged, cleared."""

from __future__ import annotations

import asyncio

from sqlalchemy import Engine

from app.config import Settings
from app.db import session_scope
from app.db.models import Mailbox, MailboxStatus
from app.db.repositories.events import record_event
from app.notify.dispatcher import dispatch_due
from app.security import SecretBox
from tests.support.factories import create_mailbox
from tests.support.live_api import LiveApi


def dispatch(engine: Engine, settings: Settings) -> None:
    asyncio.run(dispatch_due(engine, settings, SecretBox.from_settings(settings)))


def fail_credentials(engine: Engine, mailbox_id: int) -> None:
    """Do what the sync engine does when a login is refused."""
    with session_scope(engine) as session:
        mailbox = session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        mailbox.status = MailboxStatus.AUTH_FAILED
        data = {"error_code": "auth_failed", "message": "AUTHENTICATIONFAILED"}
        record_event(session, "mailbox.credentials_invalid", mailbox, data)


def restore_credentials(engine: Engine, mailbox_id: int) -> None:
    with session_scope(engine) as session:
        mailbox = session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        mailbox.status = MailboxStatus.ACTIVE
        record_event(session, "mailbox.credentials_restored", mailbox, {})


def new_mailbox(engine: Engine, owner: str | None) -> int:
    with session_scope(engine) as session:
        mailbox = create_mailbox(session, owner_user_id=owner, email_address=f"box-{owner}@x.org")
        assert mailbox.id is not None
        return mailbox.id


def pending(live_api: LiveApi, user_id: str) -> list[dict[str, object]]:
    answer = live_api.client.get(f"/v1/users/{user_id}/notifications")
    assert answer.status_code == 200
    items: list[dict[str, object]] = answer.json()["items"]
    return items


def test_a_credential_failure_leaves_one_notification_until_restored(
    live_api: LiveApi, engine: Engine, settings: Settings
) -> None:
    mailbox_id = new_mailbox(engine, "alice")
    fail_credentials(engine, mailbox_id)
    dispatch(engine, settings)
    dispatch(engine, settings)

    (notification,) = pending(live_api, "alice")
    assert notification["mailbox_id"] == mailbox_id
    assert notification["kind"] == "credentials_invalid"
    assert "box-alice@x.org" in str(notification["title"])
    assert "AUTHENTICATIONFAILED" in str(notification["body"])
    assert pending(live_api, "bob") == []

    restore_credentials(engine, mailbox_id)
    dispatch(engine, settings)
    assert pending(live_api, "alice") == []


def test_system_mailbox_notifies_every_recipient_and_ack_clears_one(
    live_api: LiveApi, engine: Engine, settings: Settings
) -> None:
    recipients = [{"user_id": "admin-1", "email": "a1@crm.test"}, {"user_id": "admin-2"}]
    answer = live_api.client.put("/v1/notification-recipients", json=recipients)
    assert answer.status_code == 200
    assert answer.json() == [{**recipients[0]}, {"user_id": "admin-2", "email": None}]
    mailbox_id = new_mailbox(engine, None)
    fail_credentials(engine, mailbox_id)
    dispatch(engine, settings)

    (first,) = pending(live_api, "admin-1")
    (second,) = pending(live_api, "admin-2")
    acked = live_api.client.post(f"/v1/notifications/{first['id']}/ack")
    assert acked.status_code == 200
    assert acked.json()["acknowledged_at"] is not None
    assert pending(live_api, "admin-1") == []
    assert [n["id"] for n in pending(live_api, "admin-2")] == [second["id"]]
    missing = live_api.client.post("/v1/notifications/999999/ack")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")


def test_recipients_with_a_repeated_user_are_refused(live_api: LiveApi) -> None:
    answer = live_api.client.put(
        "/v1/notification-recipients", json=[{"user_id": "u"}, {"user_id": "u"}]
    )
    assert (answer.status_code, answer.json()["errors"][0]["field"]) == (422, "user_id")
