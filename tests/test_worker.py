"""The arq worker against the real Redis, the test Dovecot, SQLite and PostgreSQL.

Each test has a queue of its own (`queue_name`), and every key holding that
name is deleted afterwards, so tests never see each other's jobs.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from arq import ArqRedis
from sqlalchemy import Engine

from app.config import Settings
from app.db import session_scope
from app.db.models import Mailbox, MailboxStatus, SyncRun, SyncRunStatus, SyncTrigger, utcnow
from app.db.repositories.mailboxes import acquire_lease
from app.job_queue import enqueue_sync, sync_job_id
from app.worker.cron_jobs import enqueue_due_syncs
from app.worker.state import BusyRetry
from app.worker.sync_job import BUSY_ERROR_CODE
from tests.support.dovecot import Dovecot, MailUser
from tests.support.dovecot_sessions import SessionLog
from tests.support.factories import MailboxFactory
from tests.support.mailgen import make_message
from tests.support.snapshot import email_count, stored_uids, sync_runs
from tests.support.worker_process import (
    drain_queue,
    enqueue,
    open_queue,
    wait_until,
    worker_process,
)

RECENT = datetime.now(UTC) - timedelta(days=3)
# The embedded Redis does not depend on the database: one backend is enough.
SQLITE_ONLY = pytest.mark.parametrize("databases", ["sqlite"], indirect=True)

# Reads a key through the embedded Redis of the working directory, as another process would.
READ_KEY_SCRIPT = """
import asyncio, sys
from app.config import Settings
from app.job_queue import create_queue

async def read() -> None:
    pool = await create_queue(Settings(redis_url=None))
    print((await pool.get(sys.argv[1])).decode())
    await pool.aclose()

asyncio.run(read())
"""


@pytest.fixture
def fresh_workdir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Work in an empty directory, REDIS_URL unset, as on a fresh machine."""
    workdir = tmp_path_factory.mktemp("embedded")  # short: a unix socket path has 107 bytes
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("REDIS_URL", raising=False)
    return workdir


async def queued_job_ids(pool: ArqRedis) -> set[str]:
    return {job_id.decode() for job_id in await pool.zrange(pool.default_queue_name, 0, -1)}


def test_cron_queues_each_due_mailbox_once(
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    queue_name: str,
) -> None:
    now = utcnow()
    never_synced = add_mailbox(mail_user, email_address="a@example.com")
    overdue = add_mailbox(
        mail_user, email_address="b@example.com", next_sync_at=now - timedelta(minutes=1)
    )
    add_mailbox(mail_user, email_address="c@example.com", next_sync_at=now + timedelta(minutes=5))
    add_mailbox(mail_user, email_address="d@example.com", status=MailboxStatus.DISABLED)

    async def scenario() -> tuple[list[int], list[int], set[str], bool, bool]:
        async with open_queue(settings) as pool:
            first = await enqueue_due_syncs(pool, engine)
            second = await enqueue_due_syncs(pool, engine)
            queued = await queued_job_ids(pool)
            again = await enqueue_sync(pool, overdue, trigger=SyncTrigger.API)
            folders = await enqueue_sync(pool, overdue, folders_only=True)
            return first, second, queued, again, folders

    first, second, queued, again, folders = asyncio.run(scenario())

    assert first == [never_synced, overdue]
    assert second == []
    assert queued == {sync_job_id(queue_name, never_synced), sync_job_id(queue_name, overdue)}
    assert not again, "a mailbox is never queued twice"
    assert folders, "a folders-only sync is not held up by a queued full sync"


