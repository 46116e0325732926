"""The popup flow in a real headless Chromium, end to end.

    CRM page (localhost:P) --import--> /static/imap-bridge-oauth.js (127.0.0.1:B)
      click -> popup -> local authorization server (auto-consent, PKCE checked)
            -> /oauth/<provider>/callback -> postMessage to the bound origin
      -> by default: the CRM backend adds the owner -> complete -> the mailbox (no token)
      -> with `exchange`: the CRM backend -> get-token -> token data
      -> reconnecting a mailbox: the CRM backend -> reauthorize, then its complete

The provider is a plug-in found through an entry point of a small test
distribution, and its access tokens are JWTs the test Dovecot checks, so the
flow ends in a real XOAUTH2 login. Debian's chromium is driven by Playwright
through `executable_path`; no browser is downloaded.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser
from sqlalchemy import Engine

from app.config import Settings
from app.db import session_scope
from app.db.models import Mailbox, MailboxStatus, OAuthFlow, utcnow
from tests.support.chromium import headless_chromium
from tests.support.dovecot import Dovecot, MailUser
from tests.support.live_api import LiveApi, serving
from tests.support.oauth_servers import CLIENT_ID, CLIENT_SECRET, CRM_USER, CrmHost


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with headless_chromium() as launched:
        yield launched


@pytest.fixture
def crm_port() -> int:
    """A free port for the CRM page, known before the service starts (its allowed origin)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def settings(settings: Settings, jwt_dovecot: Dovecot, crm_port: int) -> Settings:
    return settings.model_copy(
        update={
            "imap_ca_file": jwt_dovecot.ca_file,
            "oauth_allow_private_hosts": True,  # the local authorization server is on 127.0.0.1
            # The CRM page's origin, and the same port on 127.0.0.1 (another origin) to show
            # that the popup's message reaches only the bound one.
            "oauth_allowed_origins": [
                f"http://localhost:{crm_port}",
                f"http://127.0.0.1:{crm_port}",
            ],
        }
    )


@dataclass
class Flow:
    live_api: LiveApi
    crm: CrmHost
    crm_url: str
    user: MailUser
    browser: Browser

    def run(self, **page_params: str) -> dict[str, Any]:
        """Open the CRM page, click "connect", return what the promise settled with."""
        context = self.browser.new_context()
        try:
            page = context.new_page()
            query = httpx.QueryParams({"login_hint": self.user.name, **page_params})
            page.goto(f"{self.crm_url}/?{query}")
            page.click("#connect")
            page.wait_for_function("window.outcome !== undefined", timeout=15000)
            outcome: dict[str, Any] = page.evaluate("window.outcome")
            return outcome
        finally:
            context.close()


@pytest.fixture
def flow(
    live_api: LiveApi, provider_name: str, jwt_dovecot: Dovecot, browser: Browser, crm_port: int
) -> Iterator[Flow]:
    enabled = live_api.client.put(
        f"/v1/oauth/providers/{provider_name}",
        json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "enabled": True},
    )
    assert enabled.status_code == 200, enabled.text
    crm = CrmHost(live_api.base_url, live_api.api_key, provider_name)
    with serving(crm.app(), port=crm_port) as loopback_url:
        # "localhost" is another origin than the service's 127.0.0.1
        crm_url = loopback_url.replace("127.0.0.1", "localhost")
        # The account's IMAP user name is its address, as at Gmail.
        account = jwt_dovecot.add_user(name=f"{jwt_dovecot.add_user().name}@example.com")
        yield Flow(live_api, crm, crm_url, account, browser)


def test_the_plugin_provider_is_listed(live_api: LiveApi, provider_name: str) -> None:
    names = {p["name"] for p in live_api.client.get("/v1/oauth/providers").json()}
    assert provider_name in names


def test_by_default_the_popup_creates_the_mailbox_and_no_token_reaches_the_page(
    flow: Flow, jwt_dovecot: Dovecot
) -> None:
    outcome = flow.run()

    mailbox = outcome.get("result")
    assert mailbox is not None, outcome
    assert mailbox["email_address"] == flow.user.name
    assert mailbox["owner"] == {"user_id": CRM_USER, "email": None}
    assert mailbox["auth"] == {"type": "oauth", "provider": flow.crm.provider}
    assert mailbox["imap"]["port"] == jwt_dovecot.tls_port
    assert "access_token" not in str(outcome)
    assert flow.crm.exchanges[0]["status"] == 201
    stored = flow.live_api.client.get(f"/v1/mailboxes/{mailbox['id']}")
    assert stored.status_code == 200, stored.text


def test_a_second_completion_for_the_same_account_is_refused(flow: Flow) -> None:
    first = flow.run()
    assert "result" in first, first

    second = flow.run()

    assert second["error"] == "complete_failed", second
    assert second["problem"]["code"] == "mailbox_exists"


def test_the_popup_hands_token_data_to_the_crm_page_and_the_token_logs_in(
    flow: Flow, jwt_dovecot: Dovecot
) -> None:
    outcome = flow.run(keep_tokens="true")

    tokens = outcome.get("result")
    assert tokens is not None, outcome
    assert tokens["email_address"] == flow.user.name
    assert tokens["expires_in"] == 3600
    assert tokens["refresh_token"]
    check = flow.live_api.client.post(
        f"/v1/oauth/{flow.crm.provider}/check-connection",
        json={
            "access_token": tokens["access_token"],
            "imap": {
                "host": jwt_dovecot.host,
                "port": jwt_dovecot.tls_port,
                "username": flow.user.name,
            },
        },
    )
    assert check.status_code == 200, check.text
    replay = flow.live_api.client.post(
        f"/v1/oauth/{flow.crm.provider}/token", json=flow.crm.exchanges[0]["request"]
    )
    assert replay.status_code == 400
    assert replay.json()["code"] == "state_used"


def test_the_popup_reconnects_an_auth_failed_mailbox_and_no_token_reaches_the_page(
    flow: Flow, engine: Engine
) -> None:
    created = flow.run()["result"]
    with session_scope(engine) as session:
        session.execute(
            sa.update(Mailbox)
            .where(Mailbox.id == created["id"])
            .values(status=MailboxStatus.AUTH_FAILED)
        )

    outcome = flow.run(reconnect=str(created["id"]))

    mailbox = outcome.get("result")
    assert mailbox is not None, outcome
    assert (mailbox["id"], mailbox["status"]) == (created["id"], "active")
    assert "access_token" not in str(outcome)
    assert flow.crm.exchanges[-1]["status"] == 200
    assert len(flow.live_api.client.get("/v1/mailboxes").json()["items"]) == 1


def test_a_page_on_another_origin_receives_nothing(flow: Flow) -> None:
    other_origin = flow.crm_url.replace("localhost", "127.0.0.1")

    outcome = flow.run(bind_origin=other_origin)

    assert outcome["error"] == "popup_closed", outcome
    assert flow.crm.exchanges == []


def test_an_expired_state_is_refused_in_the_popup(flow: Flow, engine: Engine) -> None:
    def expire(started: dict[str, Any]) -> None:
        with session_scope(engine) as session:
            session.execute(
                sa.update(OAuthFlow)
                .where(OAuthFlow.state == started["state"])
                .values(expires_at=utcnow())
            )

    flow.crm.after_authorize.append(expire)

    outcome = flow.run(keep_tokens="true")

    assert outcome["error"] == "state_expired", outcome
    assert flow.crm.exchanges == []
