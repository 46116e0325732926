"""The mailbox lease: one worker syncs a mailbox at a time, on SQLite and PostgreSQL.

Races are real: threads released by one barrier, processes set off by one go-ahead
(`tests.support.sync_driver`), workers looping over the same mailboxes. Overlap is judged
from the `sync_run` rows and from the IMAP sessions in the test Dovecot's log.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import col, func, select

from app.config import Settings
from app.db import session_scope
from app.db.models import Event, Folder, Mailbox, SyncRun, SyncRunStatus, utcnow
from app.db.repositories.mailboxes import acquire_lease, release_lease
from app.sync.folder_sync import SyncProgress
from app.sync.service import SyncResult, sync_mailbox
from tests.support.crash_checks import expire_lease
from tests.support.dovecot import Dovecot, MailUser
from tests.support.factories import MailboxFactory, create_mailbox, id_of
from tests.support.mailgen import append_many
from tests.support.snapshot import email_count, server_uids, stored_uids
from tests.support.sync_driver import Drivers, reports

LEASE = timedelta(minutes=10)
RACERS = 12  # below SQLAlchemy's default pool limit (5 + 10 overflow): all really run at once
RACES = 5
MAILBOXES, MESSAGES_EACH, ROUNDS = 4, 40, 2  # two workers, each syncing every mailbox in turn
_LOGIN = re.compile(
    r"imap-login: Info: Login: user=<(?P<user>[^>]+)>.*session=<(?P<session>[^>]+)>"
)
_LOGOUT = re.compile(r"imap\((?P<user>[^)]+)\)<\d+><(?P<session>[^>]+)>: Info: Disconnected")


def new_mailbox(engine: Engine) -> int:
    with session_scope(engine) as session:
        return id_of(create_mailbox(session))


def take(engine: Engine, mailbox_id: int, owner: str, now: datetime) -> bool:
    with session_scope(engine) as session:
        return acquire_lease(session, mailbox_id, owner, now, LEASE)


def give_back(engine: Engine, mailbox_id: int, owner: str) -> None:
    with session_scope(engine) as session:
        release_lease(session, mailbox_id, owner)


def mailbox_row(engine: Engine, mailbox_id: int) -> dict[str, Any]:
    with session_scope(engine) as session:
        mailbox = session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        return mailbox.model_dump()


def lease_of(engine: Engine, mailbox_id: int) -> tuple[str | None, datetime | None]:
    row = mailbox_row(engine, mailbox_id)
    return row["lease_owner"], row["lease_expires_at"]


def rows_of(engine: Engine, mailbox_id: int) -> dict[str, int]:
    """Count what a sync writes for the mailbox, table by table."""
    tables: dict[str, Any] = {"sync_run": SyncRun, "folder": Folder, "event": Event}
    with session_scope(engine) as session:
        return {
            name: session.exec(
                select(func.count()).select_from(table).where(table.mailbox_id == mailbox_id)
            ).one()
            for name, table in tables.items()
        }


def runs_of(engine: Engine, mailbox_ids: Iterable[int]) -> list[SyncRun]:
    with session_scope(engine) as session:
        statement = select(SyncRun).where(col(SyncRun.mailbox_id).in_(list(mailbox_ids)))
        return list(session.exec(statement.order_by(col(SyncRun.started_at))))


@dataclass
class ImapSessions:
    """The IMAP sessions of some users, as the Dovecot log tells them in order."""

    opened: Counter[str]
    most_at_once: Counter[str]
    still_open: int


def imap_sessions(log: str, users: set[str]) -> ImapSessions:
    open_sessions: dict[str, set[str]] = {user: set() for user in users}
    opened: Counter[str] = Counter()
    most_at_once: Counter[str] = Counter()
    for line in log.splitlines():
        if (login := _LOGIN.search(line)) and login["user"] in users:
            open_sessions[login["user"]].add(login["session"])
            opened[login["user"]] += 1
            most_at_once[login["user"]] = max(
                most_at_once[login["user"]], len(open_sessions[login["user"]])
            )
        elif (logout := _LOGOUT.search(line)) and logout["user"] in users:
            open_sessions[logout["user"]].discard(logout["session"])
    return ImapSessions(opened, most_at_once, sum(map(len, open_sessions.values())))


def sessions_since(dovecot: Dovecot, offset: int, users: set[str]) -> ImapSessions:
    """Read the log written after `offset` once Dovecot has logged every session's end."""
    deadline = time.monotonic() + 10
    while (sessions := imap_sessions(dovecot.read_log()[offset:], users)).still_open:
        assert time.monotonic() < deadline, "Dovecot never logged the end of a session"
        time.sleep(0.05)
    return sessions


