"""Routes of mailbox health: one mailbox's, and the fleet's. A status key opens them too.

The state and its sentence are derived in app.sync.health from what the service
records; the queue depth is read from Redis first, so no database turn waits on it.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from app.api.auth import require_status_key
from app.api.deps import DATABASE_ONLY, EngineDep, MailboxIdPath, SettingsDep
from app.api.mailbox_health.schemas import FleetHealthRead, MailboxHealthRead
from app.api.problems import STATUS_KEY_PROBLEMS, missing, not_found, problem_responses
from app.api.queue_connection import queue_depth
from app.db import session_scope
from app.db.models import utcnow
from app.sync import fleet_health, mailbox_health

router = APIRouter(
    prefix="/v1",
    tags=["health"],
    dependencies=[Depends(require_status_key), DATABASE_ONLY],
    responses=STATUS_KEY_PROBLEMS,
)


@router.get(
    "/mailboxes/{mailbox_id}/health",
    operation_id="get_mailbox_health",
    summary="Why a mailbox is (not) up to date: its state, one sentence, its blockers",
    responses=problem_responses(missing("mailbox")),
)
async def get_mailbox_health(
    request: Request, engine: EngineDep, settings: SettingsDep, mailbox_id: MailboxIdPath
) -> MailboxHealthRead:
    depth = await queue_depth(request)

    def read() -> MailboxHealthRead | None:
        with session_scope(engine) as session:
            health = mailbox_health(session, mailbox_id, settings, queue_depth=depth, now=utcnow())
        return None if health is None else MailboxHealthRead.of(health)

    found = await run_in_threadpool(read)
    if found is None:
        raise not_found("mailbox", mailbox_id)
    return found


@router.get(
    "/health/mailboxes",
    operation_id="get_fleet_health",
    summary="Every mailbox by state, the furthest behind, the newest failures, the queue depth",
)
async def get_fleet_health(
    request: Request, engine: EngineDep, settings: SettingsDep
) -> FleetHealthRead:
    depth = await queue_depth(request)

    def read() -> FleetHealthRead:
        with session_scope(engine) as session:
            fleet = fleet_health(session, settings, queue_depth=depth, now=utcnow())
        return FleetHealthRead.of(fleet)

    return await run_in_threadpool(read)
