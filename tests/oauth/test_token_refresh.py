"""Access tokens are renewed before login; a revoked grant is a credential failure.

Dovecot checks the JWTs itself (oauth2 passdb, local validation), so "expired"
and "works again after the refresh" are the server's verdicts. Only Google's
token endpoint is faked (respx).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import select

from app.config import Settings
from app.db import session_scope
from app.db.models import (
    AuthType,
    Event,
    Mailbox,
    MailboxStatus,
    SyncRunStatus,
    utcnow,
)
from app.imap import ImapConfig, connect
from app.imap.config import ConnectOptions
from app.imap.errors import AuthenticationFailed
from app.oauth.errors import ProviderUnavailableError
from app.oauth.registry import installed_providers
from app.security import SecretBox
from app.sync.credentials import interactive_login_options
from app.sync.reconnect import complete_reconnect, start_reconnect
from app.sync.service import sync_mailbox
from app.sync.token_refresh import refresh_if_expiring
from tests.support.dovecot import Dovecot, MailUser
from tests.support.factories import MailboxFactory
from tests.support.oauth_rig import (
    GOOGLE_INVALID_GRANT,
    GOOGLE_TOKEN_URL,
    configure_gmail,
    google_tokens,
    sign_jwt,
)
from tests.support.secret_watch import SecretKind, register_secret


@pytest.fixture
def settings(settings: Settings, jwt_dovecot: Dovecot) -> Settings:
    return settings.model_copy(update={"imap_ca_file": jwt_dovecot.ca_file})


@pytest.fixture
def secrets(settings: Settings) -> SecretBox:
    return SecretBox.from_settings(settings)


@pytest.fixture
def google(engine: Engine, secrets: SecretBox) -> Iterator[respx.Router]:
    """Gmail configured with a client, and Google's token endpoint faked."""
    configure_gmail(engine, secrets)
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture
def oauth_user(jwt_dovecot: Dovecot) -> MailUser:
    return jwt_dovecot.add_user()


@dataclass
class Rig:
    """A Gmail mailbox of a JWT-checking Dovecot user, and Google's faked token endpoint."""

    engine: Engine
    secrets: SecretBox
    user: MailUser
    google: respx.Router
    add_mailbox: MailboxFactory

    def add(self, *, access_token: str, refresh_token: str, expires_in: timedelta) -> int:
        return self.add_mailbox(
            self.user,
            auth_type=AuthType.OAUTH,
            provider="gmail",
            password_enc=None,
            access_token_enc=self.secrets.encrypt(
                register_secret(SecretKind.ACCESS_TOKEN, access_token, "stored")
            ),
            refresh_token_enc=self.secrets.encrypt(
                register_secret(SecretKind.REFRESH_TOKEN, refresh_token, "stored")
            ),
            token_expires_at=utcnow() + expires_in,
        )

    def stored(self, mailbox_id: int) -> Mailbox:
        with session_scope(self.engine) as session:
            mailbox = session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        return mailbox

    def refresh(self, mailbox: Mailbox) -> Mailbox:
        return refresh_if_expiring(self.engine, mailbox, self.secrets, allow_private_hosts=False)

    def decrypted(self, token: str | None) -> str:
        assert token is not None
        return self.secrets.decrypt(token)


@pytest.fixture
def rig(
    engine: Engine,
    secrets: SecretBox,
    oauth_user: MailUser,
    google: respx.Router,
    add_mailbox: MailboxFactory,
) -> Rig:
    return Rig(engine, secrets, oauth_user, google, add_mailbox)


def test_dovecot_refuses_an_expired_token(oauth_user: MailUser) -> None:
    dovecot = oauth_user.dovecot
    options = ConnectOptions(allow_private_hosts=True, ca_file=dovecot.ca_file)
    expired = ImapConfig(
        host=dovecot.host,
        port=dovecot.tls_port,
        username=oauth_user.name,
        access_token=SecretStr(sign_jwt(oauth_user.name, expires_in=-60)),
    )
    with pytest.raises(AuthenticationFailed):
        connect(expired, options)
    valid = expired.model_copy(update={"access_token": SecretStr(sign_jwt(oauth_user.name))})
    with connect(valid, options) as connection:
        assert connection.has("IMAP4REV1")


def test_an_expiring_token_is_refreshed_and_the_sync_logs_in(rig: Rig, settings: Settings) -> None:
    fresh = sign_jwt(rig.user.name)
    token_route = rig.google.post(GOOGLE_TOKEN_URL).respond(200, json=google_tokens(fresh))
    mailbox_id = rig.add(
        access_token=sign_jwt(rig.user.name, expires_in=-60),
        refresh_token="1//refresh-one",
        expires_in=timedelta(minutes=-1),
    )

    result = sync_mailbox(rig.engine, mailbox_id, settings)

    assert result is not None
    assert result.status is SyncRunStatus.SUCCEEDED
    sent = parse_qs(token_route.calls.last.request.content.decode())
    assert sent["grant_type"] == ["refresh_token"]
    assert sent["refresh_token"] == ["1//refresh-one"]
    mailbox = rig.stored(mailbox_id)
    assert fresh not in str(mailbox.access_token_enc)  # stored encrypted
    assert rig.decrypted(mailbox.access_token_enc) == fresh
    # Google does not rotate: the refresh token stays
    assert rig.decrypted(mailbox.refresh_token_enc) == "1//refresh-one"
    assert mailbox.token_expires_at is not None
    assert mailbox.token_expires_at > utcnow() + timedelta(minutes=55)


