"""A run's first and last transactions: take the lease and start its record; give it back.

take the lease (one transaction) ---- held by another live worker ---> None
  |  free, expired, or its holder crashed on this machine (app.sync.holder)
  |  runs a dead worker left `running` ........... failed `interrupted`
  |  the run asked for, else a queued one of its kind, else a new one: `running`
  |  read what the run compares with the server: the folders, and the orphans
  |    a complete run deletes (only if the mailbox is marked `orphans_possible`)
... the run (app.sync.service) ...
give the lease back: done by the transaction that records the outcome, else on
  the way out, waiting DATABASE_WAIT_SECONDS for a database that does not answer
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.db import session_scope
from app.db.models import Folder, Mailbox, SyncRun, SyncRunStatus, SyncTrigger, utcnow
from app.db.repositories.emails import orphan_email_ids
from app.db.repositories.folders import mailbox_folders
from app.db.repositories.mailboxes import get_mailbox, lease_holder, lease_mailbox, release_lease
from app.db.repositories.sync_runs import fail_interrupted_sync_runs, open_sync_runs
from app.sync.errors import DatabaseUnavailableError, MailboxNotFoundError, database_outages
from app.sync.holder import holder_is_gone
from app.sync.lease import Lease

log = logging.getLogger(__name__)

# How long a run whose database stopped answering waits for it, to record why it
# failed and to release the lease; shorter than the default lease.
DATABASE_WAIT_SECONDS = 15.0
_DATABASE_POLL_SECONDS = 1.0

_Written = TypeVar("_Written")


@dataclass(slots=True)
class RunClaim:
    """What the transaction that takes the lease hands the run, read before it logs in."""

    lease: Lease
    mailbox: Mailbox
    run: SyncRun
    folders: list[Folder]  # every folder of the mailbox
    # emails no folder held (mail runs of a mailbox marked `orphans_possible` only)
    orphans: set[int]
    released: bool = False  # the run's last transaction gave the lease back


@contextmanager
def claimed(
    engine: Engine, lease: Lease, run_id: int | None, folders_only: bool, trigger: SyncTrigger
) -> Iterator[RunClaim | None]:
    """Take the lease and start the run in one transaction; give the lease back at the end.

    A no-change sync is mostly database round trips: the first transaction also reads
    what the run compares with the server (the folders, and the orphans a complete run
    deletes if the mailbox is marked as possibly holding any), and the last one records
    the outcome and releases the lease together. A run whose server changed nothing
    writes nothing in between.
    """
    with session_scope(engine) as session:
        mailbox = _take_lease(session, lease)
        if mailbox is None:
            if get_mailbox(session, lease.mailbox_id) is None:
                raise MailboxNotFoundError(f"mailbox {lease.mailbox_id} does not exist")
            claim = None
        else:
            claim = RunClaim(
                lease,
                mailbox,
                _start_run(session, lease.mailbox_id, run_id, folders_only, trigger),
                mailbox_folders(session, lease.mailbox_id),
                orphan_email_ids(session, lease.mailbox_id)
                if mailbox.orphans_possible and not folders_only
                else set(),
            )
    try:
        yield claim
    finally:
        if claim is not None and not claim.released:
            when_database_answers(lambda: _give_back(engine, lease))


def _take_lease(session: Session, lease: Lease) -> Mailbox | None:
    """Take the mailbox if it is free, its lease expired, or its holder is gone (crashed here)."""
    now = utcnow()
    mailbox = lease_mailbox(session, lease.mailbox_id, lease.owner, now, lease.duration)
    if mailbox is not None:
        return mailbox
    holder = lease_holder(session, lease.mailbox_id)
    if holder is None or not holder_is_gone(holder):
        return None
    mailbox = lease_mailbox(
        session, lease.mailbox_id, lease.owner, now, lease.duration, dead_holder=holder
    )
    if mailbox is not None:
        log.info(
            "sync.lease_taken_over", extra={"mailbox_id": lease.mailbox_id, "dead_holder": holder}
        )
    return mailbox


def _give_back(engine: Engine, lease: Lease) -> None:
    with session_scope(engine) as session:
        release_lease(session, lease.mailbox_id, lease.owner)


def when_database_answers(write: Callable[[], _Written]) -> _Written:
    """Run `write`, again while the database does not answer, for DATABASE_WAIT_SECONDS at most."""
    deadline = time.monotonic() + DATABASE_WAIT_SECONDS
    while True:
        try:
            with database_outages():
                return write()
        except DatabaseUnavailableError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(_DATABASE_POLL_SECONDS)


def _start_run(
    session: Session,
    mailbox_id: int,
    run_id: int | None,
    folders_only: bool,
    trigger: SyncTrigger,
) -> SyncRun:
    runs = open_sync_runs(session, mailbox_id, including=run_id)
    if any(run.status == SyncRunStatus.RUNNING for run in runs):  # left by a worker that died
        fail_interrupted_sync_runs(session, mailbox_id, utcnow())
    if run_id is not None:
        run = next((run for run in runs if run.id == run_id), None)
    else:  # a scheduled job: it fills in a run the API queued meanwhile, if any
        queued = (
            run
            for run in runs
            if run.status == SyncRunStatus.QUEUED and run.folders_only == folders_only
        )
        run = next(queued, None)
    if run is None:
        run = SyncRun(mailbox_id=mailbox_id, folders_only=folders_only, trigger=trigger)
        session.add(run)
    run.status = SyncRunStatus.RUNNING
    run.started_at = utcnow()
    session.flush()
    return run
