"""Fixtures of the OAuth tests: the JWT-checking Dovecot, a local authorization server,
and a plug-in provider for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dovecot import Dovecot, DovecotInstances
from tests.support.live_api import serving
from tests.support.oauth_rig import oauth_dovecot, provider_plugin
from tests.support.oauth_servers import AuthorizationServer


@pytest.fixture
def jwt_dovecot(dovecot_instances: DovecotInstances) -> Dovecot:
    return oauth_dovecot(dovecot_instances)


@pytest.fixture
def authorization_server() -> Iterator[tuple[AuthorizationServer, str]]:
    """Serve a local authorization server on 127.0.0.1; yield it and its base URL."""
    server = AuthorizationServer()
    with serving(server.app()) as url:
        yield server, url


@pytest.fixture
def provider_name(
    authorization_server: tuple[AuthorizationServer, str],
    jwt_dovecot: Dovecot,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    """Install a plug-in provider for the local authorization server, whose IMAP server is
    the JWT-checking Dovecot; yield its name."""
    server_url = authorization_server[1]
    with provider_plugin(tmp_path, monkeypatch, server_url, jwt_dovecot.tls_port) as name:
        yield name
