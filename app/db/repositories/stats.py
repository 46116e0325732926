"""Aggregates for the metrics endpoint, read at scrape time from the shared database."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from app.db.models import Mailbox, SyncRun


def sync_runs_by_status(session: Session) -> dict[str, int]:
    statement = select(SyncRun.status, func.count()).group_by(col(SyncRun.status))
    return {str(status): int(count) for status, count in session.exec(statement)}


def messages_synced(session: Session) -> int:
    return int(session.exec(select(sa.func.coalesce(func.sum(SyncRun.new), 0))).one())


def mailboxes_by_status(session: Session) -> dict[str, int]:
    statement = select(Mailbox.status, func.count()).group_by(col(Mailbox.status))
    return {str(status): int(count) for status, count in session.exec(statement)}
