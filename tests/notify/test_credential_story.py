"""Issue 6's story end to end: a password changed on the server is told once on every channel.

Everything is real: Dovecot refuses the old password, the arq worker syncs (and
queues the dispatcher after each sync), a signature-checking webhook receiver
and an SMTP server (aiosmtpd) receive, and the live API serves the PATCH, the
login notifications and the SSE stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from arq.jobs import Job, JobStatus
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import select

from app.config import Settings
from app.db import session_scope
from app.db.models import DeliveryState, EventDelivery
from app.job_queue import create_queue, sync_job_id
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.live_api import LiveApi
from tests.support.mailgen import make_message
from tests.support.smtp_inbox import Inbox
from tests.support.webhook_receiver import WebhookReceiver, running_receiver
from tests.support.worker_process import enqueue, run_worker

INVALID = "mailbox.credentials_invalid"
RESTORED = "mailbox.credentials_restored"
NEW_PASSWORD = "changed-on-the-server"
RECONNECT = "https://crm.test/mailboxes/{mailbox_id}/reconnect"


@pytest.fixture
def settings(settings: Settings, inbox: tuple[Inbox, int]) -> Settings:
    """The shared settings, mailing through the test's SMTP server, webhooks to loopback."""
    return settings.model_copy(
        update={
            "smtp_url": SecretStr(f"smtp://127.0.0.1:{inbox[1]}"),
            "smtp_from": "bridge@crm.test",
            "webhook_allow_private_hosts": True,
            "reauth_url_template": RECONNECT,
        }
    )


@pytest.fixture
def receiver(live_api: LiveApi) -> Iterator[WebhookReceiver]:
    """A real receiver, registered over the API for the two credential events."""
    with running_receiver() as hook:
        created = live_api.client.post(
            "/v1/webhooks", json={"url": hook.url, "event_types": [INVALID, RESTORED]}
        )
        assert created.status_code == 201
        hook.secret = created.json()["secret"]
        yield hook


def sync_through_worker(settings: Settings, mailbox_id: int) -> None:
    """Queue a sync as the scheduler does and let a real worker run it and the dispatcher."""

    enqueue(settings, mailbox_id)
    run_worker(settings)


def wait_for_queued_sync(settings: Settings, mailbox_id: int) -> None:
    """Wait for the sync the API queues once its response is sent (a background task)."""

    async def wait() -> None:
        pool = await create_queue(settings)
        try:
            job_id = sync_job_id(settings.queue_name, mailbox_id)
            job = Job(job_id, pool, _queue_name=settings.queue_name)
            deadline = time.monotonic() + 5
            while await job.status() is not JobStatus.queued:
                assert time.monotonic() < deadline, "the API did not queue a sync"
                await asyncio.sleep(0.02)
        finally:
            await pool.aclose()

    asyncio.run(wait())


def break_password_and_sync_twice(settings: Settings, mail_user: MailUser, mailbox_id: int) -> None:
    mail_user.set_password(NEW_PASSWORD)
    for _ in range(2):
        sync_through_worker(settings, mailbox_id)


def fix_password(live_api: LiveApi, settings: Settings, mailbox_id: int) -> None:
    """Give the mailbox its new password over the API, then run the sync that PATCH queued."""
    auth = {"type": "password", "password": NEW_PASSWORD}
    patched = live_api.client.patch(f"/v1/mailboxes/{mailbox_id}", json={"auth": auth})
    assert patched.status_code == 200
    assert patched.json()["status"] == "active"
    wait_for_queued_sync(settings, mailbox_id)
    run_worker(settings)


def pending(live_api: LiveApi, user_id: str) -> list[dict[str, Any]]:
    answer = live_api.client.get(f"/v1/users/{user_id}/notifications")
    assert answer.status_code == 200
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def credential_events_until_restored(live_api: LiveApi, user_id: str) -> list[dict[str, Any]]:
    """Read the user's credential events from the start of the outbox up to the first restore."""
    received: list[dict[str, Any]] = []
    with live_api.client.stream(
        "GET",
        "/v1/events",
        params={"user_id": user_id, "types": f"{INVALID},{RESTORED}"},
        headers={"Last-Event-ID": "0"},
        timeout=httpx.Timeout(10),
    ) as stream:
        assert stream.status_code == 200
        for line in stream.iter_lines():
            if line.startswith("data: "):
                received.append(json.loads(line.removeprefix("data: ")))
                if received[-1]["type"] == RESTORED:
                    break
    return received


def webhook_types(receiver: WebhookReceiver) -> list[str]:
    """Return the types of the verified deliveries, one per `webhook-id`, in arrival order."""
    assert receiver.bad_signatures == 0
    return [payload["type"] for payload in receiver.accepted.values()]