def test_one_of_many_threads_racing_for_a_free_lease_wins(engine: Engine) -> None:
    mailbox_id = new_mailbox(engine)
    owners = [f"worker-{n}" for n in range(RACERS)]
    for _ in range(RACES):
        start = threading.Barrier(RACERS)

        def race(owner: str, start: threading.Barrier = start) -> bool:
            start.wait()
            return take(engine, mailbox_id, owner, utcnow())

        with ThreadPoolExecutor(RACERS) as pool:
            won = dict(zip(owners, pool.map(race, owners), strict=True))
        [winner] = [owner for owner, granted in won.items() if granted]
        assert lease_of(engine, mailbox_id)[0] == winner
        give_back(engine, mailbox_id, winner)


def test_one_of_two_processes_racing_for_free_leases_wins_each(
    engine: Engine, settings: Settings
) -> None:
    mailbox_ids = [new_mailbox(engine) for _ in range(RACES * 4)]
    racer = ["--lease-only", *map(str, mailbox_ids)]  # both ask for them in the same order
    with Drivers(settings, [racer, racer]) as racers:
        racers.go()
        outputs = racers.outputs(timeout=30)

    winners: dict[int, list[int]] = {mailbox_id: [] for mailbox_id in mailbox_ids}
    for process, out in zip(racers.processes, outputs, strict=True):
        for report in reports(out):
            if report["won"]:
                winners[report["mailbox_id"]].append(process.pid)
    for mailbox_id, pids in winners.items():
        [pid] = pids
        owner, _ = lease_of(engine, mailbox_id)
        assert owner is not None
        assert owner.split(":")[1] == str(pid)  # worker_identity() is host:pid:suffix


def test_an_expired_lease_is_taken_over_and_a_live_one_is_not(engine: Engine) -> None:
    mailbox_id = new_mailbox(engine)
    start = utcnow()
    assert take(engine, mailbox_id, "crashed", start)

    assert not take(engine, mailbox_id, "next", start + LEASE - timedelta(seconds=1))
    assert take(engine, mailbox_id, "next", start + LEASE + timedelta(seconds=1))

    assert lease_of(engine, mailbox_id) == ("next", start + 2 * LEASE + timedelta(seconds=1))
    assert not take(engine, mailbox_id, "crashed", start + LEASE + timedelta(seconds=2))


def test_only_the_holder_can_give_a_lease_back(engine: Engine) -> None:
    mailbox_id = new_mailbox(engine)
    start = utcnow()
    assert take(engine, mailbox_id, "holder", start)

    give_back(engine, mailbox_id, "someone-else")
    assert lease_of(engine, mailbox_id) == ("holder", start + LEASE)
    assert not take(engine, mailbox_id, "someone-else", start)

    give_back(engine, mailbox_id, "holder")
    assert lease_of(engine, mailbox_id) == (None, None)
    assert take(engine, mailbox_id, "someone-else", start)


