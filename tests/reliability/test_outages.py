"""Outages of the database and of Redis, while the worker syncs and while the API answers.

Each outage is the test's own. PostgreSQL and Redis are reached through a `FaultProxy`
whose `take_down()` closes every connection and refuses new ones until `heal()`; SQLite
is down while another connection holds `BEGIN EXCLUSIVE` for longer than the busy
timeout (the `timeout` of its URL). The worker is the service's `SupervisedWorker`: on an
event loop of its own in this process, without the cron (so nothing but the worker itself
can queue a sync again), or as `imap-bridge worker` in a subprocess, cron and all.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from arq.jobs import Job, JobStatus
from sqlalchemy import Engine, make_url

from app.config import Settings
from app.db import session_scope
from app.db.models import Mailbox, MailboxStatus, SyncRunStatus, utcnow
from app.job_queue import create_queue, sync_job_id
from app.supervised_worker import SupervisedWorker
from app.worker import worker_settings
from app.worker.cron_jobs import dispatch_events_job, enqueue_due_syncs_job
from tests.support.crash_checks import assert_complete, assert_consistent
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.fault_proxy import FaultProxy
from tests.support.live_api import LiveApi
from tests.support.mailgen import append_many, make_message
from tests.support.mirror import assert_mirrors_server
from tests.support.outbox import record_synced_event
from tests.support.redis_queue import redis_url_through
from tests.support.snapshot import events_of, stored_count, sync_runs
from tests.support.webhook_receiver import (
    WebhookReceiver,
    running_receiver,
    subscribe_to_everything,
)
from tests.support.worker_process import enqueue, open_queue, wait_until, worker_process

BATCH_SIZE = 20
FIRST_INBOX, FIRST_SENT = 400, 40
# A first sync fetches the newest mail first: heavy messages there make its first batches
# slow enough for an outage to start while most of the mailbox is still to come.
HEAVY_NEWEST = range(FIRST_INBOX - 200, FIRST_INBOX)
OUTAGE_SECONDS = 5.0
SQLITE_BUSY_SECONDS = 2  # shorter than the outage: the worker's writes fail inside it
RECOVERY_SECONDS = 90.0
SYNC_SECONDS = 60.0
SYNCED = "mailbox.synced"

SQLITE_ONLY = pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
POSTGRESQL_ONLY = pytest.mark.parametrize("databases", ["postgresql"], indirect=True)


class DatabaseOutage(Protocol):
    """Where the service finds the database, and how the test takes it away and back."""

    url: str

    def begin(self) -> None: ...

    def end(self) -> None: ...


@dataclass
class PostgresOutage:
    """PostgreSQL behind a proxy that can play a server that went away."""

    proxy: FaultProxy
    url: str

    def begin(self) -> None:
        self.proxy.take_down()

    def end(self) -> None:
        self.proxy.heal()


@dataclass
class SQLiteLock:
    """SQLite with a short busy timeout, locked by another connection during the outage."""

    path: str
    url: str
    holder: sqlite3.Connection | None = None

    def begin(self) -> None:
        self.holder = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.holder.execute("BEGIN EXCLUSIVE")

    def end(self) -> None:
        assert self.holder is not None
        self.holder.execute("ROLLBACK")
        self.holder.close()


@pytest.fixture
def database_outage(database_url: str, request: pytest.FixtureRequest) -> DatabaseOutage:
    """The test's database, as the service reaches it during these tests."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        with_timeout = url.update_query_dict({"timeout": str(SQLITE_BUSY_SECONDS)})
        return SQLiteLock(url.database, with_timeout.render_as_string(hide_password=False))
    proxy: FaultProxy = request.getfixturevalue("postgres_proxy")
    proxied = url.set(host="127.0.0.1", port=proxy.port)
    return PostgresOutage(proxy, proxied.render_as_string(hide_password=False))


@pytest.fixture
def settings(
    settings: Settings, database_outage: DatabaseOutage, redis_proxy: FaultProxy
) -> Settings:
    """The shared settings, reaching the database and Redis where the test can take them away.

    The test itself (`engine`) reads the database directly, also during an outage.
    """
    return settings.model_copy(
        update={
            "database_url": database_outage.url,
            "redis_url": redis_url_through(redis_proxy),
            "sync_batch_size": BATCH_SIZE,
            "webhook_allow_private_hosts": True,  # the test's receiver is on loopback
        }
    )


