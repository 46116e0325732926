"""A stored password or token goes to the server it was given for, nowhere else.

`LoginCatcher` is the server an API caller would point a mailbox at to learn
its password.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.db.models import AuthType
from app.security import SecretBox
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.live_api import LiveApi
from tests.support.login_catcher import LoginCatcher, login_catcher
from tests.support.secret_watch import SecretKind, register_secret


@pytest.fixture
def catcher() -> Iterator[LoginCatcher]:
    with login_catcher() as server:
        yield server


def imap_of(user: MailUser, **changes: Any) -> dict[str, Any]:
    """The `imap` object the mailbox of `user` was registered with, with `changes`."""
    return {
        "host": user.dovecot.host,
        "port": user.dovecot.tls_port,
        "security": "ssl",
        "username": user.name,
        "tls_verify": True,
    } | changes


def refused_field(response: httpx.Response) -> tuple[int, str, list[str]]:
    body = response.json()
    return response.status_code, body["code"], [error["field"] for error in body["errors"]]


def test_pointing_a_mailbox_elsewhere_without_credentials_sends_the_stored_password_nowhere(
    live_api: LiveApi, mail_user: MailUser, add_mailbox: MailboxFactory, catcher: LoginCatcher
) -> None:
    mailbox_id = add_mailbox(mail_user)
    elsewhere = imap_of(mail_user, host="127.0.0.1", port=catcher.port, security="none")

    answer = live_api.client.patch(f"/v1/mailboxes/{mailbox_id}", json={"imap": elsewhere})

    assert mail_user.password.encode() not in catcher.heard(), "the stored password was sent"
    assert refused_field(answer) == (422, "credentials_required", ["auth"]), answer.text
    assert catcher.connections == 0
    kept = live_api.client.get(f"/v1/mailboxes/{mailbox_id}").json()["imap"]
    assert kept == imap_of(mail_user)


@pytest.mark.parametrize(
    "change",
    [
        {"host": "localhost"},
        {"port": 1},
        {"security": "starttls"},
        {"username": "somebody-else"},
        {"tls_verify": False},
    ],
    ids=lambda change: next(iter(change)),
)
def test_every_server_field_change_needs_the_credentials(
    live_api: LiveApi, mail_user: MailUser, add_mailbox: MailboxFactory, change: dict[str, Any]
) -> None:
    mailbox_id = add_mailbox(mail_user)

    answer = live_api.client.patch(
        f"/v1/mailboxes/{mailbox_id}", json={"imap": imap_of(mail_user, **change)}
    )

    assert refused_field(answer) == (422, "credentials_required", ["auth"]), answer.text


def test_the_same_server_settings_again_need_no_credentials(
    live_api: LiveApi, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user)

    answer = live_api.client.patch(f"/v1/mailboxes/{mailbox_id}", json={"imap": imap_of(mail_user)})

    assert answer.status_code == 200, answer.text


def test_a_new_server_with_its_credentials_is_saved(
    live_api: LiveApi, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user)
    starttls = imap_of(mail_user, port=mail_user.dovecot.plain_port, security="starttls")

    answer = live_api.client.patch(
        f"/v1/mailboxes/{mailbox_id}",
        json={"imap": starttls, "auth": {"type": "password", "password": mail_user.password}},
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["imap"] == starttls


def test_an_oauth_mailbox_stays_on_its_providers_server(
    live_api: LiveApi,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    settings: Settings,
    catcher: LoginCatcher,
) -> None:
    secrets = SecretBox.from_settings(settings)
    token = register_secret(SecretKind.ACCESS_TOKEN, "ya29.stored-token", "stored")
    mailbox_id = add_mailbox(
        mail_user,
        auth_type=AuthType.OAUTH,
        provider="gmail",
        password_enc=None,
        access_token_enc=secrets.encrypt(token),
    )
    new_token = register_secret(SecretKind.ACCESS_TOKEN, "ya29.new-token", "sent by the CRM")
    elsewhere = imap_of(mail_user, host="localhost", port=catcher.port, security="none")

    answer = live_api.client.patch(
        f"/v1/mailboxes/{mailbox_id}",
        json={
            "imap": elsewhere,
            "auth": {"type": "oauth", "provider": "gmail", "access_token": new_token},
        },
    )

    assert refused_field(answer) == (422, "provider_host_required", ["imap.host"]), answer.text
    assert catcher.connections == 0
