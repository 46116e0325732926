"""The process's log lines: every field in either format, secrets out, quiet when idle.

The formats are read through the handler every command installs (`log_handler`);
quietness is watched on real `imap-bridge worker` and `watch` processes.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from app.config import LogFormat, Settings
from app.correlation import correlation_scope
from app.db import session_scope
from app.db.models import Mailbox, utcnow
from app.job_queue import create_queue
from app.log_redaction import REDACTED
from app.logs import log_handler
from app.notify.dispatcher import dispatch_due
from app.security import SecretBox
from app.worker.cron_jobs import enqueue_due_syncs
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.worker_process import WorkerProcess, wait_until, worker_process

# arq's last line of its start-up (after "Starting worker for 4 functions").
WORKER_STARTED = "redis_version="
SECONDS = 180  # a deadline: a worker on a machine loaded twenty times over took 60 s to start


class Lines:
    """What a logger of our own wrote through the product's handler."""

    def __init__(self, log_format: LogFormat) -> None:
        self.stream = io.StringIO()
        self.handler = log_handler(log_format, self.stream)
        self.logger = logging.getLogger(f"app.logs_check.{log_format}")

    def __iter__(self) -> Iterator[str]:
        return iter(self.stream.getvalue().splitlines())


@pytest.fixture(params=["text", "json"])
def lines(request: pytest.FixtureRequest) -> Iterator[Lines]:
    kept = Lines(request.param)
    kept.logger.addHandler(kept.handler)
    kept.logger.setLevel(logging.DEBUG)
    kept.logger.propagate = False
    yield kept
    kept.logger.removeHandler(kept.handler)


@pytest.mark.parametrize("lines", ["json"], indirect=True)
def test_json_lines_parse_and_carry_every_extra_field_and_the_correlation_id(lines: Lines) -> None:
    with correlation_scope("req-1"):
        lines.logger.info(
            "sync.done", extra={"mailbox_id": 3, "new": 12, "error_code": None, "folders": ["A"]}
        )
    lines.logger.warning("worker.redis_unavailable", extra={"retry_in": 2.5, "level": "x"})
    try:
        raise ValueError("boom")
    except ValueError:
        lines.logger.exception("api.unexpected_error")

    done, outage, failure = (json.loads(line) for line in lines)
    assert done["message"] == "sync.done"
    assert (done["level"], done["logger"]) == ("INFO", "app.logs_check.json")
    assert done["time"].endswith("Z")
    assert {k: done[k] for k in ("mailbox_id", "new", "error_code", "folders")} == {
        "mailbox_id": 3,
        "new": 12,
        "error_code": None,
        "folders": ["A"],
    }
    assert done["correlation_id"] == "req-1"
    assert "correlation_id" not in outage, "an id outside its scope"
    assert (outage["level"], outage["retry_in"], outage["extra_level"]) == ("WARNING", 2.5, "x")
    assert failure["message"] == "api.unexpected_error"
    assert "ValueError: boom" in failure["exception"]


@pytest.mark.parametrize("lines", ["text"], indirect=True)
def test_text_lines_follow_the_message_with_every_field_as_key_value(lines: Lines) -> None:
    with correlation_scope("req-2"):
        lines.logger.info(
            "worker.sync_done",
            extra={"mailbox_id": 3, "status": "succeeded", "run_id": None, "why": "two words"},
        )

    (line,) = lines
    _time, level, logger, rest = line.split(" ", 3)
    assert (level, logger) == ("INFO", "app.logs_check.text")
    assert rest == (
        'worker.sync_done mailbox_id=3 status=succeeded run_id=null why="two words"'
        " correlation_id=req-2"
    )


def test_secrets_in_extra_fields_and_messages_never_reach_a_line(lines: Lines) -> None:
    secret = "hunter2-s3cr3t"
    lines.logger.info(
        "oauth.exchange",
        extra={
            "password": secret,
            "refresh_token": secret,
            "callback": f"https://crm.example/oauth/gmail/callback?code={secret}&state=s",
            "response": {"access_token": secret, "status": 400, "note": f"token={secret}"},
            "attempts": [f"client_secret={secret}"],
        },
    )
    lines.logger.info("posted to %s", f"https://hooks.example/in?token={secret}")

    written = "\n".join(lines)
    assert secret not in written
    assert "password" not in written and "refresh_token" not in written
    assert f"/oauth/gmail/callback?{REDACTED}" in written
    assert "400" in written, "the harmless part of a field went missing"


# -- quiet at the default level ---------------------------------------------------------


def _started(process: WorkerProcess, line: str) -> int:
    """Wait until `process` logged `line`; return how many lines it has logged by then."""
    wait_until(lambda: line in process.log or not process.running, SECONDS, line)
    assert process.running, process.log
    return len(process.log.splitlines())


@pytest.mark.slow
@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)  # the same on both
def test_an_idle_worker_and_watcher_log_nothing_after_starting(
    engine: Engine, settings: Settings, watched_mailbox: int, tmp_path: Path
) -> None:
    """A DEBUG worker beside them shows the dispatcher's cron ran meanwhile, twice."""
    # The first sync's events go out now, so that the workers find nothing to announce.
    asyncio.run(dispatch_due(engine, settings, SecretBox.from_settings(settings)))
    debug_settings = settings.model_copy(update={"queue_name": f"{settings.queue_name}-debug"})
    for name in ("worker", "watch", "debug"):
        (tmp_path / name).mkdir()
    with (
        worker_process(settings, tmp_path / "worker") as worker,
        worker_process(settings, tmp_path / "watch", command="watch") as watcher,
        worker_process(
            debug_settings, tmp_path / "debug", environment={"LOG_LEVEL": "debug"}
        ) as debug,
    ):
        worker_lines = _started(worker, WORKER_STARTED)
        watcher_lines = _started(watcher, "watch.watching")
        _started(debug, WORKER_STARTED)

        def dispatcher_ticks() -> int:
            return sum("dispatch-events ●" in line for line in debug.log.splitlines())

        wait_until(lambda: dispatcher_ticks() >= 2, SECONDS, f"two ticks:\n{debug.log}")
        worker_after = worker.log.splitlines()[worker_lines:]
        watcher_after = watcher.log.splitlines()[watcher_lines:]

    ticks = [line for line in debug.log.splitlines() if "dispatch-events ●" in line]
    assert all(" DEBUG arq.worker " in line for line in ticks), ticks
    assert worker_after == [], "the idle worker logged at the default level"
    assert watcher_after == [], "the idle watcher logged at the default level"


def test_the_cron_logs_its_pass_at_info_only_when_it_queued_a_sync(
    engine: Engine,
    settings: Settings,
    add_mailbox: MailboxFactory,
    mail_user: MailUser,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mailbox_id = add_mailbox(mail_user, next_sync_at=utcnow() + timedelta(hours=1))

    async def cron_pass() -> list[int]:
        queue = await create_queue(settings)
        try:
            return await enqueue_due_syncs(queue, engine)
        finally:
            await queue.aclose()

    caplog.set_level(logging.DEBUG, logger="app.worker")
    assert asyncio.run(cron_pass()) == []
    with session_scope(engine) as session:
        mailbox = session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        mailbox.next_sync_at = utcnow()
    assert asyncio.run(cron_pass()) == [mailbox_id]

    passes = [r for r in caplog.records if r.getMessage() == "worker.due_queued"]
    assert [(r.levelname, vars(r)["queued"]) for r in passes] == [("DEBUG", 0), ("INFO", 1)]