def test_a_token_valid_for_long_is_not_refreshed(rig: Rig, settings: Settings) -> None:
    token_route = rig.google.post(GOOGLE_TOKEN_URL)
    mailbox_id = rig.add(
        access_token=sign_jwt(rig.user.name),
        refresh_token="1//refresh-one",
        expires_in=timedelta(minutes=30),
    )

    result = sync_mailbox(rig.engine, mailbox_id, settings, folders_only=True)

    assert result is not None
    assert result.status is SyncRunStatus.SUCCEEDED
    assert not token_route.called


def test_a_rotated_refresh_token_is_saved(rig: Rig) -> None:
    rig.google.post(GOOGLE_TOKEN_URL).respond(
        200, json=google_tokens("new-access", refresh_token="1//refresh-two")
    )
    mailbox_id = rig.add(
        access_token="old-access", refresh_token="1//refresh-one", expires_in=timedelta(minutes=4)
    )

    mailbox = rig.refresh(rig.stored(mailbox_id))

    assert rig.decrypted(mailbox.refresh_token_enc) == "1//refresh-two"
    assert rig.decrypted(rig.stored(mailbox_id).refresh_token_enc) == "1//refresh-two"


def test_a_revoked_refresh_token_marks_the_mailbox_auth_failed_and_tells_the_owner(
    rig: Rig, settings: Settings
) -> None:
    rig.google.post(GOOGLE_TOKEN_URL).respond(400, json=GOOGLE_INVALID_GRANT)
    mailbox_id = rig.add(
        access_token=sign_jwt(rig.user.name, expires_in=-60),
        refresh_token="1//revoked",
        expires_in=timedelta(minutes=-1),
    )

    result = sync_mailbox(rig.engine, mailbox_id, settings)

    assert result is not None
    assert result.status is SyncRunStatus.FAILED
    assert result.error_code == "invalid_grant"
    assert rig.stored(mailbox_id).status is MailboxStatus.AUTH_FAILED
    with session_scope(rig.engine) as session:
        events = session.exec(select(Event).where(Event.mailbox_id == mailbox_id)).all()
    assert [e.type for e in events] == ["mailbox.credentials_invalid"]
    assert "1//revoked" not in json.dumps([e.data for e in events])


def test_a_revoked_gmail_grant_is_reconnected_in_a_popup_that_keeps_the_refresh_token(
    rig: Rig, settings: Settings
) -> None:
    token_route = rig.google.post(GOOGLE_TOKEN_URL).respond(400, json=GOOGLE_INVALID_GRANT)
    mailbox_id = rig.add(
        access_token=sign_jwt(rig.user.name, expires_in=-60),
        refresh_token="1//kept",
        expires_in=timedelta(minutes=-1),
    )
    sync_mailbox(rig.engine, mailbox_id, settings)
    assert rig.stored(mailbox_id).status is MailboxStatus.AUTH_FAILED
    address = rig.stored(mailbox_id).email_address
    fresh = sign_jwt(rig.user.name)
    # Google sends no new refresh token when the user had consented before.
    token_route.respond(200, json=google_tokens(fresh, email=address))

    origin = "https://crm.example.com"
    with session_scope(rig.engine) as session:
        url, state = start_reconnect(
            session,
            rig.secrets,
            installed_providers(),
            rig.stored(mailbox_id),
            origin=origin,
            allowed_origins=[origin],
            redirect_uri="https://bridge.example.com/oauth/gmail/callback",
            ttl_seconds=600,
        )
    with session_scope(rig.engine) as session:
        mailbox = session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        complete_reconnect(
            session,
            rig.secrets,
            interactive_login_options(settings),
            installed_providers(),
            mailbox,
            code="4/0AX4XfWh-popup-code",
            state=state,
            allow_private_hosts=False,
        )

    assert parse_qs(urlsplit(url).query)["login_hint"] == [address]
    stored = rig.stored(mailbox_id)
    assert stored.status is MailboxStatus.ACTIVE
    assert rig.decrypted(stored.access_token_enc) == fresh
    assert rig.decrypted(stored.refresh_token_enc) == "1//kept"
    result = sync_mailbox(rig.engine, mailbox_id, settings)
    assert result is not None and result.status is SyncRunStatus.SUCCEEDED, result
    with session_scope(rig.engine) as session:
        events = session.exec(select(Event).where(Event.mailbox_id == mailbox_id)).all()
    assert [e.type for e in events][:2] == [
        "mailbox.credentials_invalid",
        "mailbox.credentials_restored",
    ]


