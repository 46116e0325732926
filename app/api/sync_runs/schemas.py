"""Sync run shapes of the API (SyncRunRead), as openapi/openapi.json publishes them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.api.request_models import RequestModel
from app.db.models import SyncRun, SyncRunStatus, SyncTrigger, column_values


class SyncRequest(RequestModel):
    """Body of `POST /v1/mailboxes/{id}/sync`; it may be left out."""

    folders_only: bool = Field(
        default=False, description="Refresh the folder list only, without fetching mail."
    )


class SyncRunCounts(BaseModel):
    """What a run changed in the local copy."""

    new: int = Field(description="Emails stored for the first time.")
    flags_changed: int = Field(description="Emails whose seen, flagged... flags changed.")
    expunged: int = Field(description="Messages removed from a folder on the server.")
    folders_added: int
    folders_removed: int


class SyncRunRead(BaseModel):
    """One synchronization of a mailbox: queued, running, or its outcome."""

    id: int
    mailbox_id: int
    folders_only: bool
    trigger: SyncTrigger = Field(description="Who asked: the scheduler, the API or the CLI.")
    status: SyncRunStatus
    created_at: datetime = Field(description="When the run was queued.")
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None = Field(description="From start to finish; null until done.")
    counts: SyncRunCounts
    bytes: int = Field(description="Message bytes downloaded from the server.")
    error_code: str | None = Field(
        description="Stable code of the failure (`auth_failed`, `unreachable`...)."
    )
    error: str | None = Field(description="What went wrong, for people.")

    @classmethod
    def of(cls, run: SyncRun) -> SyncRunRead:
        duration = (
            (run.finished_at - run.started_at).total_seconds()
            if run.started_at is not None and run.finished_at is not None
            else None
        )
        computed = {
            "duration_seconds": duration,
            "counts": SyncRunCounts.model_validate(run, from_attributes=True),
            "bytes": run.bytes_fetched,
        }
        return cls.model_validate({**column_values(run, cls), **computed})
