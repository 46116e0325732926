"""The popup flow in a real headless Chromium, end to end.

    CRM page (localhost:P) --import--> /static/imap-bridge-oauth.js (127.0.0.1:B)
      click -> popup -> local authorization server (auto-consent, PKCE checked)
            -> /oauth/<provider>/callback -> postMessage to the bound origin
      -> exchange(code, state) via the CRM backend -> get-token -> token data

The provider is a plug-in found through an entry point of a small test
distribution, and its access tokens are JWTs the test Dovecot checks, so the
flow ends in a real XOAUTH2 login. Debian's chromium is driven by Playwright
through `executable_path`; no browser is downloaded.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, sync_playwright
from sqlalchemy import Engine

from app.config import Settings
from app.db import session_scope
from app.db.models import OAuthFlow, utcnow
from tests.dovecot import Dovecot, MailUser
from tests.live_api import LiveApi, serving
from tests.oauth.servers import CLIENT_ID, CLIENT_SECRET, CrmHost

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        message = f"{CHROMIUM} is missing: apt-get install -y chromium"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture
def settings(settings: Settings, jwt_dovecot: Dovecot) -> Settings:
    # The local authorization server listens on 127.0.0.1.
    return settings.model_copy(
        update={"imap_ca_file": jwt_dovecot.ca_file, "oauth_allow_private_hosts": True}
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
            query = httpx.QueryParams(
                {"login_hint": f"{self.user.name}@example.com", **page_params}
            )
            page.goto(f"{self.crm_url}/?{query}")
            page.click("#connect")
            page.wait_for_function("window.outcome !== undefined", timeout=15000)
            outcome: dict[str, Any] = page.evaluate("window.outcome")
            return outcome
        finally:
            context.close()


@pytest.fixture
def flow(
    live_api: LiveApi, provider_name: str, jwt_dovecot: Dovecot, browser: Browser
) -> Iterator[Flow]:
    enabled = live_api.client.put(
        f"/v1/oauth/providers/{provider_name}",
        json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "enabled": True},
    )
    assert enabled.status_code == 200, enabled.text
    crm = CrmHost(live_api.base_url, live_api.api_key, provider_name)
    with serving(crm.app()) as loopback_url:
        # "localhost" is another origin than the service's 127.0.0.1
        crm_url = loopback_url.replace("127.0.0.1", "localhost")
        yield Flow(live_api, crm, crm_url, jwt_dovecot.add_user(), browser)


def test_the_plugin_provider_is_listed(live_api: LiveApi, provider_name: str) -> None:
    names = {p["name"] for p in live_api.client.get("/v1/oauth/providers").json()}
    assert provider_name in names


def test_the_popup_hands_token_data_to_the_crm_page_and_the_token_logs_in(
    flow: Flow, jwt_dovecot: Dovecot
) -> None:
    outcome = flow.run()

    tokens = outcome.get("tokens")
    assert tokens is not None, outcome
    assert tokens["email_address"] == f"{flow.user.name}@example.com"
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


def test_a_page_on_another_origin_receives_nothing(flow: Flow) -> None:
    other_origin = flow.crm_url.replace("localhost", "127.0.0.1")

    outcome = flow.run(bind_origin=other_origin)

    assert outcome == {"error": "popup_closed"}
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

    outcome = flow.run()

    assert outcome == {"error": "state_expired"}
    assert flow.crm.exchanges == []
