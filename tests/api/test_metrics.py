"""Prometheus metrics over real HTTP, fed by real requests and a real sync."""

from __future__ import annotations

from sqlalchemy import Engine

from app.config import Settings
from app.sync.service import sync_mailbox
from tests.dovecot import MailUser
from tests.factories import MailboxFactory
from tests.live_api import LiveApi
from tests.mailgen import make_message


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
