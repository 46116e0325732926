"""Values we send to an IMAP or SMTP server cannot carry a second command or header.

imaplib sends LOGIN's username unquoted and the password as a quoted string, so
a CR or LF in either would end the command and start one of the caller's
choosing; NUL is never allowed in IMAP, and XOAUTH2 separates its fields with
^A. An e-mail address may become a username or a mail header, where the email
package refuses whatever `str.splitlines` splits (FS, GS, RS too). Every route
that takes such values answers 422 naming the field before anything connects
(each character is checked in tests/imap/test_connection.py).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.live_api import LiveApi

INJECTED = "\r\nA1 LOGOUT"


def imap_settings(user: MailUser, **changes: str) -> dict[str, Any]:
    settings = {"host": user.dovecot.host, "port": user.dovecot.tls_port, "username": user.name}
    return settings | changes


def password_auth(password: str) -> dict[str, str]:
    return {"type": "password", "password": password}


def connection_check(user: MailUser, username: str, password: str) -> dict[str, Any]:
    return {"imap": imap_settings(user, username=username), "auth": password_auth(password)}


def mailbox_create(user: MailUser, username: str, password: str) -> dict[str, Any]:
    body = connection_check(user, username, password)
    return body | {"email_address": f"{user.name}@example.com", "owner": None}


def oauth_check(user: MailUser, username: str, _password: str) -> dict[str, Any]:
    return {"access_token": "token", "imap": imap_settings(user, username=username)}


def fields_refused(response: httpx.Response) -> list[str]:
    """Return the fields a validation problem names; fail on any other answer."""
    assert response.status_code == 422, response.text
    problem: dict[str, Any] = response.json()
    assert problem["code"] == "validation_error", problem
    return [error["field"] for error in problem["errors"]]


ROUTES = {
    "connection-check": ("POST", "/v1/connection/check", connection_check),
    "mailbox-create": ("POST", "/v1/mailboxes", mailbox_create),
    "mailbox-patch": ("PATCH", "/v1/mailboxes/{mailbox_id}", connection_check),
    "oauth-check-connection": ("POST", "/v1/oauth/gmail/check-connection", oauth_check),
}


@pytest.mark.parametrize("route", ROUTES)
def test_a_username_with_a_line_break_is_422_naming_imap_username(
    live_api: LiveApi, mail_user: MailUser, add_mailbox: MailboxFactory, route: str
) -> None:
    method, path, body = ROUTES[route]
    url = path.format(mailbox_id=add_mailbox(mail_user))
    username = mail_user.name + INJECTED

    response = live_api.client.request(method, url, json=body(mail_user, username, "password"))

    assert fields_refused(response) == ["imap.username"]


@pytest.mark.parametrize("route", ["connection-check", "mailbox-create", "mailbox-patch"])
def test_a_password_with_a_line_break_is_422_naming_auth_password(
    live_api: LiveApi, mail_user: MailUser, add_mailbox: MailboxFactory, route: str
) -> None:
    method, path, body = ROUTES[route]
    url = path.format(mailbox_id=add_mailbox(mail_user))
    password = mail_user.password + INJECTED

    response = live_api.client.request(method, url, json=body(mail_user, mail_user.name, password))

    assert fields_refused(response) == ["auth.password"]
    assert mail_user.password not in response.text


def test_an_oauth_check_as_an_address_with_nul_is_422_naming_email_address(
    live_api: LiveApi,
) -> None:
    response = live_api.client.post(
        "/v1/oauth/gmail/check-connection",
        json={"access_token": "token", "email_address": "user\x00@example.com"},
    )

    assert fields_refused(response) == ["email_address"]


@pytest.mark.parametrize("separator", ["\x1c", "\x0b", "\u2028"], ids=["FS", "VT", "LS"])
def test_an_address_mail_would_go_to_refuses_line_separators(
    live_api: LiveApi, mail_user: MailUser, separator: str
) -> None:
    address = f"owner{separator}@crm.test"
    owner = {"user_id": "crm-user-1", "email": address}
    mailbox = mailbox_create(mail_user, mail_user.name, mail_user.password) | {"owner": owner}

    created = live_api.client.post("/v1/mailboxes", json=mailbox)
    recipients = live_api.client.put(
        "/v1/notification-recipients", json=[{"user_id": "admin", "email": address}]
    )

    assert fields_refused(created) == ["owner.email"]
    assert fields_refused(recipients) == ["0.email"]
