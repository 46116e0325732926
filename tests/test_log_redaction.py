"""No OAuth code, state, webhook URL query or secret-named field reaches a log line.

The first two tests run the service under a real uvicorn that logs at INFO, as in
production; the secret watch checks every record too, uvicorn's access log included.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.db.models import utcnow
from app.log_redaction import REDACTED, install_log_redaction, redact_text
from app.notify.dispatcher import dispatch_due
from app.security import SecretBox
from tests.support.live_api import LiveApi
from tests.support.secret_watch import SecretKind, register_secret
from tests.support.webhook_receiver import running_receiver


class KeptRecords(logging.Handler):
    """Keep every record, and its line as a plain formatter writes it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


@pytest.fixture
def log_lines() -> Iterator[KeptRecords]:
    """Every log line of the process while the test runs (the root sees uvicorn's too)."""
    kept = KeptRecords()
    root = logging.getLogger()
    root.addHandler(kept)
    yield kept
    root.removeHandler(kept)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_allow_private_hosts": True})


def test_the_oauth_callback_code_and_state_never_reach_a_log_line(
    live_api: LiveApi, log_lines: KeptRecords
) -> None:
    code = register_secret(SecretKind.OAUTH_CODE, f"4/0A{secrets.token_urlsafe(30)}", "code")
    state = register_secret(SecretKind.OAUTH_CODE, secrets.token_urlsafe(24), "state")

    page = live_api.client.get(f"/oauth/gmail/callback?code={code}&state={state}")

    assert page.status_code == 400  # a state this service never issued
    access = [line for line in log_lines.lines if "/oauth/gmail/callback" in line]
    assert access, "uvicorn logged no access line for the callback"
    assert all(f"/oauth/gmail/callback?{REDACTED}" in line for line in access), access
    leaked = [line for line in log_lines.lines if code in line or state in line]
    assert leaked == [], "the code or state reached a log line"


def test_a_token_in_a_webhook_url_never_reaches_a_log_line(
    live_api: LiveApi, engine: Engine, settings: Settings, log_lines: KeptRecords
) -> None:
    token = register_secret(SecretKind.URL_TOKEN, secrets.token_urlsafe(16), "webhook URL")
    with running_receiver() as receiver:
        receiver.script = [(500, {}), (410, {})]  # a failure, then the endpoint is disabled
        created = live_api.client.post(
            "/v1/webhooks", json={"url": f"{receiver.url}?token={token}"}
        )
        assert created.status_code == 201
        webhook_id = created.json()["id"]
        assert live_api.client.post(f"/v1/webhooks/{webhook_id}/test").status_code == 202
        box = SecretBox.from_settings(settings)
        now = utcnow()
        for later in (timedelta(0), timedelta(hours=13)):
            asyncio.run(dispatch_due(engine, settings, box, now=now + later))

    assert len(receiver.requests) == 2
    assert live_api.client.get(f"/v1/webhooks/{webhook_id}").json()["enabled"] is False
    posted = [line for line in log_lines.lines if "/hook?" in line]
    assert posted, "nothing logged the webhook requests: this test would prove nothing"
    leaked = [line for line in log_lines.lines if token in line]
    assert leaked == [], "the webhook URL's token reached a log line"


@pytest.fixture
def redacted_log() -> Iterator[tuple[logging.Logger, KeptRecords]]:
    """A logger of ours whose handler is set up as the process's logging setup does it."""
    kept = KeptRecords()
    install_log_redaction(kept)
    logger = logging.getLogger("app.log_redaction_check")
    logger.addHandler(kept)
    logger.propagate = False
    yield logger, kept
    logger.removeHandler(kept)
    logger.propagate = True


def test_secret_named_fields_are_dropped_and_urls_lose_their_query(
    redacted_log: tuple[logging.Logger, KeptRecords],
) -> None:
    log, kept = redacted_log

    log.info("posted to %s", "https://hooks.example/in?token=abc&x=1")
    log.info(
        "sync.login",
        extra={
            "password": "hunter2",
            "refresh_token": "1//r",
            "smtp_password": "pw",
            "url": "https://h.example/cb?code=xyz",
            "mailbox_id": 3,
            "error_code": "auth_failed",
        },
    )
    log.warning("token endpoint said client_secret=s3cr3t&grant_type=refresh_token")
    try:
        raise ValueError("fetching https://h.example/x?access_token=abc failed")
    except ValueError:
        log.exception("oauth.failed")

    posted, login, form, failed = kept.records
    assert posted.getMessage() == f"posted to https://hooks.example/in?{REDACTED}"
    fields = vars(login)
    assert not {"password", "refresh_token", "smtp_password"} & fields.keys()
    assert fields["url"] == f"https://h.example/cb?{REDACTED}"
    assert (fields["mailbox_id"], fields["error_code"]) == (3, "auth_failed")
    assert (
        form.getMessage()
        == f"token endpoint said client_secret={REDACTED}&grant_type=refresh_token"
    )
    assert failed.exc_text is not None
    assert "access_token=abc" not in failed.exc_text
    assert f"https://h.example/x?{REDACTED}" in failed.exc_text
    assert "access_token=abc" not in kept.lines[3]


@pytest.mark.parametrize(
    "line", ["/" * 100_000 + "?", "a=" * 50_000, "code=" * 20_000 + "?", "/?" * 50_000]
)
def test_redaction_takes_linear_time_on_hostile_lines(line: str) -> None:
    started = time.perf_counter()
    redact_text(line)
    assert time.perf_counter() - started < 0.5
