"""The status page in a real headless Chromium, against a real uvicorn and real Dovecot mailboxes.

Without a key the page is the prompt alone and asks the API nothing; with a
status key it shows the fleet by state, the furthest behind, the failures and
one mailbox's sentence and blockers, exactly as the health routes say them.
The key lives in the tab's session storage only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, Request
from sqlalchemy import Engine

from app.config import Settings
from app.db import session_scope
from app.db.models import ApiKeyScope
from app.db.repositories.api_keys import create_api_key
from app.sync.service import sync_mailbox
from tests.support.chromium import headless_chromium
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.live_api import LiveApi
from tests.support.mailgen import make_message
from tests.support.secret_watch import SecretKind, register_secret

STORAGE_KEY = "imap-bridge-status-key"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with headless_chromium() as launched:
        yield launched


@pytest.fixture
def status_key(engine: Engine) -> str:
    with session_scope(engine) as session:
        _row, key = create_api_key(session, "status page", ApiKeyScope.STATUS)
    return register_secret(SecretKind.API_KEY, key, "the status key")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()


def api_requests(page: Page) -> list[str]:
    """Record the URL of every request the page makes to the API's /v1 routes."""
    seen: list[str] = []

    def record(request: Request) -> None:
        if "/v1/" in request.url:
            seen.append(request.url)

    page.on("request", record)
    return seen


def enter_key(page: Page, key: str) -> None:
    page.fill("#key", key)
    page.click("#prompt button[type=submit]")


def test_without_a_key_the_page_shows_the_prompt_alone(live_api: LiveApi, page: Page) -> None:
    requests = api_requests(page)

    response = page.goto(f"{live_api.base_url}/status")
    page.wait_for_selector("#prompt:not([hidden])")

    assert response is not None
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert page.is_visible("#key")
    assert page.is_hidden("#status")
    assert page.is_hidden("#forget")
    assert requests == [], "no key, no question to the API"


def test_a_status_key_shows_the_states_of_real_mailboxes(
    *,
    live_api: LiveApi,
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    status_key: str,
    page: Page,
) -> None:
    mail_user.append("INBOX", make_message())
    healthy = add_mailbox(mail_user)
    assert sync_mailbox(engine, healthy, settings) is not None
    other = mail_user.dovecot.add_user()
    failing = add_mailbox(other, port=other.dovecot.plain_port)  # TLS to the plain port
    assert sync_mailbox(engine, failing, settings) is not None
    expected = live_api.client.get(f"/v1/mailboxes/{failing}/health").json()

    page.goto(f"{live_api.base_url}/status")
    enter_key(page, status_key)
    page.wait_for_selector("#counts li[data-state=failing]")

    assert page.is_hidden("#prompt")
    assert page.inner_text("#counts li[data-state=healthy]") == "healthy 1"
    assert page.inner_text("#counts li[data-state=failing]") == "failing 1"
    assert page.inner_text("#counts li[data-state=behind]") == "behind 0"
    lags = page.inner_text("#lags tbody")
    assert f"{mail_user.name}@example.com" in lags
    assert f"{other.name}@example.com" in lags
    assert "tls_error: TLS failed" in page.inner_text("#failures tbody")
    assert page.evaluate(f"sessionStorage.getItem({STORAGE_KEY!r})") == status_key
    assert page.evaluate("localStorage.length") == 0
    assert page.input_value("#key") == "", "the key leaves the form once stored"

    page.click(f"#failures button[data-mailbox-id='{failing}']")
    page.wait_for_selector("#mailbox .summary")

    assert page.inner_text("#mailbox h3") == f"Mailbox {failing} failing"
    assert page.inner_text("#mailbox .summary") == expected["summary"]
    assert page.inner_text("#blockers li[data-code=tls_error]").startswith("tls_error: TLS failed")
    assert page.is_visible("#blockers li[data-code=backoff]")

    page.reload()  # the same tab keeps the key
    page.wait_for_selector("#counts li[data-state=failing]")
    assert page.is_hidden("#prompt")

    page.click("#forget")
    assert page.is_visible("#key")
    assert page.evaluate(f"sessionStorage.getItem({STORAGE_KEY!r})") is None
    assert page.inner_text("#counts") == ""


def test_a_refused_key_is_forgotten_and_the_prompt_says_so(live_api: LiveApi, page: Page) -> None:
    page.goto(f"{live_api.base_url}/status")
    enter_key(page, "ib_00000000_not-a-key-this-service-ever-made-for-anyone-at-all")
    page.wait_for_selector("#prompt:not([hidden])")
    page.wait_for_function("document.getElementById('prompt-error').textContent !== ''")

    assert "refused this key" in page.inner_text("#prompt-error")
    assert page.evaluate(f"sessionStorage.getItem({STORAGE_KEY!r})") is None
    assert page.is_hidden("#status")


def test_another_tab_asks_for_the_key_again(
    live_api: LiveApi, browser: Browser, status_key: str, page: Page
) -> None:
    page.goto(f"{live_api.base_url}/status")
    enter_key(page, status_key)
    page.wait_for_selector("#counts li")
    other = browser.new_context()
    try:
        second = other.new_page()
        second.goto(f"{live_api.base_url}/status")
        second.wait_for_selector("#prompt:not([hidden])")
        assert second.is_hidden("#status")
    finally:
        other.close()
