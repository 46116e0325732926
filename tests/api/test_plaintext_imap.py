"""Plain IMAP (`security: "none"`) sends the password or token in clear: refused unless the
operator sets IMAP_ALLOW_PLAINTEXT, before anything is sent (the rig turns it on elsewhere)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.db import session_scope
from app.db.models import Mailbox, utcnow
from app.imap import Security
from app.sync.service import sync_mailbox
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.live_api import LiveApi
from tests.support.login_catcher import LoginCatcher, login_catcher
from tests.support.secret_watch import SecretKind, register_secret


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"imap_allow_plaintext": False})


@pytest.fixture
def catcher() -> Iterator[LoginCatcher]:
    with login_catcher() as server:
        yield server


def plain(user: MailUser, port: int) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "security": "none", "username": user.name}


def refused_field(response: httpx.Response) -> tuple[int, str, list[str]]:
    body = response.json()
    return response.status_code, body["code"], [error["field"] for error in body["errors"]]


def test_plain_imap_is_refused_everywhere_a_login_starts(
    live_api: LiveApi, mail_user: MailUser, add_mailbox: MailboxFactory, catcher: LoginCatcher
) -> None:
    password = {"type": "password", "password": mail_user.password}
    mailbox_id = add_mailbox(mail_user)
    token = register_secret(SecretKind.ACCESS_TOKEN, "ya29.checked-token", "sent by the CRM")

    answers = {
        "connection check": live_api.client.post(
            "/v1/connection/check", json={"imap": plain(mail_user, catcher.port), "auth": password}
        ),
        "create": live_api.client.post(
            "/v1/mailboxes",
            json={
                "email_address": "plain@example.com",
                "owner": None,
                "imap": plain(mail_user, catcher.port),
                "auth": password,
            },
        ),
        "patch": live_api.client.patch(
            f"/v1/mailboxes/{mailbox_id}",
            json={"imap": plain(mail_user, catcher.port), "auth": password},
        ),
        "oauth check": live_api.client.post(
            "/v1/oauth/gmail/check-connection",
            json={"access_token": token, "imap": plain(mail_user, catcher.port)},
        ),
    }

    for route, answer in answers.items():
        assert refused_field(answer) == (422, "plaintext_not_allowed", ["imap.security"]), route
    assert catcher.connections == 0, "a login was tried in clear"


def test_a_stored_plain_mailbox_does_not_sync_while_plain_imap_is_off(
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    catcher: LoginCatcher,
) -> None:
    mailbox_id = add_mailbox(mail_user, host="127.0.0.1", port=catcher.port, security=Security.NONE)

    refused = sync_mailbox(engine, mailbox_id, settings)

    assert refused is not None
    assert refused.error_code == "plaintext_not_allowed"
    assert catcher.connections == 0, "the sync connected in clear"
    with session_scope(engine) as session:
        mailbox = session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        assert mailbox.last_error is not None
        assert "IMAP_ALLOW_PLAINTEXT" in mailbox.last_error
        assert mailbox.next_sync_at is not None
        retry_in = mailbox.next_sync_at - utcnow()
        assert retry_in >= timedelta(minutes=settings.sync_interval_minutes - 1), (
            f"retried in {retry_in} like a network failure; only a settings change fixes it"
        )
        mailbox.next_sync_at = None  # due again, to show the catcher hears what is sent
    allowed = sync_mailbox(
        engine, mailbox_id, settings.model_copy(update={"imap_allow_plaintext": True})
    )
    assert allowed is not None
    assert mail_user.password.encode() in catcher.heard(), "the catcher hears a plain login"
