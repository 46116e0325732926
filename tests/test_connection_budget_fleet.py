"""The budget holds across processes: three `imap-bridge worker`s and the API against one
Dovecot, which never sees more sessions than the budget; a SIGKILLed worker's slots return."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import col, select

from app.config import Settings
from app.connection_budget import Pool, connection_budget
from app.db import session_scope
from app.db.models import SyncRun, SyncRunStatus, utcnow
from app.main import create_app
from tests.support.dovecot import Dovecot, MailUser
from tests.support.dovecot_sessions import SessionLog
from tests.support.factories import MailboxFactory
from tests.support.live_api import create_api_key, serving
from tests.support.mailgen import make_message
from tests.support.snapshot import email_count
from tests.support.worker_process import WorkerProcess, enqueue, wait_until, worker_process

POSTGRESQL_ONLY = pytest.mark.parametrize("databases", ["postgresql"], indirect=True)

MAILBOXES = 12
BUDGET = 4
WORKERS = 3
MESSAGES = 40  # each, fetched 4 at a time: a first sync takes ten batches
# Renewed every third of it: long enough that a niced worker on a loaded machine is never
# starved past its slots' expiry, short enough to show a killed one's coming back.
SLOT_SECONDS = 10
RECENT = utcnow() - timedelta(days=30)


def fill(user: MailUser) -> None:
    with user.session() as client:
        for n in range(MESSAGES):
            client.append("INBOX", make_message(subject=f"m{n}"), msg_time=RECENT)


def synced(engine: Engine, mailbox_ids: list[int]) -> bool:
    """Say whether every mailbox has a succeeded run."""
    with session_scope(engine) as session:
        statement = select(SyncRun.mailbox_id).where(col(SyncRun.status) == SyncRunStatus.SUCCEEDED)
        done = set(session.exec(statement))
    return set(mailbox_ids) <= done


@contextmanager
def checking_connections(
    base_url: str, key: str, users: list[MailUser], dovecot: Dovecot
) -> Iterator[Counter[str]]:
    """Have the API check the users' connections over and over, in two threads, until the
    block ends; count its answers by status and problem code."""
    answers: Counter[str] = Counter()
    stop = threading.Event()

    def check_round_robin(start: int) -> None:
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
            n = start
            while not stop.is_set():
                user = users[n % len(users)]
                n += 2
                response = client.post(
                    "/v1/connection/check",
                    json={
                        "imap": {
                            "host": dovecot.host,
                            "port": dovecot.tls_port,
                            "security": "ssl",
                            "username": user.name,
                        },
                        "auth": {"type": "password", "password": user.password},
                    },
                )
                code = "ok" if response.is_success else response.json()["code"]
                answers[f"{response.status_code} {code}"] += 1
                stop.wait(0.05)

    threads = [threading.Thread(target=check_round_robin, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    try:
        yield answers
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def slot_holders(settings: Settings, host: str) -> set[int]:
    """Return the process ids holding the host's slots (`machine:pid`)."""
    usage = connection_budget(settings).usage(Pool.IMAP, host)
    return {int(holder.rpartition(":")[2]) for holder in usage.holders}


@POSTGRESQL_ONLY
def test_three_workers_and_the_api_never_open_more_sessions_than_the_budget(
    engine: Engine,
    settings: Settings,
    dovecot: Dovecot,
    add_mailbox: MailboxFactory,
    tmp_path: Path,
) -> None:
    users = [dovecot.add_user() for _ in range(MAILBOXES)]
    for user in users:
        fill(user)
    mailbox_ids = [add_mailbox(user) for user in users]
    budgeted = settings.model_copy(
        update={
            "imap_max_connections_per_host": BUDGET,
            "imap_slot_seconds": SLOT_SECONDS,
            "sync_batch_size": 4,
            "api_rate_limit_per_minute": 100_000,  # the checks run back to back
        }
    )
    environment = {
        "IMAP_MAX_CONNECTIONS_PER_HOST": str(BUDGET),
        "IMAP_SLOT_SECONDS": str(SLOT_SECONDS),
        "IMAP_SLOT_WAIT_SECONDS": "300",  # every sync gets its turn: none fails waiting
        "SYNC_LEASE_SECONDS": "6",  # a killed worker's job goes to another within 4 s
    }
    sessions = SessionLog(dovecot.config.log_file, {user.name for user in users})
    key = create_api_key(engine)

    with ExitStack() as stack:
        base_url = stack.enter_context(serving(create_app(budgeted)))
        workers: list[WorkerProcess] = []
        for n in range(WORKERS):
            workdir = tmp_path / f"worker{n}"
            workdir.mkdir()
            workers.append(
                stack.enter_context(worker_process(budgeted, workdir, environment=environment))
            )
        answers = stack.enter_context(checking_connections(base_url, key, users, dovecot))
        for mailbox_id in mailbox_ids:
            enqueue(budgeted, mailbox_id)

        worker_pids = {worker.process.pid: worker for worker in workers}
        holding: set[int] = set()

        def a_worker_holds_a_slot() -> bool:
            holding.update(slot_holders(budgeted, dovecot.host) & set(worker_pids))
            return bool(holding)

        wait_until(a_worker_holds_a_slot, 120, "a worker takes a connection slot")
        victim = min(holding)
        os.kill(victim, signal.SIGKILL)
        worker_pids[victim].process.wait()
        killed = time.monotonic()
        wait_until(
            lambda: victim not in slot_holders(budgeted, dovecot.host),
            30,
            "the killed worker's slots expire",
        )
        freed_after = time.monotonic() - killed

        wait_until(lambda: synced(engine, mailbox_ids), 300, "every mailbox is synced")
        stack.close()  # the API's checks end with it

    logs = "\n".join(worker.log for worker in workers)
    assert freed_after <= SLOT_SECONDS + 5, f"slots came back after {freed_after:.1f} s"
    assert all(email_count(engine, m) == MESSAGES for m in mailbox_ids), logs[-4000:]
    assert set(answers) <= {"200 ok", "503 waiting_for_connection_slot"}, answers
    assert answers["200 ok"] > 0, f"the API never got a session: {answers}"
    most = sessions.most_at_once()
    assert most <= BUDGET, (
        f"Dovecot saw {most} sessions at once, over the budget of {BUDGET}:\n"
        + "\n".join("\n  ".join(sessions.of_session(line)) for line in sessions.open_at_the_peak())
        + "\nslots that expired while held:"
        + "".join(line for line in logs.splitlines(True) if "slot_expired" in line)
    )
    assert most >= 2, f"the syncs never overlapped ({most} at most): the test proves nothing"
    assert sessions.logins() >= MAILBOXES, "every sync logged in"
