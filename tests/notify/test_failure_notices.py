"""A mailbox failing for another reason than its credentials is told once, and its recovery once.

Real Dovecot behind a TCP proxy that plays the server going away, the real sync,
the dispatcher, a signature-checking webhook receiver and an SMTP server
(aiosmtpd). FAILING_NOTICE_AFTER_SECONDS is one second here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from app.config import Settings
from app.db import session_scope
from app.db.repositories.notifications import pending_notifications
from app.notify.dispatcher import dispatch_due
from app.security import SecretBox
from app.sync.service import sync_mailbox
from tests.support.dovecot import Dovecot, MailUser
from tests.support.factories import MailboxFactory
from tests.support.fault_proxy import FaultProxy
from tests.support.smtp_inbox import Inbox
from tests.support.webhook_receiver import WebhookReceiver

FAILING = "mailbox.connection_failing"
RESTORED = "mailbox.connection_restored"
TEMPLATE = "https://crm.example.com/mailboxes/{mailbox_id}/reconnect"


@pytest.fixture
def settings(settings: Settings, inbox: tuple[Inbox, int]) -> Settings:
    return settings.model_copy(
        update={
            "smtp_url": SecretStr(f"smtp://127.0.0.1:{inbox[1]}"),
            "smtp_from": "bridge@crm.test",
            "webhook_allow_private_hosts": True,
            "failing_notice_after_seconds": 1.0,
            "reauth_url_template": TEMPLATE,
        }
    )


@pytest.fixture
def webhook_settings(settings: Settings) -> Settings:
    return settings


@pytest.fixture
def proxy(dovecot: Dovecot) -> Iterator[FaultProxy]:
    with FaultProxy(dovecot.host, dovecot.tls_port) as running:
        yield running


def sync_and_dispatch(engine: Engine, settings: Settings, mailbox_id: int) -> str | None:
    """Run one sync and one dispatcher pass; return the run's error code (None: it worked)."""
    result = sync_mailbox(engine, mailbox_id, settings)
    assert result is not None, "another worker held the mailbox"
    asyncio.run(dispatch_due(engine, settings, SecretBox.from_settings(settings)))
    return result.error_code


def notice_types(receiver: WebhookReceiver) -> list[str]:
    assert receiver.bad_signatures == 0
    kinds = (FAILING, RESTORED, "mailbox.credentials_invalid")
    return [p["type"] for p in receiver.accepted.values() if p["type"] in kinds]


def pending_kinds(engine: Engine, user_id: str) -> list[tuple[str, str | None]]:
    with session_scope(engine) as session:
        return [
            (n.kind, n.reconnect_url) for n in pending_notifications(session, user_id, limit=10)
        ]


def test_an_unreachable_server_is_told_once_after_the_delay_and_its_recovery_once(
    *,
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    proxy: FaultProxy,
    receiver: WebhookReceiver,
    inbox: tuple[Inbox, int],
) -> None:
    mailbox_id = add_mailbox(
        mail_user, port=proxy.port, owner_user_id="alice", owner_email="alice@crm.test"
    )
    reconnect = TEMPLATE.replace("{mailbox_id}", str(mailbox_id))
    assert sync_and_dispatch(engine, settings, mailbox_id) is None

    proxy.take_down()
    assert sync_and_dispatch(engine, settings, mailbox_id) is not None, "it synced while down"
    assert notice_types(receiver) == [], "told before FAILING_NOTICE_AFTER_SECONDS passed"
    time.sleep(1.2)
    # the first failure past the delay tells; the second tells nothing more
    telling, later = (sync_and_dispatch(engine, settings, mailbox_id) for _ in range(2))
    assert telling is not None and later is not None, "a sync worked with the server down"

    assert notice_types(receiver) == [FAILING]
    (failing,) = [p for p in receiver.accepted.values() if p["type"] == FAILING]
    assert failing["mailbox_id"] == mailbox_id
    assert failing["data"]["error_code"] == telling
    assert failing["data"]["reconnect_url"] == reconnect
    assert pending_kinds(engine, "alice") == [("connection_failing", reconnect)]
    ((recipients, mail),) = inbox[0].messages
    assert recipients == ["alice@crm.test"]
    assert mail_user.name in mail["Subject"]
    text = mail.get_body(("plain",))
    assert text is not None
    assert reconnect in text.get_content()

    proxy.heal()
    assert sync_and_dispatch(engine, settings, mailbox_id) is None
    proxy.take_down()
    assert sync_and_dispatch(engine, settings, mailbox_id) is not None  # a new episode begins

    assert notice_types(receiver) == [FAILING, RESTORED]
    assert pending_kinds(engine, "alice") == [], "the recovery left the notice pending"
    assert len(inbox[0].messages) == 1, "a recovery is not mailed"


def test_a_short_outage_tells_nobody(
    *,
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    proxy: FaultProxy,
    receiver: WebhookReceiver,
    inbox: tuple[Inbox, int],
) -> None:
    mailbox_id = add_mailbox(mail_user, port=proxy.port, owner_user_id="bob")
    patient = settings.model_copy(update={"failing_notice_after_seconds": 3600.0})
    proxy.take_down()
    for _ in range(3):
        assert sync_and_dispatch(engine, patient, mailbox_id) is not None
    proxy.heal()
    assert sync_and_dispatch(engine, patient, mailbox_id) is None

    assert notice_types(receiver) == []
    assert pending_kinds(engine, "bob") == []
    assert inbox[0].messages == []