def assert_nothing_left_to_deliver(engine: Engine) -> None:
    with session_scope(engine) as session:
        states = {delivery.state for delivery in session.exec(select(EventDelivery))}
    assert states == {DeliveryState.SUCCEEDED}


def test_a_password_changed_on_the_server_is_told_once_everywhere_until_fixed(
    *,
    live_api: LiveApi,
    settings: Settings,
    engine: Engine,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    receiver: WebhookReceiver,
    inbox: tuple[Inbox, int],
) -> None:
    mailbox_id = add_mailbox(mail_user, owner_user_id="alice", owner_email="alice@crm.test")
    address = f"{mail_user.name}@example.com"

    break_password_and_sync_twice(settings, mail_user, mailbox_id)

    assert_nothing_left_to_deliver(engine)
    mailbox = live_api.client.get(f"/v1/mailboxes/{mailbox_id}").json()
    assert mailbox["status"] == "auth_failed"
    runs = live_api.client.get(f"/v1/mailboxes/{mailbox_id}/sync-runs").json()["items"]
    assert [(run["status"], run["error_code"]) for run in runs] == [("failed", "auth_failed")] * 2
    assert webhook_types(receiver) == [INVALID]
    assert len(receiver.requests) == 1
    (invalid,) = receiver.accepted.values()
    assert (invalid["mailbox_id"], invalid["owner"]) == (mailbox_id, "alice")
    reconnect_url = RECONNECT.replace("{mailbox_id}", str(mailbox_id))
    assert invalid["data"]["reconnect_url"] == reconnect_url
    ((recipients, mail),) = inbox[0].messages
    assert recipients == ["alice@crm.test"]
    assert address in mail["Subject"]
    text = mail.get_body(("plain",))
    assert text is not None
    assert address in text.get_content()
    assert reconnect_url in text.get_content()
    (notification,) = pending(live_api, "alice")
    assert (notification["mailbox_id"], notification["kind"]) == (mailbox_id, "credentials_invalid")
    assert notification["reconnect_url"] == reconnect_url
    assert address in notification["title"]

    mail_user.append("INBOX", make_message(subject="sent while the sync was stopped"))
    fix_password(live_api, settings, mailbox_id)

    assert webhook_types(receiver) == [INVALID, RESTORED]
    assert len(receiver.requests) == 2
    assert pending(live_api, "alice") == []
    assert len(inbox[0].messages) == 1  # a restore is not mailed
    streamed = credential_events_until_restored(live_api, "alice")
    assert [event["type"] for event in streamed] == [INVALID, RESTORED]
    assert {event["mailbox_id"] for event in streamed} == {mailbox_id}
    latest = live_api.client.get(f"/v1/mailboxes/{mailbox_id}/sync-runs").json()["items"][0]
    assert (latest["status"], latest["trigger"], latest["counts"]["new"]) == ("succeeded", "api", 1)
    assert live_api.client.get(f"/v1/mailboxes/{mailbox_id}").json()["status"] == "active"
    assert_nothing_left_to_deliver(engine)


def test_a_system_mailbox_tells_each_recipient_once_and_acks_are_per_user(
    *,
    live_api: LiveApi,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    receiver: WebhookReceiver,
    inbox: tuple[Inbox, int],
) -> None:
    recipients = [
        {"user_id": "admin-1", "email": "a1@crm.test"},
        {"user_id": "admin-2", "email": "a2@crm.test"},
    ]
    assert live_api.client.put("/v1/notification-recipients", json=recipients).status_code == 200
    mailbox_id = add_mailbox(mail_user, owner_user_id=None, owner_email=None)
    address = f"{mail_user.name}@example.com"

    break_password_and_sync_twice(settings, mail_user, mailbox_id)

    assert webhook_types(receiver) == [INVALID]
    mails = inbox[0].messages
    assert sorted(to for to, _ in mails) == [["a1@crm.test"], ["a2@crm.test"]]
    assert all(address in mail["Subject"] for _, mail in mails)
    (first,) = pending(live_api, "admin-1")
    (second,) = pending(live_api, "admin-2")
    assert first["mailbox_id"] == second["mailbox_id"] == mailbox_id
    assert live_api.client.post(f"/v1/notifications/{first['id']}/ack").status_code == 200
    assert pending(live_api, "admin-1") == []
    assert [n["id"] for n in pending(live_api, "admin-2")] == [second["id"]]

    fix_password(live_api, settings, mailbox_id)

    assert webhook_types(receiver) == [INVALID, RESTORED]
    assert pending(live_api, "admin-2") == []
    assert len(mails) == 2
    streamed = credential_events_until_restored(live_api, "admin-2")
    assert [(event["type"], event["owner"]) for event in streamed] == [
        (INVALID, None),
        (RESTORED, None),
    ]
