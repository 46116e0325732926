"""A stored OAuth client secret goes only to the token endpoint it was given for.

A plug-in provider whose token endpoint's host comes from the tenant (as some
identity providers put the tenant in the host name) lets a settings change
move the endpoint: keeping the stored secret then needs it given again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Settings
from tests.dovecot import Dovecot
from tests.live_api import LiveApi, serving
from tests.oauth.rig import provider_plugin
from tests.oauth.servers import CLIENT_ID, CLIENT_SECRET, AuthorizationServer


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"oauth_allow_private_hosts": True})


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
