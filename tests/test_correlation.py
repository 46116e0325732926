"""A request's correlation id reaches the job it queued, the sync run, its events and every
log line of that run: a real uvicorn, a real `imap-bridge worker` logging JSON lines, the
suite's Dovecot and both databases."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from app.config import Settings
from app.db import session_scope
from app.db.models import Event, SyncRun, SyncRunStatus
from app.logs import log_handler
from tests.support.dovecot import MailUser
from tests.support.live_api import LiveApi
from tests.support.mailgen import make_message
from tests.support.worker_process import wait_until, worker_process

REQUEST_ID = "crm-4711:sync-now"
SECONDS = 180  # a deadline: a worker on a machine loaded twenty times over took 60 s to start


@pytest.fixture
def api_lines() -> Iterator[io.StringIO]:
    """The API's log lines (uvicorn runs in this process), as `LOG_FORMAT=json` writes them."""
    stream = io.StringIO()
    handler = log_handler("json", stream)
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


def _json_lines(text: str) -> list[dict[str, Any]]:
    parsed = []
    for line in text.splitlines():
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"a log line is not JSON: {line!r}")
    return parsed


def _events(engine: Engine, mailbox_id: int) -> list[Event]:
    with session_scope(engine) as session:
        events = list(session.exec(select(Event).where(Event.mailbox_id == mailbox_id)))
        session.expunge_all()
        return events


def _run(engine: Engine, run_id: int) -> SyncRun:
    with session_scope(engine) as session:
        run = session.get(SyncRun, run_id)
        assert run is not None
        session.expunge(run)
        return run


def test_a_request_id_follows_the_sync_it_queued_into_its_run_events_and_log_lines(
    *,
    engine: Engine,
    settings: Settings,
    live_api: LiveApi,
    mail_user: MailUser,
    watched_mailbox: int,
    api_lines: io.StringIO,
    tmp_path: Path,
) -> None:
    mailbox_id = watched_mailbox  # synced once: what arrives now is announced
    mail_user.append("INBOX", make_message(subject="arrives after the first sync"))
    before = {event.id for event in _events(engine, mailbox_id)}

    queued = live_api.client.post(
        f"/v1/mailboxes/{mailbox_id}/sync", headers={"X-Request-ID": REQUEST_ID}
    )
    assert queued.status_code == 202, queued.text
    assert queued.headers["X-Request-ID"] == REQUEST_ID
    run_id = queued.json()["id"]
    with worker_process(settings, tmp_path, environment={"LOG_FORMAT": "json"}) as worker:
        try:
            wait_until(lambda: "worker.sync_done" in worker.log, SECONDS, "the job ended")
        except AssertionError as exc:
            pytest.fail(f"{exc}; the worker said:\n{worker.log}")
    run = _run(engine, run_id)
    assert run.status is SyncRunStatus.SUCCEEDED, run.error

    access = [
        line
        for line in _json_lines(api_lines.getvalue())
        if line["logger"] == "uvicorn.access"
        and f"/v1/mailboxes/{mailbox_id}/sync" in line["message"]
    ]
    assert [line.get("correlation_id") for line in access] == [REQUEST_ID], access
    worker_lines = _json_lines(worker.log)
    of_the_run = [line for line in worker_lines if line.get("correlation_id") == REQUEST_ID]
    assert {"sync.done", "worker.sync_done"} <= {line["message"] for line in of_the_run}, worker.log
    assert all(line.get("mailbox_id") in (mailbox_id, None) for line in of_the_run), of_the_run
    done = next(line for line in of_the_run if line["message"] == "worker.sync_done")
    assert (done["run_id"], done["status"], done["new"]) == (run_id, "succeeded", 1)
    assert run.correlation_id == REQUEST_ID
    written = {
        (event.type, event.correlation_id)
        for event in _events(engine, mailbox_id)
        if event.id not in before
    }
    assert {("email.received", REQUEST_ID), ("mailbox.synced", REQUEST_ID)} <= written, written
    assert {correlation_id for _, correlation_id in written} == {REQUEST_ID}, written