def test_a_refresh_losing_the_race_keeps_the_newer_refresh_token(rig: Rig) -> None:
    """Worker B read the mailbox before worker A refreshed and rotated its refresh token."""
    answers = iter(
        [
            httpx.Response(200, json=google_tokens("access-a", refresh_token="1//from-a")),
            httpx.Response(200, json=google_tokens("access-b", refresh_token="1//from-b")),
        ]
    )
    rig.google.post(GOOGLE_TOKEN_URL).mock(side_effect=lambda _request: next(answers))
    mailbox_id = rig.add(
        access_token="old", refresh_token="1//original", expires_in=timedelta(minutes=1)
    )
    read_by_b = rig.stored(mailbox_id)

    rig.refresh(rig.stored(mailbox_id))  # worker A
    seen_by_b = rig.refresh(read_by_b)

    assert rig.decrypted(rig.stored(mailbox_id).refresh_token_enc) == "1//from-a"
    assert rig.decrypted(seen_by_b.access_token_enc) == "access-a"


def test_invalid_grant_after_another_worker_rotated_uses_its_tokens(rig: Rig) -> None:
    """Rotation that revokes the old refresh token at once: the loser must not fail."""
    answers = iter(
        [
            httpx.Response(200, json=google_tokens("access-a", refresh_token="1//from-a")),
            httpx.Response(400, json=GOOGLE_INVALID_GRANT),
        ]
    )
    rig.google.post(GOOGLE_TOKEN_URL).mock(side_effect=lambda _request: next(answers))
    mailbox_id = rig.add(
        access_token="old", refresh_token="1//original", expires_in=timedelta(minutes=1)
    )
    read_by_b = rig.stored(mailbox_id)

    rig.refresh(rig.stored(mailbox_id))
    seen_by_b = rig.refresh(read_by_b)

    assert rig.decrypted(seen_by_b.refresh_token_enc) == "1//from-a"
    assert rig.stored(mailbox_id).status is MailboxStatus.ACTIVE


@pytest.mark.parametrize(
    ("expires_in", "lifetime_at_most"),
    [
        (10**30, timedelta(days=1)),  # timedelta() overflowed
        ("99999999999999999999", timedelta(days=1)),
        (float("inf"), timedelta(days=1)),  # JSON `Infinity`, which json.loads accepts
        (-5, timedelta(0)),  # expired at once: refreshed again before the next login
        ("3599", timedelta(hours=1)),
        ("soon", None),  # int() raised
        ([], None),
    ],
)
def test_a_hostile_expires_in_is_bounded_and_the_refresh_stored(
    rig: Rig, expires_in: object, lifetime_at_most: timedelta | None
) -> None:
    answer = {**google_tokens("new-access"), "expires_in": expires_in}
    rig.google.post(GOOGLE_TOKEN_URL).respond(
        200, content=json.dumps(answer), headers={"content-type": "application/json"}
    )
    mailbox_id = rig.add(
        access_token="old-access", refresh_token="1//refresh-one", expires_in=timedelta(minutes=4)
    )
    before = utcnow()

    rig.refresh(rig.stored(mailbox_id))

    stored = rig.stored(mailbox_id)
    assert rig.decrypted(stored.access_token_enc) == "new-access", "the new token was not stored"
    if lifetime_at_most is None:
        assert stored.token_expires_at is None
    else:
        assert stored.token_expires_at is not None
        assert stored.token_expires_at - before <= lifetime_at_most + timedelta(seconds=5)


def _nested_jwt(depth: int) -> str:
    payload = base64.urlsafe_b64encode(b"[" * depth).decode().rstrip("=")
    return f"eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln"


@pytest.mark.parametrize("id_token", [12345, ["a.b.c"], _nested_jwt(100_000)])
def test_a_malformed_id_token_is_ignored_and_the_refresh_stored(rig: Rig, id_token: object) -> None:
    answer = {**google_tokens("new-access"), "id_token": id_token}
    rig.google.post(GOOGLE_TOKEN_URL).respond(200, json=answer)
    mailbox_id = rig.add(
        access_token="old-access", refresh_token="1//refresh-one", expires_in=timedelta(minutes=4)
    )

    rig.refresh(rig.stored(mailbox_id))

    assert rig.decrypted(rig.stored(mailbox_id).access_token_enc) == "new-access"


def test_a_token_answer_nested_too_deep_is_a_provider_failure(rig: Rig) -> None:
    rig.google.post(GOOGLE_TOKEN_URL).respond(
        200, content=b"[" * 100_000, headers={"content-type": "application/json"}
    )
    mailbox_id = rig.add(
        access_token="old-access", refresh_token="1//refresh-one", expires_in=timedelta(minutes=4)
    )

    with pytest.raises(ProviderUnavailableError):
        rig.refresh(rig.stored(mailbox_id))
