"""Real time end to end: `imap-bridge watch` and `imap-bridge worker` processes, the suite's
Dovecot, the machine's Redis and both databases; no cron run is involved (the mailboxes
are not due), and every lifetime is shortened by settings."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine
from sqlmodel import select

from app.config import Settings
from app.db import session_scope
from app.db.models import (
    Folder,
    Mailbox,
    MailboxStatus,
    SyncTrigger,
    utcnow,
)
from app.db.repositories.mailboxes import acquire_lease, release_lease
from app.imap import Security
from app.job_queue import create_queue, enqueue_watched_sync, watched_sync_job_id
from app.security import SecretBox
from app.sync.service import sync_mailbox
from tests.support.dovecot import Dovecot, DovecotInstances, MailUser
from tests.support.factories import MailboxFactory
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.mailgen import make_message
from tests.support.snapshot import email_count, events_of, received_in, run_triggers, stored_uids
from tests.support.worker_process import WorkerProcess, wait_until, worker_process

WATCH_ENVIRONMENT = {
    "WATCH_LEASE_SECONDS": "2",
    "WATCH_REFRESH_SECONDS": "0.3",
    "WATCH_POLL_SECONDS": "0.5",
    "WATCH_CONNECT_RATE": "50",
}
SECONDS = 30  # what "within seconds" may take on a loaded 2-core machine
WATCHING = "watch.watching"


@pytest.fixture
def processes(settings: Settings, tmp_path: Path) -> Iterator[ProcessStarter]:
    with ExitStack() as stack:
        yield ProcessStarter(settings, tmp_path, stack)


class ProcessStarter:
    """Start `imap-bridge worker` / `watch` processes that stop when the test ends."""

    def __init__(self, settings: Settings, tmp_path: Path, stack: ExitStack) -> None:
        self._settings = settings
        self._tmp_path = tmp_path
        self._stack = stack
        self._started = 0

    def watching(self, *, worker: bool = True) -> WorkerProcess:
        """Start a worker (unless told not to) and a watcher; return once the watcher watches."""
        if worker:
            self.start("worker")
        watcher = self.start("watch")
        wait_until(lambda: watching_sessions(watcher) >= 1, SECONDS, "the watcher watches")
        return watcher

    def start(self, command: str, **environment: str) -> WorkerProcess:
        """Start `command` with WATCH_ENVIRONMENT, and `environment` on top of it."""
        self._started += 1
        workdir = self._tmp_path / f"{command}-{self._started}"
        workdir.mkdir()
        return self._stack.enter_context(
            worker_process(
                self._settings,
                workdir,
                environment={**WATCH_ENVIRONMENT, **environment},
                command=command,
            )
        )


def watching_sessions(watcher: WorkerProcess) -> int:
    return watcher.log.count(WATCHING)


def wait_for_one_received(engine: Engine, mailbox_id: int, folder: str, what: str) -> None:
    """Wait until `email.received` has announced one message in `folder`."""
    wait_until(lambda: received_in(engine, mailbox_id, folder) == 1, SECONDS, what)


def test_new_mail_in_inbox_and_sent_is_announced_within_seconds(
    engine: Engine, watched_mailbox: int, mail_user: MailUser, processes: ProcessStarter
) -> None:
    watcher = processes.watching()

    mail_user.append("INBOX", make_message(subject="arrives in INBOX"))
    wait_for_one_received(
        engine, watched_mailbox, "INBOX", f"email.received for INBOX; watcher log:\n{watcher.log}"
    )
    mail_user.append("Sent", make_message(subject="sent elsewhere"))
    wait_for_one_received(
        engine, watched_mailbox, "Sent", f"email.received for Sent; watcher log:\n{watcher.log}"
    )
    triggers = run_triggers(engine, watched_mailbox)
    assert triggers[0] is SyncTrigger.CRON  # the fixture's first sync
    assert set(triggers[1:]) == {SyncTrigger.WATCH}, f"runs other than the watcher's: {triggers}"


def test_mail_that_arrived_while_nothing_watched_is_announced_when_the_watch_begins(
    engine: Engine, watched_mailbox: int, mail_user: MailUser, processes: ProcessStarter
) -> None:
    mail_user.append("INBOX", make_message(subject="arrived before the watcher started"))
    mail_user.append("Sent", make_message(subject="sent before the watcher started"))
    processes.start("worker")
    watcher = processes.start("watch")
    wait_until(
        lambda: (
            (
                received_in(engine, watched_mailbox, "INBOX"),
                received_in(engine, watched_mailbox, "Sent"),
            )
            == (1, 1)
        ),
        SECONDS,
        f"email.received for INBOX and Sent without a cron run; watcher log:\n{watcher.log}",
    )
    triggers = run_triggers(engine, watched_mailbox)
    assert set(triggers[1:]) == {SyncTrigger.WATCH}, f"runs other than the watcher's: {triggers}"


def test_a_watch_that_begins_queues_a_sync_only_where_the_server_is_ahead(
    engine: Engine,
    settings: Settings,
    watched_mailbox: int,
    *,
    add_mailbox: MailboxFactory,
    dovecot: Dovecot,
    processes: ProcessStarter,
) -> None:
    behind_user = dovecot.add_user()
    behind = add_mailbox(behind_user)
    assert (result := sync_mailbox(engine, behind, settings)) and result.complete
    behind_user.append("INBOX", make_message(subject="arrived before the watcher started"))
    queued = redis.Redis.from_url(str(settings.redis_url))
    try:

        def job_queued(mailbox_id: int) -> bool:
            job_id = watched_sync_job_id(settings.queue_name, mailbox_id)
            return bool(queued.exists(f"arq:job:{job_id}"))

        watcher = processes.start("watch")  # no worker: what it queues stays queued
        wait_until(lambda: job_queued(behind), SECONDS, "a sync queued for the mailbox behind")
        wait_until(lambda: watching_sessions(watcher) == 2, SECONDS, "both mailboxes watched")
        time.sleep(1.0)  # the unchanged one's check, begun with its watch, has had its turn
        assert not job_queued(watched_mailbox), "a sync was queued for an unchanged mailbox"
    finally:
        queued.close()


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)  # Redis and arq are the point
def test_a_burst_of_arrivals_queues_one_sync_that_stores_all_of_them(
    engine: Engine,
    settings: Settings,
    watched_mailbox: int,
    mail_user: MailUser,
    processes: ProcessStarter,
) -> None:
    processes.watching(worker=False)
    client = mail_user.client()
    try:
        for number in range(40):
            client.append("INBOX", make_message(subject=f"burst {number}"))
    finally:
        client.logout()
    queue = redis.Redis.from_url(str(settings.redis_url))
    try:
        job_key = f"arq:job:{watched_sync_job_id(settings.queue_name, watched_mailbox)}"
        wait_until(lambda: bool(queue.exists(job_key)), SECONDS, "a watched sync is queued")
        assert queue.zcard(settings.queue_name) == 1, "the burst queued more than one job"
    finally:
        queue.close()

    processes.start("worker")
    wait_until(
        lambda: email_count(engine, watched_mailbox) == 40,
        SECONDS,
        "the burst stored in full",
    )


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)  # the IMAP connection is the point
def test_a_dropped_watch_connection_comes_back(
    engine: Engine, watched_mailbox: int, mail_user: MailUser, processes: ProcessStarter
) -> None:
    watcher = processes.watching()

    mail_user.kick()
    wait_until(lambda: watching_sessions(watcher) >= 2, SECONDS, "the watcher reconnected")
    mail_user.append("INBOX", make_message(subject="after the kick"))
    wait_for_one_received(engine, watched_mailbox, "INBOX", "email.received after the reconnect")


@pytest.mark.parametrize("lease_seconds", ["2", "600"], ids=["lease expires", "long lease"])
def test_a_killed_watchers_mailboxes_are_taken_over(
    engine: Engine,
    watched_mailbox: int,
    mail_user: MailUser,
    processes: ProcessStarter,
    lease_seconds: str,
) -> None:
    """Within seconds however long the lease: on one machine the dead watcher is seen gone."""
    processes.start("worker")
    first = processes.start("watch", WATCH_LEASE_SECONDS=lease_seconds)
    wait_until(lambda: watching_sessions(first) >= 1, SECONDS, "the first watcher watches")
    second = processes.start("watch", WATCH_LEASE_SECONDS=lease_seconds)

    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait()
    wait_until(lambda: watching_sessions(second) >= 1, SECONDS, "the second watcher took over")
    mail_user.append("INBOX", make_message(subject="watched by the second"))
    wait_for_one_received(
        engine, watched_mailbox, "INBOX", "email.received through the second watcher"
    )


@pytest.mark.parametrize("change", ["watch off", "disabled", "deleted"])
def test_a_mailbox_no_longer_watched_loses_its_connection(
    engine: Engine,
    watched_mailbox: int,
    mail_user: MailUser,
    processes: ProcessStarter,
    change: str,
) -> None:
    processes.watching(worker=False)
    assert mail_user.open_sessions() == 1
    with session_scope(engine) as session:
        mailbox = session.get(Mailbox, watched_mailbox)
        assert mailbox is not None
        if change == "deleted":
            session.delete(mailbox)
        elif change == "disabled":
            mailbox.status = MailboxStatus.DISABLED
        else:
            mailbox.watch = False
    wait_until(lambda: mail_user.open_sessions() == 0, SECONDS, "the watch connection is closed")


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)  # the server is the point
def test_a_server_without_idle_or_notify_is_polled(
    engine: Engine,
    settings: Settings,
    add_mailbox: MailboxFactory,
    dovecot_instances: DovecotInstances,
    processes: ProcessStarter,
) -> None:
    poll_only = dovecot_instances.get(push=False)
    user = poll_only.add_user()
    mailbox_id = add_mailbox(user, port=poll_only.plain_port, security=Security.NONE)
    assert (result := sync_mailbox(engine, mailbox_id, settings)) and result.complete
    processes.start("worker")
    watcher = processes.start("watch")
    wait_until(lambda: watching_sessions(watcher) >= 1, SECONDS, "the watcher polls")

    user.append("INBOX", make_message(subject="found by a poll"))
    user.append("Sent", make_message(subject="found by a poll too"))
    wait_until(
        lambda: (
            received_in(engine, mailbox_id, "INBOX") + received_in(engine, mailbox_id, "Sent") == 2
        ),
        SECONDS,
        f"email.received from the poll-only server; watcher log:\n{watcher.log}",
    )


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)  # the watch restart is the point
def test_a_newly_enabled_folder_is_watched(
    engine: Engine, watched_mailbox: int, mail_user: MailUser, processes: ProcessStarter
) -> None:
    watcher = processes.watching()

    set_folder_enabled(engine, watched_mailbox, "Archive")
    wait_until(lambda: watching_sessions(watcher) >= 2, SECONDS, "the watch restarted")
    uid = mail_user.append("Archive", make_message(subject="archived"))
    wait_until(  # a folder's first sync stores its mail without announcing it
        lambda: stored_uids(engine, watched_mailbox).get("Archive") == {uid},
        SECONDS,
        f"the newly enabled folder synced; watcher log:\n{watcher.log}",
    )


def test_a_refused_login_stops_the_watch_until_the_credentials_change(
    engine: Engine,
    settings: Settings,
    watched_mailbox: int,
    mail_user: MailUser,
    processes: ProcessStarter,
) -> None:
    watcher = processes.watching()

    old_password = mail_user.password
    mail_user.set_password(f"{old_password}-changed")
    mail_user.kick()
    wait_until(
        lambda: mailbox_status(engine, watched_mailbox) is MailboxStatus.AUTH_FAILED,
        SECONDS,
        "the sync the watcher queued recorded the refused login",
    )
    assert len(events_of(engine, watched_mailbox, "mailbox.credentials_invalid")) == 1
    assert watcher.log.count("watch.failed") == 1, "the watcher kept trying the old password"

    with session_scope(engine) as session:  # as a PATCH with the new password does
        mailbox = session.get(Mailbox, watched_mailbox)
        assert mailbox is not None
        mailbox.password_enc = SecretBox.from_settings(settings).encrypt(mail_user.password)
        mailbox.status = MailboxStatus.ACTIVE
    wait_until(lambda: watching_sessions(watcher) >= 2, SECONDS, "watching with the new password")


def test_changes_seen_while_a_scheduled_sync_holds_the_mailbox_wait_for_it(
    engine: Engine,
    settings: Settings,
    watched_mailbox: int,
    mail_user: MailUser,
    processes: ProcessStarter,
) -> None:
    with session_scope(engine) as session:
        assert acquire_lease(session, watched_mailbox, "cron-sync", utcnow(), timedelta(minutes=5))
    worker = processes.start("worker")
    mail_user.append("INBOX", make_message(subject="arrives during a long sync"))
    assert asyncio.run(queue_watched_sync(settings, watched_mailbox, {"INBOX"}))
    wait_until(
        lambda: "worker.watched_sync_waits_for_lease" in worker.log,
        SECONDS,
        "the watched sync found the lease held",
    )
    assert email_count(engine, watched_mailbox) == 0

    with session_scope(engine) as session:
        release_lease(session, watched_mailbox, "cron-sync")
    wait_for_one_received(
        engine, watched_mailbox, "INBOX", "the follow-up synced the folder once the lease was free"
    )


async def queue_watched_sync(settings: Settings, mailbox_id: int, folders: set[str]) -> bool:
    pool = await create_queue(settings)
    try:
        return await enqueue_watched_sync(pool, mailbox_id, folders)
    finally:
        await pool.aclose()


def set_folder_enabled(engine: Engine, mailbox_id: int, full_name: str) -> None:
    with session_scope(engine) as session:
        folder = session.exec(
            select(Folder).where(Folder.mailbox_id == mailbox_id, Folder.full_name == full_name)
        ).one()
        folder.sync_enabled = True


def mailbox_status(engine: Engine, mailbox_id: int) -> MailboxStatus | None:
    with session_scope(engine) as session:
        mailbox = session.get(Mailbox, mailbox_id)
        return mailbox.status if mailbox else None


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)  # Redis and arq are the point
def test_changes_seen_while_a_watched_sync_runs_leave_exactly_one_follow_up(
    engine: Engine,
    settings: Settings,
    add_mailbox: MailboxFactory,
    mail_user: MailUser,
    processes: ProcessStarter,
) -> None:
    with FaultProxy(mail_user.dovecot.host, mail_user.dovecot.plain_port) as proxy:
        mailbox_id = add_mailbox(mail_user, port=proxy.port, security=Security.NONE)
        assert (result := sync_mailbox(engine, mailbox_id, settings)) and result.complete
        processes.start("worker")
        job_running = f"arq:in-progress:{watched_sync_job_id(settings.queue_name, mailbox_id)}"
        queue = redis.Redis.from_url(str(settings.redis_url))
        try:
            proxy.arm(Fault.stall_after(1, seconds=5))  # the sync's greeting comes late
            mail_user.append("INBOX", make_message(subject="first"))
            assert asyncio.run(queue_watched_sync(settings, mailbox_id, {"INBOX"}))
            wait_until(lambda: bool(queue.exists(job_running)), SECONDS, "the sync runs")
            proxy.heal()
            for folder in ("Sent", "INBOX", "Sent"):
                mail_user.append(folder, make_message(subject=f"while it runs, in {folder}"))
                assert not asyncio.run(queue_watched_sync(settings, mailbox_id, {folder})), (
                    "a second watched sync was queued while one ran"
                )
        finally:
            queue.close()
        wait_until(
            lambda: (
                (received_in(engine, mailbox_id, "INBOX"), received_in(engine, mailbox_id, "Sent"))
                == (2, 2)
            ),
            SECONDS,
            "the follow-up synced what changed while the first sync ran",
        )
    watched_runs = [t for t in run_triggers(engine, mailbox_id) if t is SyncTrigger.WATCH]
    assert len(watched_runs) == 2, f"one sync and one follow-up expected, got {watched_runs}"