def test_worker_syncs_a_queued_mailbox(
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    uids = [mail_user.append("INBOX", make_message(subject=f"m{n}"), date=RECENT) for n in range(3)]
    mailbox_id = add_mailbox(mail_user)

    async def scenario() -> set[str]:
        async with open_queue(settings) as pool:
            assert await enqueue_sync(pool, mailbox_id)
            await drain_queue(settings)
            return await queued_job_ids(pool)

    left = asyncio.run(scenario())

    assert left == set()
    assert stored_uids(engine, mailbox_id) == {"INBOX": set(uids)}
    [run] = sync_runs(engine, mailbox_id)
    assert (run.status, run.trigger, run.new) == (SyncRunStatus.SUCCEEDED, SyncTrigger.CRON, 3)


def test_a_scheduled_job_for_a_mailbox_synced_since_the_cron_read_the_list_does_nothing(
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    mail_user.append("INBOX", make_message(subject="m"), date=RECENT)
    mailbox_id = add_mailbox(mail_user)

    async def scenario() -> None:
        async with open_queue(settings) as pool:
            assert await enqueue_sync(pool, mailbox_id)
            await drain_queue(settings)
            # A cron tick that read the due list before that run ended queues it again.
            assert await enqueue_sync(pool, mailbox_id, only_if_due=True)
            await drain_queue(settings)

    asyncio.run(scenario())

    [run] = sync_runs(engine, mailbox_id)  # no second login for a mailbox synced a moment ago
    assert run.status is SyncRunStatus.SUCCEEDED


def test_one_connection_per_host_makes_syncs_of_one_server_take_turns(
    engine: Engine,
    settings: Settings,
    dovecot: Dovecot,
    add_mailbox: MailboxFactory,
) -> None:
    users = [dovecot.add_user() for _ in range(3)]
    for user in users:
        user.append("INBOX", make_message(), date=RECENT)
    mailbox_ids = [add_mailbox(user) for user in users]
    one_per_host = settings.model_copy(update={"imap_max_connections_per_host": 1})
    sessions = SessionLog(dovecot.config.log_file, {user.name for user in users})

    async def scenario() -> None:
        async with open_queue(one_per_host) as pool:
            for mailbox_id in mailbox_ids:
                assert await enqueue_sync(pool, mailbox_id)
            await drain_queue(one_per_host)

    asyncio.run(scenario())

    runs = [run for m in mailbox_ids for run in sync_runs(engine, m)]
    assert [run.status for run in runs] == [SyncRunStatus.SUCCEEDED] * 3
    assert sessions.logins() == 3
    assert sessions.most_at_once() == 1, "Dovecot saw two of the syncs' sessions at once"


def test_incomplete_sync_is_followed_up_until_complete(
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    for n in range(5):
        mail_user.append("INBOX", make_message(subject=f"m{n}"), date=RECENT)
    mailbox_id = add_mailbox(mail_user)
    hurried = settings.model_copy(update={"sync_time_budget_seconds": 0.001, "sync_batch_size": 2})

    async def scenario() -> int:
        """Run the worker until nothing is left; return how many times it found work."""
        async with open_queue(hurried) as pool:
            assert await enqueue_sync(pool, mailbox_id)
            rounds = 0
            while await queued_job_ids(pool) and rounds < 20:
                await drain_queue(hurried)
                rounds += 1
            return rounds

    rounds = asyncio.run(scenario())

    runs = sync_runs(engine, mailbox_id)
    assert rounds < 20
    assert email_count(engine, mailbox_id) == 5
    assert len(runs) >= 3, "one batch of two per run"
    assert all(run.status is SyncRunStatus.SUCCEEDED for run in runs)
    assert sum(run.new for run in runs) == 5
    with session_scope(engine) as session:
        mailbox = session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        assert mailbox.next_sync_at is not None
        assert mailbox.next_sync_at > utcnow(), "complete: due again one interval later"


def test_lease_held_elsewhere_fails_a_requested_run_as_busy_and_skips_a_scheduled_one(
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    mailbox_id = add_mailbox(mail_user)
    with session_scope(engine) as session:
        assert acquire_lease(session, mailbox_id, "another-worker", utcnow(), timedelta(minutes=5))
        requested = SyncRun(mailbox_id=mailbox_id, folders_only=True, trigger=SyncTrigger.API)
        session.add(requested)
        session.flush()
        assert requested.id is not None
        run_id = requested.id

    async def scenario() -> None:
        async with open_queue(settings) as pool:
            assert await enqueue_sync(pool, mailbox_id)
            assert await enqueue_sync(
                pool, mailbox_id, folders_only=True, run_id=run_id, trigger=SyncTrigger.API
            )
            await drain_queue(settings, busy_retry=BusyRetry(delay_seconds=0.05, attempts=2))
            assert await queued_job_ids(pool) == set()

    asyncio.run(scenario())

    [run] = sync_runs(engine, mailbox_id)
    assert run.id == run_id
    assert (run.status, run.error_code) == (SyncRunStatus.FAILED, BUSY_ERROR_CODE)
    assert run.finished_at is not None
    assert email_count(engine, mailbox_id) == 0


@SQLITE_ONLY
def test_embedded_redis_serves_the_queue_when_redis_url_is_unset(
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    fresh_workdir: Path,
) -> None:
    embedded = settings.model_copy(update={"redis_url": None})
    uid = mail_user.append("INBOX", make_message(), date=RECENT)
    mailbox_id = add_mailbox(mail_user)

    async def scenario() -> None:
        async with open_queue(embedded) as pool:
            assert await enqueue_sync(pool, mailbox_id)
            await pool.set("probe", "seen by another process")
            await drain_queue(embedded)

    asyncio.run(scenario())

    assert stored_uids(engine, mailbox_id) == {"INBOX": {uid}}
    assert (fresh_workdir / "var" / "redis.sock").is_socket()
    other = subprocess.run(
        [sys.executable, "-c", READ_KEY_SCRIPT, "probe"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (other.returncode, other.stdout.strip()) == (0, "seen by another process"), other.stderr


def thread_niceness(pid: int) -> set[int]:
    """Return the niceness of every thread of process `pid` (field 19 of each task's stat)."""
    values: set[int] = set()
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            values.add(int(stat.read_text().rsplit(")", 1)[1].split()[16]))
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
    return values


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("launcher", "started_at"), [((), 0), (("nice", "-n", "12"), 12)], ids=["plain", "niced"]
)
def test_the_worker_process_and_its_sync_threads_run_at_worker_niceness_or_nicer(
    *,
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    tmp_path: Path,
    launcher: tuple[str, ...],
    started_at: int,
) -> None:
    mail_user.append("INBOX", make_message(), date=RECENT)
    mailbox_id = add_mailbox(mail_user)
    inherited = os.getpriority(os.PRIO_PROCESS, 0)
    expected = max(7, min(19, inherited + started_at))

    with worker_process(
        settings, tmp_path, environment={"WORKER_NICENESS": "7"}, launcher=launcher
    ) as worker:

        def synced() -> bool:
            assert worker.running, worker.log
            runs = sync_runs(engine, mailbox_id)
            return any(run.status == SyncRunStatus.SUCCEEDED for run in runs)

        enqueue(settings, mailbox_id)
        wait_until(synced, 60, "a sync by the worker process")
        niceness = thread_niceness(worker.process.pid)

    assert niceness == {expected}, worker.log


def test_a_worker_niceness_out_of_range_is_refused_naming_the_setting(tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "app.cli", "worker"],
        cwd=tmp_path,
        env={**os.environ, "WORKER_NICENESS": "20"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert refused.returncode != 0
    assert "worker_niceness" in refused.stderr
    assert "less than or equal to 19" in refused.stderr
