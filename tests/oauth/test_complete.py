"""`POST /v1/oauth/{provider}/complete`: the popup's code becomes a mailbox on the server,
and no token leaves the service; `POST /v1/mailboxes/{id}/reauthorize` reconnects one the
same way.

The provider is the plug-in for the local authorization server; its IMAP server
is the Dovecot that checks the JWTs the authorization server issues, so the
completion ends in a real XOAUTH2 login. The popup's redirect is followed by
hand: the authorization server consents at once and names the code.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import select

from app.config import Settings
from app.db import session_scope
from app.db.models import AuthType, Event, Mailbox, MailboxStatus
from app.security import SecretBox
from tests.support.dovecot import Dovecot, MailUser
from tests.support.factories import MailboxFactory
from tests.support.live_api import LiveApi
from tests.support.oauth_rig import sign_jwt
from tests.support.oauth_servers import CLIENT_ID, CLIENT_SECRET, AuthorizationServer

CRM_ORIGIN = "https://crm.example.com"


@pytest.fixture
def settings(settings: Settings, jwt_dovecot: Dovecot) -> Settings:
    return settings.model_copy(
        update={
            "imap_ca_file": jwt_dovecot.ca_file,
            "oauth_allow_private_hosts": True,  # the authorization server is on 127.0.0.1
            "oauth_allowed_origins": [CRM_ORIGIN],
        }
    )


@pytest.fixture
def provider(live_api: LiveApi, provider_name: str) -> str:
    enabled = live_api.client.put(
        f"/v1/oauth/providers/{provider_name}",
        json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "enabled": True},
    )
    assert enabled.status_code == 200, enabled.text
    return provider_name


@pytest.fixture
def account(jwt_dovecot: Dovecot) -> MailUser:
    """An account whose IMAP user name is its address, as at Gmail or Microsoft 365."""
    return jwt_dovecot.add_user(name=f"ann{jwt_dovecot.add_user().name}@example.com")


def signed_in(live_api: LiveApi, provider: str, login_hint: str) -> dict[str, str]:
    """Start a flow and consent in the popup; return the code and state it hands the opener."""
    started = live_api.client.post(
        f"/v1/oauth/{provider}/authorize", json={"origin": CRM_ORIGIN, "login_hint": login_hint}
    )
    assert started.status_code == 200, started.text
    return consented(started.json()["authorization_url"])


def consented(authorization_url: str) -> dict[str, str]:
    """Follow the popup to the authorization server; return the code and state it names."""
    consent = httpx.get(authorization_url)
    assert consent.status_code == 302, consent.text
    query = parse_qs(urlsplit(consent.headers["location"]).query)
    return {"code": query["code"][0], "state": query["state"][0]}


def complete(live_api: LiveApi, provider: str, **body: Any) -> httpx.Response:
    return live_api.client.post(f"/v1/oauth/{provider}/complete", json=body)


def test_completion_creates_the_mailbox_and_returns_no_token(
    *,
    live_api: LiveApi,
    provider: str,
    account: MailUser,
    jwt_dovecot: Dovecot,
    authorization_server: tuple[AuthorizationServer, str],
    engine: Engine,
    settings: Settings,
) -> None:
    server, _ = authorization_server

    answer = complete(
        live_api,
        provider,
        **signed_in(live_api, provider, account.name),
        owner={"user_id": "crm-7"},
        sync_start="2025-01-01",
    )

    assert answer.status_code == 201, answer.text
    mailbox = answer.json()
    assert mailbox["email_address"] == account.name
    assert mailbox["owner"] == {"user_id": "crm-7", "email": None}
    assert mailbox["auth"] == {"type": "oauth", "provider": provider}
    assert mailbox["imap"] == {
        "host": "127.0.0.1",
        "port": jwt_dovecot.tls_port,
        "security": "ssl",
        "username": account.name,
        "tls_verify": True,
    }
    assert mailbox["sync_start"] == "2025-01-01"
    for token in (*server.access_tokens, *server.refresh_tokens):
        assert token not in answer.text, "a token was returned"
    with session_scope(engine) as session:
        stored = session.get(Mailbox, mailbox["id"])
        assert stored is not None
        assert stored.auth_type is AuthType.OAUTH
        assert stored.access_token_enc is not None
        assert SecretBox.from_settings(settings).decrypt(stored.access_token_enc) in (
            server.access_tokens
        )
    folders = live_api.client.get(f"/v1/mailboxes/{mailbox['id']}/folders").json()
    assert "INBOX" in {folder["full_name"] for folder in folders}


def test_a_second_completion_for_an_existing_address_is_a_conflict(
    live_api: LiveApi, provider: str, account: MailUser, engine: Engine
) -> None:
    owner = {"user_id": "crm-7"}
    first = complete(live_api, provider, **signed_in(live_api, provider, account.name), owner=owner)
    assert first.status_code == 201, first.text
    with session_scope(engine) as session:
        stored = session.get(Mailbox, first.json()["id"])
        assert stored is not None
        tokens_before = stored.access_token_enc

    second = complete(
        live_api, provider, **signed_in(live_api, provider, account.name), owner=owner
    )

    assert second.status_code == 409, second.text
    assert second.json()["code"] == "mailbox_exists"
    with session_scope(engine) as session:
        stored = session.get(Mailbox, first.json()["id"])
        assert stored is not None
        assert stored.access_token_enc == tokens_before, "completion replaced the tokens"


def test_a_spent_state_completes_nothing(
    live_api: LiveApi, provider: str, account: MailUser
) -> None:
    flow = signed_in(live_api, provider, account.name)
    token = live_api.client.post(f"/v1/oauth/{provider}/token", json=flow)
    assert token.status_code == 200, token.text

    answer = complete(live_api, provider, **flow, owner=None)

    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "state_used"
    assert live_api.client.get("/v1/mailboxes").json()["items"] == []


def reconnect_url(live_api: LiveApi, mailbox_id: int) -> str:
    started = live_api.client.post(
        f"/v1/mailboxes/{mailbox_id}/reauthorize", json={"origin": CRM_ORIGIN}
    )
    assert started.status_code == 200, started.text
    url: str = started.json()["authorization_url"]
    return url


def break_tokens(engine: Engine, settings: Settings, mailbox_id: int) -> str:
    """Leave the mailbox as a revoked grant does: `auth_failed`, its token refused."""
    refused = SecretBox.from_settings(settings).encrypt(sign_jwt("nobody", expires_in=-60))
    with session_scope(engine) as session:
        stored = session.get(Mailbox, mailbox_id)
        assert stored is not None
        stored.status = MailboxStatus.AUTH_FAILED
        stored.access_token_enc = refused
    return refused


def test_reconnecting_stores_new_tokens_clears_auth_failed_and_returns_none(
    *,
    live_api: LiveApi,
    provider: str,
    account: MailUser,
    authorization_server: tuple[AuthorizationServer, str],
    engine: Engine,
    settings: Settings,
) -> None:
    flow = signed_in(live_api, provider, account.name)
    created = complete(live_api, provider, **flow, owner=None)
    mailbox_id = created.json()["id"]
    refused = break_tokens(engine, settings, mailbox_id)

    url = reconnect_url(live_api, mailbox_id)
    assert parse_qs(urlsplit(url).query)["login_hint"] == [account.name]
    answer = live_api.client.post(
        f"/v1/mailboxes/{mailbox_id}/reauthorize/complete", json=consented(url)
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "active"
    server, _ = authorization_server
    for token in (*server.access_tokens, *server.refresh_tokens):
        assert token not in answer.text, "a token was returned"
    with session_scope(engine) as session:
        stored = session.get(Mailbox, mailbox_id)
        assert stored is not None and stored.access_token_enc is not None
        assert stored.access_token_enc != refused
        new_token = SecretBox.from_settings(settings).decrypt(stored.access_token_enc)
        types = [e.type for e in session.exec(select(Event).where(Event.mailbox_id == mailbox_id))]
    assert new_token in server.access_tokens
    assert types == ["mailbox.credentials_restored"]


def test_a_reconnect_flow_gives_no_token_and_registers_nothing(
    live_api: LiveApi, provider: str, account: MailUser
) -> None:
    created = complete(
        live_api, provider, **signed_in(live_api, provider, account.name), owner=None
    )
    flow = consented(reconnect_url(live_api, created.json()["id"]))

    token = live_api.client.post(f"/v1/oauth/{provider}/token", json=flow)
    registered = complete(live_api, provider, **flow, owner={"user_id": "crm-8"})

    assert (token.status_code, token.json()["code"]) == (400, "invalid_state"), token.text
    assert (registered.status_code, registered.json()["code"]) == (400, "invalid_state")
    assert len(live_api.client.get("/v1/mailboxes").json()["items"]) == 1


def test_a_reconnect_is_finished_only_by_its_mailbox_and_its_account(
    *,
    live_api: LiveApi,
    provider: str,
    account: MailUser,
    jwt_dovecot: Dovecot,
    engine: Engine,
    settings: Settings,
) -> None:
    ann = complete(live_api, provider, **signed_in(live_api, provider, account.name), owner=None)
    other = jwt_dovecot.add_user(name=f"bob{jwt_dovecot.add_user().name}@example.com")
    bob = complete(live_api, provider, **signed_in(live_api, provider, other.name), owner=None)
    ann_id, bob_id = ann.json()["id"], bob.json()["id"]
    break_tokens(engine, settings, ann_id)

    for_bob = consented(reconnect_url(live_api, bob_id))
    wrong_mailbox = live_api.client.post(
        f"/v1/mailboxes/{ann_id}/reauthorize/complete", json=for_bob
    )
    url = reconnect_url(live_api, ann_id).replace(
        quote(account.name, safe=""), quote(other.name, safe="")
    )
    wrong_account = live_api.client.post(
        f"/v1/mailboxes/{ann_id}/reauthorize/complete", json=consented(url)
    )

    assert (wrong_mailbox.status_code, wrong_mailbox.json()["code"]) == (400, "invalid_state")
    assert wrong_account.status_code == 409, wrong_account.text
    assert wrong_account.json()["code"] == "account_mismatch"
    assert live_api.client.get(f"/v1/mailboxes/{ann_id}").json()["status"] == "auth_failed"


def test_a_password_mailbox_has_no_reconnect_popup(
    live_api: LiveApi, provider: str, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user)

    answer = live_api.client.post(
        f"/v1/mailboxes/{mailbox_id}/reauthorize", json={"origin": CRM_ORIGIN}
    )

    assert answer.status_code == 409, answer.text
    assert answer.json()["code"] == "not_oauth_mailbox"
