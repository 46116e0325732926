"""A stored OAuth client secret, and the refresh tokens of a provider's mailboxes, go only
to the token endpoint they were given for.

A plug-in provider whose token endpoint's host comes from the tenant (as some
identity providers put the tenant in the host name) lets a settings change
move the endpoint: keeping the stored secret then needs it given again, and
while mailboxes hold the provider's refresh tokens the host cannot move at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.db.models import AuthType, SyncRunStatus, utcnow
from app.security import SecretBox
from app.sync.service import sync_mailbox
from tests.support.dovecot import Dovecot
from tests.support.factories import MailboxFactory
from tests.support.live_api import LiveApi, serving
from tests.support.oauth_rig import provider_plugin, sign_jwt
from tests.support.oauth_servers import CLIENT_ID, CLIENT_SECRET, AuthorizationServer
from tests.support.secret_watch import SecretKind, register_secret


@pytest.fixture
def settings(settings: Settings, jwt_dovecot: Dovecot) -> Settings:
    return settings.model_copy(
        update={"oauth_allow_private_hosts": True, "imap_ca_file": jwt_dovecot.ca_file}
    )


@pytest.fixture
def tenant_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jwt_dovecot: Dovecot
) -> Iterator[str]:
    """A provider whose endpoints live at http://{tenant}/..."""
    with provider_plugin(
        tmp_path, monkeypatch, "http://{tenant}", jwt_dovecot.tls_port, uses_tenant=True
    ) as name:
        yield name


def test_a_tenant_that_moves_the_token_endpoint_needs_the_secret_again(
    live_api: LiveApi, tenant_provider: str
) -> None:
    ours, elsewhere = AuthorizationServer(), AuthorizationServer()
    with serving(ours.app()) as ours_url, serving(elsewhere.app()) as elsewhere_url:
        url = f"/v1/oauth/providers/{tenant_provider}"
        tenant_of = {"ours": ours_url.removeprefix("http://")}
        tenant_of["elsewhere"] = elsewhere_url.removeprefix("http://")
        first = live_api.client.put(
            url,
            json={
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "tenant": tenant_of["ours"],
                "enabled": True,
            },
        )
        assert first.status_code == 200, first.text
        assert ours.calls == ["/token"]

        moved = live_api.client.put(
            url, json={"client_id": CLIENT_ID, "tenant": tenant_of["elsewhere"], "enabled": True}
        )
        again = live_api.client.put(
            url, json={"client_id": CLIENT_ID, "tenant": tenant_of["ours"], "enabled": True}
        )

    assert elsewhere.calls == [], "the stored client secret was sent to another host"
    assert moved.status_code == 422, moved.text
    assert moved.json()["code"] == "invalid_provider_settings"
    assert [error["field"] for error in moved.json()["errors"]] == ["client_secret"]
    assert again.status_code == 200, again.text
    assert ours.calls == ["/token", "/token"]


def test_a_providers_token_host_stays_while_mailboxes_hold_its_refresh_tokens(
    *,
    live_api: LiveApi,
    tenant_provider: str,
    engine: Engine,
    settings: Settings,
    jwt_dovecot: Dovecot,
    add_mailbox: MailboxFactory,
) -> None:
    ours, elsewhere = AuthorizationServer(), AuthorizationServer()
    secrets = SecretBox.from_settings(settings)
    user = jwt_dovecot.add_user()
    refresh_token = register_secret(SecretKind.REFRESH_TOKEN, "stored-refresh-0123456789", "")
    ours.refresh_tokens[refresh_token] = user.name
    mailbox_id = add_mailbox(
        user,
        auth_type=AuthType.OAUTH,
        provider=tenant_provider,
        password_enc=None,
        access_token_enc=secrets.encrypt(sign_jwt(user.name, expires_in=-60)),
        refresh_token_enc=secrets.encrypt(refresh_token),
        token_expires_at=utcnow() - timedelta(minutes=1),
    )
    with serving(ours.app()) as ours_url, serving(elsewhere.app()) as elsewhere_url:
        url = f"/v1/oauth/providers/{tenant_provider}"
        configured = live_api.client.put(
            url,
            json={
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "tenant": ours_url.removeprefix("http://"),
            },
        )
        assert configured.status_code == 200, configured.text

        moved = live_api.client.put(
            url,
            json={
                "client_id": CLIENT_ID,
                "client_secret": "a-secret-of-the-callers-own",
                "tenant": elsewhere_url.removeprefix("http://"),
            },
        )
        result = sync_mailbox(engine, mailbox_id, settings, folders_only=True)

    assert elsewhere.calls == [], "a stored refresh token was sent to another host"
    assert moved.status_code == 422, moved.text
    assert [error["field"] for error in moved.json()["errors"]] == ["tenant"]
    assert result is not None
    assert result.status is SyncRunStatus.SUCCEEDED, result
    assert ours.calls == ["/token"]  # the refresh, at the endpoint the token came from
