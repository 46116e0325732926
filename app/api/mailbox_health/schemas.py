"""Health shapes of the API (DESIGN "Shapes": MailboxHealth), and the fleet's."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field

from app.sync import (
    FleetHealth,
    HealthState,
    MailboxHealth,
    WatchState,
)


class BlockerRead(BaseModel):
    """One thing that stands between the mailbox and an up-to-date copy."""

    code: str = Field(
        description=(
            "`auth_failed`, `tls_error`, `unreachable`, `waiting_for_connection_slot`,"
            " `lease_held_elsewhere`, `queue_backlog`, `not_picked_up`, `backoff`, or another"
            " failure's error code (`blocked_host`, `folder_diverged`...)."
        )
    )
    detail: str = Field(description="What it is, for people.")
    since: datetime | None = Field(description="Since when, where the records tell.")


class FolderBackfillRead(BaseModel):
    folder_id: int
    full_name: str
    complete: bool = Field(description="Nothing older within the window is left to fetch.")
    stored: int = Field(description="Messages of the folder stored so far.")
    estimated_total: int | None = Field(
        description="Messages of the window, estimated; null until the first batch is stored."
    )


class BackfillRead(BaseModel):
    """The first sync's progress: newest first, back to the window's first day."""

    complete: bool
    oldest_date_reached: date | None = Field(description="The oldest message stored so far.")
    window_start: date | None = Field(description="The first day the first sync reaches back to.")
    folders: list[FolderBackfillRead] = Field(description="The folders that are synced.")


class WatchRead(BaseModel):
    state: WatchState = Field(
        description=(
            "`watching`: a watcher holds it (new mail in seconds); `polling`: no watcher does,"
            " the schedule keeps it current; `reconnecting`: its watcher stopped, another takes"
            " it over; `off`: not watched."
        )
    )
    since: datetime | None


class MailboxHealthRead(BaseModel):
    """Why a mailbox is (not) up to date: a state, one sentence, and what stands in the way."""

    mailbox_id: int
    state: HealthState
    summary: str = Field(description="One plain sentence a support person can read out.")
    since: datetime | None = Field(description="Since when the state holds, where known.")
    next_attempt_at: datetime | None = Field(description="When the next sync is due.")
    last_success_at: datetime | None = Field(description="The end of the last successful sync.")
    lag_seconds: int = Field(
        description="Seconds since a sync last saw the server (since registration, if never)."
    )
    blockers: list[BlockerRead]
    backfill: BackfillRead
    watch: WatchRead

    @classmethod
    def of(cls, health: MailboxHealth) -> MailboxHealthRead:
        """Read every field, nested ones too, from the attribute of the same name."""
        return cls.model_validate(health, from_attributes=True)


class LaggingMailboxRead(BaseModel):
    mailbox_id: int
    email_address: str
    state: HealthState
    lag_seconds: int
    last_success_at: datetime | None


class RecentFailureRead(BaseModel):
    run_id: int
    mailbox_id: int
    email_address: str
    error_code: str | None
    error: str | None
    finished_at: datetime | None


class FleetHealthRead(BaseModel):
    """Every mailbox by state, the furthest behind, the newest failures and the queue."""

    counts: dict[HealthState, int] = Field(description="Mailboxes per state (every state).")
    worst_lags: list[LaggingMailboxRead] = Field(
        description="The mailboxes furthest behind (disabled ones aside), worst first."
    )
    recent_failures: list[RecentFailureRead] = Field(description="The newest failed runs.")
    queue_depth: int | None = Field(
        description="Jobs waiting in the queue; null when Redis does not answer."
    )

    @classmethod
    def of(cls, fleet: FleetHealth) -> FleetHealthRead:
        """Read every field, nested ones too, from the attribute of the same name."""
        return cls.model_validate(fleet, from_attributes=True)
