"""Prometheus metrics over real HTTP, fed by real requests and a real sync."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import Engine, event

from app.config import Settings
from app.main import create_app
from app.sync.service import sync_mailbox
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.live_api import LiveApi, serving
from tests.support.mailgen import make_message
from tests.support.secret_watch import SecretKind, register_secret


def metric_value(text: str, name: str) -> float:
    """Return the value of the first sample line that starts with `name`."""
    for line in text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the scrape")


def test_metrics_count_requests_by_route_and_syncs_from_the_database(
    live_api: LiveApi,
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    mail_user.append("INBOX", make_message())
    mail_user.append("INBOX", make_message())
    assert sync_mailbox(engine, add_mailbox(mail_user), settings) is not None
    live_api.client.get("/healthz")

    response = live_api.client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'route="/healthz"' in text
    assert metric_value(text, 'imap_bridge_sync_runs{status="succeeded"}') == 1
    assert metric_value(text, "imap_bridge_messages_synced") == 2
    assert metric_value(text, 'imap_bridge_mailboxes{status="active"}') == 1


class StatementCounter:
    """Count the SQL statements an app's own engine sends (SQLAlchemy's cursor event)."""

    def __init__(self, app: FastAPI) -> None:
        self.count = 0
        event.listen(app.state.engine, "before_cursor_execute", self._seen)

    def _seen(self, *_args: Any) -> None:
        self.count += 1


@pytest.fixture
def cached_app(settings: Settings) -> Iterator[tuple[FastAPI, str]]:
    app = create_app(settings.model_copy(update={"metrics_cache_seconds": 3600}))
    with serving(app) as base_url:
        yield app, base_url


def test_a_second_scrape_within_the_cache_period_runs_no_sql(
    cached_app: tuple[FastAPI, str],
) -> None:
    app, base_url = cached_app
    statements = StatementCounter(app)

    first = httpx.get(f"{base_url}/metrics")
    after_first = statements.count
    again = [httpx.get(f"{base_url}/metrics") for _ in range(3)]

    assert first.status_code == 200
    assert after_first > 0, "the first scrape reads the database"
    assert [response.status_code for response in again] == [200] * 3
    assert statements.count == after_first, "a scrape within the cache period ran SQL"
    assert metric_value(again[-1].text, "imap_bridge_messages_synced") == 0
    assert 'route="/metrics"' in again[-1].text, "request latency stays live"


def test_metrics_behind_a_token_answer_401_without_it(settings: Settings) -> None:
    token = register_secret(SecretKind.METRICS_TOKEN, "metrics-token-5f2a9c1e7b", "METRICS_TOKEN")
    guarded = settings.model_copy(update={"metrics_token": SecretStr(token)})
    with serving(create_app(guarded)) as base_url:
        missing = httpx.get(f"{base_url}/metrics")
        wrong = httpx.get(f"{base_url}/metrics", headers={"Authorization": "Bearer nope"})
        right = httpx.get(f"{base_url}/metrics", headers={"Authorization": f"Bearer {token}"})

    for refused in (missing, wrong):
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["code"] == "unauthorized"
        assert "imap_bridge" not in refused.text
    assert right.status_code == 200
    assert "imap_bridge_mailboxes" in right.text
