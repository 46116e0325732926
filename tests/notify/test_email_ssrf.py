"""SMTP hosts inside our own network are refused unless `SMTP_ALLOW_PRIVATE_HOSTS`,
and mail goes to the address that was vetted, whatever the name resolves to later.

Real aiosmtpd relays listen on loopback; `connect_only_here` records (and refuses)
any connection to another machine, so no test sends a packet out.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from app.config import Settings
from app.db.models import DeliveryState
from app.notify.email import MailNotSent, SmtpServer, send_mail
from app.notify.messages import NoticeMessage
from tests.support.outbox import email_delivery, mail_a_credential_failure
from tests.support.smtp_inbox import Inbox, running_inbox
from tests.support.ssrf import (
    BLOCKED_FORMS,
    ELSEWHERE,
    PUBLIC_ADDRESS,
    REACHING_LOOPBACK,
    connect_only_here,
    resolve_name,
    url_host,
)

MESSAGE = NoticeMessage("A mailbox can no longer sign in", "text", "<p>html</p>")
RECIPIENT = "owner@crm.test"
REFUSED = (
    "SMTP host {host} resolves to a loopback, private or link-local address;"
    " SMTP_ALLOW_PRIVATE_HOSTS=true allows it"
)
StartRelay = Callable[[str], tuple[Inbox, int]]


@pytest.fixture
def start_relay() -> Iterator[StartRelay]:
    """Start aiosmtpd relays (no TLS, no login) on a loopback address; stop them afterwards."""
    with ExitStack() as stack:
        yield lambda hostname: stack.enter_context(running_inbox(hostname))


@pytest.fixture
def elsewhere(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    return connect_only_here(monkeypatch)


def mail_through(host: str, port: int, *, allowed: bool) -> None:
    """Send MESSAGE through smtp://host:port, private hosts allowed or not."""
    server = SmtpServer.from_url(
        f"smtp://{url_host(host)}:{port}", allow_private_hosts=allowed, deadline_seconds=5
    )
    send_mail(server, "bridge@crm.test", RECIPIENT, MESSAGE)


@pytest.mark.parametrize("host", BLOCKED_FORMS)
def test_every_private_address_form_is_refused_before_connecting(
    start_relay: StartRelay, elsewhere: list[tuple[str, int]], host: str
) -> None:
    inbox, port = start_relay("127.0.0.1")

    with pytest.raises(MailNotSent) as refused:
        mail_through(host, port, allowed=False)

    assert refused.value.permanent
    assert str(refused.value) == REFUSED.format(host=host)
    assert elsewhere == []
    assert inbox.messages == []


@pytest.mark.parametrize("host", [*REACHING_LOOPBACK, "::1"])
def test_a_loopback_relay_gets_the_mail_when_allowed(start_relay: StartRelay, host: str) -> None:
    inbox, port = start_relay("::1" if host == "::1" else "127.0.0.1")

    mail_through(host, port, allowed=True)

    ((recipients, message),) = inbox.messages
    assert recipients == [RECIPIENT]
    assert message["Subject"] == MESSAGE.title


@pytest.mark.parametrize("host", ELSEWHERE)
def test_other_private_networks_are_connected_to_when_allowed(
    elsewhere: list[tuple[str, int]], host: str
) -> None:
    with pytest.raises(MailNotSent) as failed:
        mail_through(host, 2525, allowed=True)

    assert not failed.value.permanent  # a relay that does not answer now may answer later
    assert str(failed.value) == "SMTP failed: ConnectionRefusedError"
    [(address, port)] = elsewhere
    assert (ipaddress.ip_address(address), port) == (ipaddress.ip_address(host), 2525)


def test_a_relay_name_rebound_to_loopback_after_the_check_gets_nothing(
    start_relay: StartRelay,
    elsewhere: list[tuple[str, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inbox, port = start_relay("127.0.0.1")
    answers = resolve_name(monkeypatch, "relay.rebinding.test", PUBLIC_ADDRESS, "127.0.0.1")

    with pytest.raises(MailNotSent) as failed:
        mail_through("relay.rebinding.test", port, allowed=False)

    assert str(failed.value) == "SMTP failed: ConnectionRefusedError"
    assert answers == [PUBLIC_ADDRESS]  # one lookup: the connection used the vetted answer
    assert elsewhere == [(PUBLIC_ADDRESS, port)]
    assert inbox.messages == []


def test_a_refused_relay_fails_the_delivery_and_says_which_setting_allows_it(
    engine: Engine,
    settings: Settings,
    start_relay: StartRelay,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="app.notify.email")
    inbox, port = start_relay("127.0.0.1")
    refusing = settings.model_copy(
        update={
            "smtp_url": SecretStr(f"smtp://127.0.0.1:{port}"),
            "smtp_allow_private_hosts": False,
        }
    )

    event_id = mail_a_credential_failure(engine, refusing)

    failed = email_delivery(engine, event_id)
    assert (failed.state, failed.attempts) == (DeliveryState.FAILED, 1)
    assert failed.next_attempt_at is None
    assert failed.last_error == REFUSED.format(host="127.0.0.1")
    (record,) = [r for r in caplog.records if r.getMessage() == "notify.smtp_host_blocked"]
    assert record.levelno == logging.WARNING
    assert record.__dict__["host"] == "127.0.0.1"
    assert record.__dict__["allowed_by"] == "SMTP_ALLOW_PRIVATE_HOSTS=true"
    assert inbox.messages == []
