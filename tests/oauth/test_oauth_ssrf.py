"""OAuth endpoints inside our own network are refused unless `OAUTH_ALLOW_PRIVATE_HOSTS`,
and a request goes to the address that was vetted, whatever the name resolves to later.

The provider endpoints belong to a real local authorization server; `connect_only_here`
records (and refuses) any connection to another machine, so no packet leaves.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from app.config import Settings
from app.db import session_scope
from app.db.models import AuthType, Mailbox, OAuthProviderSettings, SyncRunStatus, utcnow
from app.oauth.client import fetch_email_address, refresh_access_token
from app.oauth.errors import (
    InvalidGrantError,
    ProviderHostBlockedError,
    ProviderUnavailableError,
)
from app.oauth.providers import ClientSettings, OAuthProvider, TokenGrant
from app.security import SecretBox
from app.sync.service import sync_mailbox
from tests.support.dovecot import Dovecot
from tests.support.factories import MailboxFactory
from tests.support.live_api import LiveApi, serving
from tests.support.oauth_rig import sign_jwt
from tests.support.oauth_servers import CLIENT_ID, CLIENT_SECRET, AuthorizationServer
from tests.support.snapshot import events_of
from tests.support.ssrf import (
    BLOCKED_FORMS,
    ELSEWHERE,
    PUBLIC_ADDRESS,
    REACHING_LOOPBACK,
    connect_only_here,
    recording_server,
    resolve_name,
    url_host,
)

CLIENT = ClientSettings(CLIENT_ID, SecretStr(CLIENT_SECRET))
REFUSED = (
    "Local IdP's {endpoint} resolves to a loopback, private or link-local address;"
    " OAUTH_ALLOW_PRIVATE_HOSTS=true allows it"
)
StartIdp = Callable[[str], tuple[AuthorizationServer, int]]


def provider_at(base_url: str) -> OAuthProvider:
    """A provider (as a plug-in would declare one) whose endpoints are under `base_url`."""

    class LocalIdP(OAuthProvider):
        name = "local-idp"
        display_name = "Local IdP"
        authorize_url = f"{base_url}/authorize"
        token_url = f"{base_url}/token"
        userinfo_url = f"{base_url}/userinfo"
        scopes = ("openid", "email")
        imap_host = "127.0.0.1"

    return LocalIdP()


def base_url(host: str, port: int) -> str:
    return f"http://{url_host(host)}:{port}"


@pytest.fixture
def start_idp() -> Iterator[StartIdp]:
    """Start local authorization servers on a loopback address; stop them afterwards."""
    with ExitStack() as running:

        def start(listen: str) -> tuple[AuthorizationServer, int]:
            server = AuthorizationServer()
            url = running.enter_context(serving(server.app(), host=listen))
            return server, int(url.rpartition(":")[2])

        yield start


@pytest.fixture
def elsewhere(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    return connect_only_here(monkeypatch)


@pytest.mark.parametrize("host", BLOCKED_FORMS)
def test_a_token_endpoint_inside_our_network_is_refused_before_connecting(
    start_idp: StartIdp, elsewhere: list[tuple[str, int]], host: str
) -> None:
    server, port = start_idp("127.0.0.1")

    with pytest.raises(ProviderHostBlockedError) as refused:
        refresh_access_token(
            provider_at(base_url(host, port)),
            CLIENT,
            SecretStr("refresh-1"),
            allow_private_hosts=False,
        )

    assert str(refused.value) == REFUSED.format(endpoint="token endpoint")
    assert server.calls == []
    assert elsewhere == []


@pytest.mark.parametrize("host", BLOCKED_FORMS)
def test_a_userinfo_endpoint_inside_our_network_is_refused_before_connecting(
    start_idp: StartIdp, elsewhere: list[tuple[str, int]], host: str
) -> None:
    server, port = start_idp("127.0.0.1")
    grant = TokenGrant(SecretStr(sign_jwt("alice")), None, None)

    with pytest.raises(ProviderHostBlockedError) as refused:
        fetch_email_address(provider_at(base_url(host, port)), grant, allow_private_hosts=False)

    assert str(refused.value) == REFUSED.format(endpoint="userinfo endpoint")
    assert server.calls == []
    assert elsewhere == []


@pytest.mark.parametrize("host", [*REACHING_LOOPBACK, "::1"])
def test_loopback_endpoints_answer_when_allowed(start_idp: StartIdp, host: str) -> None:
    server, port = start_idp("::1" if host == "::1" else "127.0.0.1")
    server.access_tokens["access-1"] = "alice@example.com"
    provider = provider_at(base_url(host, port))

    # Answers without tokens in them: the server's verdicts show the requests reached it.
    with pytest.raises(InvalidGrantError):
        refresh_access_token(provider, CLIENT, SecretStr("unknown"), allow_private_hosts=True)
    grant = TokenGrant(SecretStr("access-1"), None, None)
    email = fetch_email_address(provider, grant, allow_private_hosts=True)

    assert email == "alice@example.com"
    assert server.calls == ["/token", "/userinfo"]


@pytest.mark.parametrize("host", ELSEWHERE)
def test_other_private_networks_are_connected_to_when_allowed(
    elsewhere: list[tuple[str, int]], host: str
) -> None:
    with pytest.raises(ProviderUnavailableError) as failed:
        refresh_access_token(
            provider_at(base_url(host, 8443)),
            CLIENT,
            SecretStr("refresh-1"),
            allow_private_hosts=True,
        )

    assert not isinstance(failed.value, ProviderHostBlockedError)
    assert str(failed.value) == "Local IdP's token endpoint failed: ConnectError"
    [(address, port)] = elsewhere
    assert (ipaddress.ip_address(address), port) == (ipaddress.ip_address(host), 8443)


def test_an_endpoint_name_rebound_to_loopback_after_the_check_is_not_reached(
    start_idp: StartIdp, elsewhere: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, port = start_idp("127.0.0.1")
    answers = resolve_name(monkeypatch, "idp.rebinding.test", PUBLIC_ADDRESS, "127.0.0.1")

    with pytest.raises(ProviderUnavailableError) as failed:
        refresh_access_token(
            provider_at(f"http://idp.rebinding.test:{port}"),
            CLIENT,
            SecretStr("refresh-1"),
            allow_private_hosts=False,
        )

    assert str(failed.value) == "Local IdP's token endpoint failed: ConnectError"
    assert answers == [PUBLIC_ADDRESS]  # one lookup: the connection used the vetted answer
    assert elsewhere == [(PUBLIC_ADDRESS, port)]
    assert server.calls == []


@pytest.mark.parametrize("target", ["loopback", "metadata"])
def test_a_token_endpoint_redirect_is_not_followed(
    elsewhere: list[tuple[str, int]], target: str
) -> None:
    with recording_server() as bystander:
        location = {
            "loopback": f"{bystander.url}/token",
            "metadata": "http://169.254.169.254/latest/meta-data/",
        }[target]
        with (
            recording_server(redirect_to=location) as moved,
            pytest.raises(ProviderUnavailableError) as failed,
        ):
            refresh_access_token(
                provider_at(moved.url),
                CLIENT,
                SecretStr("refresh-1"),
                allow_private_hosts=True,
            )

    assert str(failed.value) == (
        "Local IdP's token endpoint answered HTTP 307: redirects are not followed"
    )
    assert moved.hits == ["POST /token"]
    assert bystander.hits == []
    assert elsewhere == []


# Through the service: the API and the sync read the setting.


@pytest.fixture
def settings(settings: Settings, jwt_dovecot: Dovecot, request: pytest.FixtureRequest) -> Settings:
    allowed = bool(getattr(request, "param", False))
    return settings.model_copy(
        update={"imap_ca_file": jwt_dovecot.ca_file, "oauth_allow_private_hosts": allowed}
    )


@pytest.mark.parametrize("settings", [False, True], indirect=True, ids=["default", "allowed"])
def test_enabling_a_provider_on_a_private_host_needs_the_setting(
    live_api: LiveApi,
    settings: Settings,
    provider_name: str,
    authorization_server: tuple[AuthorizationServer, str],
) -> None:
    server, _ = authorization_server

    answer = live_api.client.put(
        f"/v1/oauth/providers/{provider_name}",
        json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "enabled": True},
    )

    if settings.oauth_allow_private_hosts:
        assert answer.status_code == 200, answer.text
        assert server.calls == ["/token"]  # the client check asked the server
    else:
        assert answer.status_code == 502
        problem = answer.json()
        assert problem["code"] == "provider_unavailable"
        assert problem["detail"] == REFUSED.format(endpoint="token endpoint").replace(
            "Local IdP", "Local test IdP"
        )
        assert server.calls == []


@pytest.mark.parametrize("settings", [False, True], indirect=True, ids=["default", "allowed"])
def test_the_token_refresh_before_a_sync_needs_the_setting_for_a_private_host(
    *,
    engine: Engine,
    settings: Settings,
    provider_name: str,
    authorization_server: tuple[AuthorizationServer, str],
    jwt_dovecot: Dovecot,
    add_mailbox: MailboxFactory,
) -> None:
    server, _ = authorization_server
    secrets = SecretBox.from_settings(settings)
    with session_scope(engine) as session:
        session.add(
            OAuthProviderSettings(
                name=provider_name,
                client_id=CLIENT_ID,
                client_secret_enc=secrets.encrypt(CLIENT_SECRET),
                enabled=True,
            )
        )
    user = jwt_dovecot.add_user()
    server.refresh_tokens["refresh-1"] = user.name
    mailbox_id = add_mailbox(
        user,
        auth_type=AuthType.OAUTH,
        provider=provider_name,
        password_enc=None,
        access_token_enc=secrets.encrypt(sign_jwt(user.name, expires_in=-60)),
        refresh_token_enc=secrets.encrypt("refresh-1"),
        token_expires_at=utcnow() - timedelta(minutes=1),
    )

    result = sync_mailbox(engine, mailbox_id, settings, folders_only=True)

    assert result is not None
    with session_scope(engine) as session:
        mailbox = session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        last_error = mailbox.last_error
    if settings.oauth_allow_private_hosts:
        assert result.status is SyncRunStatus.SUCCEEDED  # Dovecot took the refreshed token
        assert server.calls == ["/token"]
    else:
        assert result.status is SyncRunStatus.FAILED
        assert result.error_code == "provider_unavailable"
        assert last_error is not None
        assert "OAUTH_ALLOW_PRIVATE_HOSTS=true allows it" in last_error
        assert server.calls == []
        # Only a change of settings fixes it, so the owner hears of it, unlike a provider outage.
        assert [e["error_code"] for e in events_of(engine, mailbox_id, "mailbox.sync_failed")] == [
            "provider_unavailable"
        ]