class WorkerThread:
    """The service's SupervisedWorker on an event loop of its own, without the cron."""

    def __init__(self, settings: Settings) -> None:
        options = worker_settings(settings)
        options["cron_jobs"] = []
        self.worker = SupervisedWorker(options, poll_delay=0.05)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> WorkerThread:
        self._thread.start()
        assert self._ready.wait(timeout=10), "the worker's loop did not start"
        return self

    def __exit__(self, *_exc_info: object) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.worker.stop)
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the worker did not stop"
        if self._error is not None:
            raise self._error

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # handed to the test's thread by __exit__
            self._error = exc

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        try:
            await self.worker.run()
        finally:
            await self.worker.close()


def fill_mailbox(user: MailUser) -> dict[str, set[int]]:
    """Give the user a mailbox that takes many batches; return its UIDs per folder."""
    return {
        "INBOX": set(append_many(user, "INBOX", "in", FIRST_INBOX, heavy=HEAVY_NEWEST)),
        "Sent": set(append_many(user, "Sent", "out", FIRST_SENT)),
    }


def mailbox_row(engine: Engine, mailbox_id: int) -> Mailbox:
    with session_scope(engine) as session:
        mailbox = session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        return mailbox


def newest_run_succeeded(engine: Engine, mailbox_id: int) -> bool:
    runs = sync_runs(engine, mailbox_id)
    return bool(runs) and runs[-1].status is SyncRunStatus.SUCCEEDED


def synced_to_completion(engine: Engine, mailbox_id: int) -> bool:
    """Say whether the newest run succeeded with nothing left for a follow-up."""
    due = mailbox_row(engine, mailbox_id).next_sync_at
    return newest_run_succeeded(engine, mailbox_id) and due is not None and due > utcnow()


def delivered_runs(receiver: WebhookReceiver) -> list[int]:
    """The run ids of the `mailbox.synced` events the receiver accepted, in arrival order."""
    assert receiver.bad_signatures == 0
    return [p["data"]["run_id"] for p in receiver.accepted.values() if p["type"] == SYNCED]


