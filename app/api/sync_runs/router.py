"""Queue a sync on arq and read the run history.

`POST .../sync` answers 202 with the run `app.sync.queue_sync_run` returns (the
queued one, or the one of that kind already queued or running), 503
`queue_unavailable` with Retry-After while Redis does not answer.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Body

from app.api.auth import full_key_router
from app.api.deps import DATABASE_ONLY, EngineDep, MailboxIdDep, SessionDep, SyncRunIdPath
from app.api.limits import RATE_LIMIT
from app.api.pagination import (
    CursorQuery,
    LimitQuery,
    Page,
    decode_id_cursor,
    id_page,
)
from app.api.problems import (
    DATABASE_UNAVAILABLE,
    RATE_LIMITED,
    ProblemDoc,
    missing,
    not_found,
    problem_responses,
)
from app.api.queue_connection import QueueDep
from app.api.sync_runs.schemas import SyncRequest, SyncRunRead
from app.db.repositories.sync_runs import get_sync_run, mailbox_sync_runs
from app.sync import queue_sync_run

router = full_key_router("/v1", "sync")

_NO_SUCH_MAILBOX = missing("mailbox")
# The body may be left out. A default object, not `None`: a nullable optional body makes
# generated clients (openapi-python-client) send a placeholder instead of no body.
_FULL_SYNC = SyncRequest()


@router.post(
    "/mailboxes/{mailbox_id}/sync",
    operation_id="queue_sync",
    dependencies=[RATE_LIMIT],
    summary="Queue a sync of the mailbox now",
    description=(
        "Answers 202 with a `queued` run that an arq worker then starts. While a run of the"
        " same kind is queued or running, answers 202 with that run instead of a second one."
    ),
    status_code=202,
    response_model=SyncRunRead,
    responses=problem_responses(
        _NO_SUCH_MAILBOX,
        ProblemDoc(409, "A scheduled sync is queued and not yet started"),
        RATE_LIMITED,
        ProblemDoc(
            503, "`queue_unavailable`: Redis, which holds the jobs, is down", retry_after=True
        ),
        DATABASE_UNAVAILABLE,
    ),
)
async def queue_sync(
    mailbox_id: MailboxIdDep,
    engine: EngineDep,
    queue: QueueDep,
    body: Annotated[SyncRequest, Body()] = _FULL_SYNC,
) -> SyncRunRead:
    run = await queue_sync_run(engine, queue, mailbox_id, folders_only=body.folders_only)
    return SyncRunRead.of(run)


@router.get(
    "/mailboxes/{mailbox_id}/sync-runs",
    operation_id="list_sync_runs",
    summary="The mailbox's sync runs, newest first",
    response_model=Page[SyncRunRead],
    responses=problem_responses(_NO_SUCH_MAILBOX),
    dependencies=[DATABASE_ONLY],
)
def list_sync_runs(
    session: SessionDep,
    mailbox_id: MailboxIdDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[SyncRunRead]:
    before_id = decode_id_cursor(cursor)
    runs = mailbox_sync_runs(session, mailbox_id, limit=limit + 1, before_id=before_id)
    return id_page(runs, limit, SyncRunRead.of)


@router.get(
    "/sync-runs/{run_id}",
    operation_id="get_sync_run",
    summary="One sync run: outcome, counts, bytes, duration, error",
    response_model=SyncRunRead,
    responses=problem_responses(missing("sync run")),
    dependencies=[DATABASE_ONLY],
)
def read_sync_run(session: SessionDep, run_id: SyncRunIdPath) -> SyncRunRead:
    run = get_sync_run(session, run_id)
    if run is None:
        raise not_found("sync run", run_id)
    return SyncRunRead.of(run)
