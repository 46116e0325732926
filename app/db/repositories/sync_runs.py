"""Queries on `sync_run`: the runs the API queues, the history it lists, and its pruning."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from app.db.models import Mailbox, SyncRun, SyncRunStatus, SyncTrigger
from app.db.repositories.results import rows_changed


def get_sync_run(session: Session, run_id: int) -> SyncRun | None:
    return session.get(SyncRun, run_id)


def unfinished_sync_run(
    session: Session, mailbox_id: int, *, folders_only: bool, now: datetime
) -> SyncRun | None:
    """Return the mailbox's newest queued or running run of this kind, if any.

    A `running` run counts only while the mailbox's lease is live: a worker
    that died mid-run leaves its row `running` for ever, and that row must not
    stand in for a sync nobody is doing.
    """
    lease_live = col(Mailbox.lease_expires_at) > now
    statement = (
        select(SyncRun)
        .join(Mailbox, col(Mailbox.id) == SyncRun.mailbox_id)
        .where(
            SyncRun.mailbox_id == mailbox_id,
            SyncRun.folders_only == folders_only,
            sa.or_(
                col(SyncRun.status) == SyncRunStatus.QUEUED,
                sa.and_(col(SyncRun.status) == SyncRunStatus.RUNNING, lease_live),
            ),
        )
        .order_by(col(SyncRun.id).desc())
    )
    return session.exec(statement.limit(1)).first()


def add_queued_sync_run(
    session: Session, mailbox_id: int, *, folders_only: bool, trigger: SyncTrigger
) -> SyncRun:
    """Insert a `queued` run (its id is known after the flush) for a job to fill in."""
    run = SyncRun(mailbox_id=mailbox_id, folders_only=folders_only, trigger=trigger)
    session.add(run)
    session.flush()
    return run


def delete_queued_sync_run(session: Session, run_id: int) -> None:
    """Remove a run whose job was never queued; one a worker already started is left alone."""
    session.execute(
        sa.delete(SyncRun).where(
            col(SyncRun.id) == run_id, col(SyncRun.status) == SyncRunStatus.QUEUED
        )
    )


def fail_queued_sync_run(
    session: Session, run_id: int, *, error_code: str, error: str, now: datetime
) -> None:
    """Close a queued run that will never start (its job is gone), if it is still queued."""
    session.execute(
        sa.update(SyncRun)
        .where(col(SyncRun.id) == run_id, col(SyncRun.status) == SyncRunStatus.QUEUED)
        .values(status=SyncRunStatus.FAILED, finished_at=now, error_code=error_code, error=error)
    )


def mailbox_sync_runs(
    session: Session, mailbox_id: int, *, limit: int, before_id: int | None = None
) -> list[SyncRun]:
    """Return up to `limit` runs of the mailbox, newest first, older than `before_id`."""
    statement = select(SyncRun).where(SyncRun.mailbox_id == mailbox_id)
    if before_id is not None:
        statement = statement.where(col(SyncRun.id) < before_id)
    return list(session.exec(statement.order_by(col(SyncRun.id).desc()).limit(limit)))


def fail_interrupted_sync_runs(session: Session, mailbox_id: int, now: datetime) -> int:
    """Close runs left `running` by a worker that died: whoever takes the lease calls this."""
    result = session.execute(
        sa.update(SyncRun)
        .where(
            col(SyncRun.mailbox_id) == mailbox_id,
            col(SyncRun.status) == SyncRunStatus.RUNNING,
        )
        .values(
            status=SyncRunStatus.FAILED,
            finished_at=now,
            error_code="interrupted",
            error="the worker stopped before the run finished",
        )
    )
    return rows_changed(result)


def open_sync_runs(session: Session, mailbox_id: int, *, including: int | None) -> list[SyncRun]:
    """Return the mailbox's queued and running runs, and run `including` whatever its status.

    What a run that just took the lease settles, read in one query, oldest first: the
    runs a dead worker left `running`, a queued run it may adopt, the run it was asked
    to fill in.
    """
    wanted: sa.ColumnElement[bool] = col(SyncRun.status).in_(
        [SyncRunStatus.QUEUED, SyncRunStatus.RUNNING]
    )
    if including is not None:
        wanted = sa.or_(wanted, col(SyncRun.id) == including)
    statement = select(SyncRun).where(SyncRun.mailbox_id == mailbox_id, wanted)
    return list(session.exec(statement.order_by(col(SyncRun.id))))


def prune_sync_runs(session: Session, *, keep: int) -> int:
    """Delete the finished runs beyond each mailbox's newest `keep`; return how many.

    Each mailbox's newest succeeded run stays whatever its age (mailbox health reads
    it), and so does its newest run (`keep` >= 1), so the table holds at most
    `keep` + 1 finished runs a mailbox: it grows with the mailboxes, not with time.
    One statement, one pass over the table: slices of mailboxes would each visit
    most of its pages (a mailbox's runs are spread over all of them, one a cycle).
    The rows it deletes are finished and nobody else writes them, so on PostgreSQL
    it blocks no sync.
    """
    newest_first = sa.func.row_number().over(
        partition_by=col(SyncRun.mailbox_id), order_by=col(SyncRun.id).desc()
    )
    ranked = sa.select(
        col(SyncRun.id), col(SyncRun.finished_at), newest_first.label("newest_first")
    ).subquery()
    last_successes = (
        sa.select(sa.func.max(SyncRun.id))
        .where(col(SyncRun.status) == SyncRunStatus.SUCCEEDED)
        .group_by(col(SyncRun.mailbox_id))
    )
    doomed = sa.select(ranked.c.id).where(
        ranked.c.newest_first > keep,
        ranked.c.finished_at.is_not(None),
        ranked.c.id.not_in(last_successes),
    )
    result = session.execute(sa.delete(SyncRun).where(col(SyncRun.id).in_(doomed)))
    return int(result.rowcount)  # type: ignore[attr-defined]