def test_a_leased_mailbox_is_left_alone(
    engine: Engine,
    settings: Settings,
    dovecot: Dovecot,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    append_many(mail_user, "INBOX", "in", 3)
    mailbox_id = add_mailbox(mail_user)
    assert take(engine, mailbox_id, "other-worker", utcnow())
    before = mailbox_row(engine, mailbox_id)
    log_offset = len(dovecot.read_log())

    assert sync_mailbox(engine, mailbox_id, settings) is None

    assert mailbox_row(engine, mailbox_id) == before
    assert rows_of(engine, mailbox_id) == {"sync_run": 0, "folder": 0, "event": 0}
    give_back(engine, mailbox_id, "other-worker")
    result = sync_mailbox(engine, mailbox_id, settings)
    assert result is not None
    assert result.status is SyncRunStatus.SUCCEEDED
    # One session in the log, the second attempt's: the first never logged in.
    assert sessions_since(dovecot, log_offset, {mail_user.name}).opened == {mail_user.name: 1}


def test_two_workers_never_sync_one_mailbox_at_once(
    engine: Engine, settings: Settings, dovecot: Dovecot, add_mailbox: MailboxFactory
) -> None:
    users = [dovecot.add_user() for _ in range(MAILBOXES)]
    mailbox_ids = {add_mailbox(user): user for user in users}
    settings = settings.model_copy(update={"sync_batch_size": 20})
    worker = ["--rounds", str(ROUNDS), *map(str, mailbox_ids)]

    with Drivers(settings, [worker, worker]) as workers:
        for user in users:  # while the workers start up
            append_many(user, "INBOX", user.name, MESSAGES_EACH)
        log_offset = len(dovecot.read_log())
        workers.go()
        outputs = workers.outputs(timeout=60)

    attempts = [report for out in outputs for report in reports(out)]
    assert len(attempts) == 2 * ROUNDS * len(mailbox_ids)
    assert any(attempt["run_id"] is None for attempt in attempts), "the workers never collided"
    runs = runs_of(engine, mailbox_ids)
    assert sorted(run.id for run in runs if run.id is not None) == sorted(
        attempt["run_id"] for attempt in attempts if attempt["run_id"] is not None
    )
    assert {run.status for run in runs} == {SyncRunStatus.SUCCEEDED}
    for mailbox_id in mailbox_ids:
        mine = [run for run in runs if run.mailbox_id == mailbox_id]
        for earlier, later in itertools.pairwise(mine):
            assert earlier.finished_at is not None
            assert later.started_at is not None
            assert earlier.finished_at <= later.started_at, f"runs {earlier.id} and {later.id}"
    sessions = sessions_since(dovecot, log_offset, {user.name for user in users})
    assert sessions.opened == Counter(
        {
            user.name: sum(run.mailbox_id == mailbox_id for run in runs)
            for mailbox_id, user in mailbox_ids.items()
        }
    )
    assert max(sessions.most_at_once.values()) == 1
    for mailbox_id, user in mailbox_ids.items():
        assert stored_uids(engine, mailbox_id) == server_uids(user, ["INBOX"])
        assert email_count(engine, mailbox_id) == MESSAGES_EACH


def test_a_worker_whose_lease_ran_out_writes_nothing_more(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    """A worker stalled past its lease (a huge FETCH, a paused VM) has lost the mailbox to
    the next worker; when it wakes up it must stop without writing, not sync alongside."""
    append_many(mail_user, "INBOX", "in", 100)
    mailbox_id = add_mailbox(mail_user)
    settings = settings.model_copy(update={"sync_batch_size": 20})
    stalled, wake_up = threading.Event(), threading.Event()
    outcome: list[SyncResult | Exception | None] = []

    def stall_after_first_batch(_: SyncProgress) -> None:
        if not stalled.is_set():
            stalled.set()
            wake_up.wait(timeout=30)

    def stalling_worker() -> None:
        try:
            outcome.append(
                sync_mailbox(engine, mailbox_id, settings, progress=stall_after_first_batch)
            )
        except Exception as exc:  # how the worker ends is the verdict
            outcome.append(exc)

    thread = threading.Thread(target=stalling_worker)
    thread.start()
    try:
        assert stalled.wait(timeout=30)
        expire_lease(engine, mailbox_id)
        assert take(engine, mailbox_id, "next-worker", utcnow())
        taken_over = (stored_uids(engine, mailbox_id), rows_of(engine, mailbox_id))
        mailbox_taken_over = mailbox_row(engine, mailbox_id)
    finally:
        wake_up.set()
        thread.join(timeout=30)

    [stalled_result] = outcome
    assert not isinstance(stalled_result, Exception), f"it crashed: {stalled_result!r}"
    wrote = "the worker went on writing after it lost the lease"
    assert (stored_uids(engine, mailbox_id), rows_of(engine, mailbox_id)) == taken_over, wrote
    assert mailbox_row(engine, mailbox_id) == mailbox_taken_over, wrote
    assert SyncRunStatus.RUNNING not in {run.status for run in runs_of(engine, [mailbox_id])}