def assert_problem(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert (answer.json()["status"], answer.json()["code"]) == (status, code)


@pytest.mark.slow
def test_a_database_outage_mid_sync_fails_the_run_and_the_worker_finishes_the_mailbox_itself(
    *,
    engine: Engine,
    settings: Settings,
    database_outage: DatabaseOutage,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = fill_mailbox(mail_user)
    mailbox_id = add_mailbox(mail_user)

    with WorkerThread(settings) as worker:
        enqueue(settings, mailbox_id)
        wait_until(
            lambda: stored_count(engine, mailbox_id) >= BATCH_SIZE, SYNC_SECONDS, "a batch stored"
        )
        database_outage.begin()
        try:
            time.sleep(OUTAGE_SECONDS)  # the sync's next write fails; nothing can be written
            stored_during_outage = stored_count(engine, mailbox_id)
            assert_consistent(engine, mailbox_id, server)  # the batch in flight left nothing
        finally:
            database_outage.end()
        wait_until(
            lambda: synced_to_completion(engine, mailbox_id),
            RECOVERY_SECONDS,
            "the worker finished the mailbox by itself once the database was back",
        )
        assert worker.running, "the worker survived the outage"

    assert 0 < stored_during_outage < FIRST_INBOX + FIRST_SENT, "the outage hit mid-sync"
    first, *later = sync_runs(engine, mailbox_id)
    assert (first.status, first.error_code) == (SyncRunStatus.FAILED, "database_unavailable")
    assert first.error is not None
    assert first.error.startswith("the database did not answer: ")
    assert later, "a new run continued the mailbox"
    assert {run.status for run in later} == {SyncRunStatus.SUCCEEDED}
    mailbox = mailbox_row(engine, mailbox_id)
    assert (mailbox.status, mailbox.consecutive_failures) == (MailboxStatus.ACTIVE, 0)
    assert mailbox.lease_owner is None
    assert events_of(engine, mailbox_id, "mailbox.credentials_invalid") == []
    assert events_of(engine, mailbox_id, "mailbox.sync_failed") == []
    retried = [r for r in caplog.records if r.getMessage() == "worker.database_unavailable"]
    assert retried, "the job retried itself"
    assert_complete(engine, mailbox_id, mail_user)
    assert_mirrors_server(engine, mailbox_id, mail_user)


def test_with_the_database_away_a_dispatcher_tick_logs_one_warning_and_the_next_delivers(
    *,
    engine: Engine,
    settings: Settings,
    database_outage: DatabaseOutage,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with running_receiver() as receiver:
        subscribe_to_everything(engine, settings, receiver)
        event_id = record_synced_event(engine)

        async def two_ticks() -> tuple[str, str]:
            """The dispatcher job as the worker's cron runs it: during the outage, then after."""
            options = worker_settings(settings)
            ctx: dict[str, Any] = {}
            await options["on_startup"](ctx)
            try:
                database_outage.begin()
                try:
                    during = await dispatch_events_job(ctx)
                finally:
                    database_outage.end()
                return during, await dispatch_events_job(ctx)
            finally:
                await options["on_shutdown"](ctx)

        during, after = asyncio.run(two_ticks())

    assert during == "0 delivered, 0 failed, then the database did not answer"
    [warning] = [
        r for r in caplog.records if r.getMessage() == "worker.dispatch_database_unavailable"
    ]
    assert warning.exc_info is None, "one line, no traceback"
    assert warning.__dict__["reason"].startswith("the database did not answer: ")
    assert after == "1 delivered, 0 failed"
    assert [payload["id"] for payload in receiver.accepted.values()] == [event_id]


@POSTGRESQL_ONLY  # SQLite's lock stops writers only: this cron merely reads
def test_with_the_database_away_the_due_cron_logs_one_warning_and_the_next_tick_queues(
    *,
    engine: Engine,
    settings: Settings,
    database_outage: DatabaseOutage,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mailbox_id = add_mailbox(mail_user)  # never synced: due

    async def two_ticks() -> tuple[int, int, bool]:
        """The due-mailbox cron as the worker runs it: during the outage, then after."""
        options = worker_settings(settings)
        ctx: dict[str, Any] = {}
        await options["on_startup"](ctx)
        try:
            async with open_queue(settings) as pool:
                ctx["redis"] = pool
                database_outage.begin()
                try:
                    during = await enqueue_due_syncs_job(ctx)
                finally:
                    database_outage.end()
                after = await enqueue_due_syncs_job(ctx)
                job_id = sync_job_id(settings.queue_name, mailbox_id)
                job = Job(job_id, pool, _queue_name=settings.queue_name)
                queued = await job.status() is JobStatus.queued
            return during, after, queued
        finally:
            await options["on_shutdown"](ctx)

    during, after, queued = asyncio.run(two_ticks())

    assert (during, after) == (0, 1), "nothing queued during the outage, the mailbox after"
    assert queued, "the mailbox's sync waits in the queue"
    [warning] = [r for r in caplog.records if r.getMessage() == "worker.due_database_unavailable"]
    assert warning.exc_info is None, "one line, no traceback"
    assert warning.__dict__["reason"].startswith("the database did not answer: ")


@pytest.mark.slow
@SQLITE_ONLY
def test_a_redis_outage_mid_sync_leaves_the_worker_running_and_it_catches_up_once_redis_is_back(
    *,
    engine: Engine,
    settings: Settings,
    redis_proxy: FaultProxy,
    live_api: LiveApi,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    tmp_path: Path,
) -> None:
    fill_mailbox(mail_user)
    mailbox_id = add_mailbox(mail_user)

    with (
        running_receiver() as receiver,
        worker_process(settings, tmp_path) as worker,
    ):
        hook = live_api.client.post(
            "/v1/webhooks", json={"url": receiver.url, "event_types": [SYNCED]}
        )
        assert hook.status_code == 201, hook.text
        receiver.secret = hook.json()["secret"]
        enqueue(settings, mailbox_id)
        wait_until(
            lambda: stored_count(engine, mailbox_id) >= BATCH_SIZE, SYNC_SECONDS, "a batch stored"
        )
        redis_proxy.take_down()
        try:
            wait_until(
                lambda: newest_run_succeeded(engine, mailbox_id),
                SYNC_SECONDS,
                "the sync finished without Redis",
            )
            wait_until(
                lambda: (
                    worker.log.count("worker.redis_unavailable") >= 2
                    and "worker.job_waits_for_redis" in worker.log
                ),
                SYNC_SECONDS,
                "the worker tried Redis again, and the finished job waits for it",
            )
            assert worker.running, f"the worker process ended:\n{worker.log}"
            assert receiver.requests == [], "the dispatcher runs as a job: it waits for Redis"
        finally:
            redis_proxy.heal()
        (first,) = sync_runs(engine, mailbox_id)
        wait_until(
            lambda: delivered_runs(receiver) == [first.id],
            RECOVERY_SECONDS,
            "the run's event was delivered once Redis was back",
        )
        mail_user.append("INBOX", make_message(subject="after the outage"))
        enqueue(settings, mailbox_id)  # the first job's end was recorded: its id is free
        wait_until(
            lambda: len(delivered_runs(receiver)) == 2,
            RECOVERY_SECONDS,
            "a newly queued sync ran and its event was delivered",
        )
        assert worker.running, f"the worker process ended:\n{worker.log}"

    assert worker.process.returncode == 0, worker.log
    first, second = sync_runs(engine, mailbox_id)
    assert (first.status, first.new) == (SyncRunStatus.SUCCEEDED, FIRST_INBOX + FIRST_SENT)
    assert (second.status, second.new) == (SyncRunStatus.SUCCEEDED, 1)
    assert delivered_runs(receiver) == [first.id, second.id]
    assert_mirrors_server(engine, mailbox_id, mail_user)


@POSTGRESQL_ONLY
def test_the_api_answers_503_while_postgresql_is_down_and_200_once_it_is_back(
    live_api: LiveApi,
    database_outage: DatabaseOutage,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    mailbox_id = add_mailbox(mail_user)
    client = live_api.client
    reads = ["/v1/mailboxes", f"/v1/mailboxes/{mailbox_id}", "/readyz"]
    assert [client.get(path).status_code for path in reads] == [200] * 3  # connections pooled

    database_outage.begin()
    try:
        during = [client.get(path) for path in reads[:2]]
        during.append(client.post(f"/v1/mailboxes/{mailbox_id}/sync"))
        ready = client.get("/readyz")
    finally:
        database_outage.end()

    for answer in during:
        assert_problem(answer, 503, "database_unavailable")
        assert int(answer.headers["retry-after"]) > 0
    assert_problem(ready, 503, "database_unavailable")
    assert [client.get(path).status_code for path in reads] == [200] * 3


@SQLITE_ONLY
def test_the_api_answers_503_while_redis_is_down_and_queues_syncs_again_once_it_is_back(
    live_api: LiveApi,
    settings: Settings,
    redis_proxy: FaultProxy,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    mailbox_id = add_mailbox(mail_user)
    client = live_api.client
    assert client.get("/readyz").status_code == 200

    redis_proxy.take_down()
    try:
        sync_request = client.post(f"/v1/mailboxes/{mailbox_id}/sync")
        ready = client.get("/readyz")
        runs = client.get(f"/v1/mailboxes/{mailbox_id}/sync-runs")
    finally:
        redis_proxy.heal()

    assert_problem(sync_request, 503, "queue_unavailable")
    assert int(sync_request.headers["retry-after"]) > 0
    assert_problem(ready, 503, "queue_unavailable")
    assert runs.status_code == 200
    assert runs.json()["items"] == [], "a run whose job could not be queued is not left behind"
    queued = client.post(f"/v1/mailboxes/{mailbox_id}/sync")
    assert queued.status_code == 202, queued.text
    assert queued.json()["status"] == "queued"
    assert client.get("/readyz").status_code == 200

    async def job_status() -> JobStatus:
        pool = await create_queue(settings)
        try:
            job_id = sync_job_id(settings.queue_name, mailbox_id)
            return await Job(job_id, pool, _queue_name=settings.queue_name).status()
        finally:
            await pool.aclose()

    assert asyncio.run(job_status()) is JobStatus.queued
