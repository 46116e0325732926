"""One synchronization of a mailbox, from queued to its outcome and counts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field

from app.correlation import MAX_LENGTH, current_correlation_id
from app.db.models.base import Model, enum_type, utcnow


class SyncRunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class SyncTrigger(StrEnum):
    """Who asked for the run: the scheduler, an API call, the command line or the watcher."""

    CRON = "cron"
    API = "api"
    CLI = "cli"
    WATCH = "watch"


class SyncRunBase(Model):
    folders_only: bool = False
    trigger: SyncTrigger = Field(default=SyncTrigger.CRON, sa_type=enum_type(SyncTrigger))


class SyncRun(SyncRunBase, table=True):
    __tablename__ = "sync_run"
    __table_args__ = (
        sa.Index("ix_sync_run_mailbox_id_id", "mailbox_id", "id"),
        # The few queued and running runs, which health reads for every mailbox at once.
        sa.Index(
            "ix_sync_run_open",
            "mailbox_id",
            sqlite_where=sa.text("status IN ('queued', 'running')"),
            postgresql_where=sa.text("status IN ('queued', 'running')"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    mailbox_id: int = Field(foreign_key="mailbox.id", ondelete="CASCADE")
    status: SyncRunStatus = Field(default=SyncRunStatus.QUEUED, sa_type=enum_type(SyncRunStatus))
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    new: int = 0
    flags_changed: int = 0
    expunged: int = 0
    folders_added: int = 0
    folders_removed: int = 0
    bytes_fetched: int = Field(default=0, sa_type=sa.BigInteger)
    error_code: str | None = Field(default=None, max_length=64)
    error: str | None = Field(default=None, sa_type=sa.Text)
    # What caused the run (an API request, a job): the id its log lines carry (app.correlation).
    correlation_id: str | None = Field(
        default_factory=current_correlation_id, max_length=MAX_LENGTH
    )
