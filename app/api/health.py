"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from app.api.deps import EngineDep
from app.api.problems import (
    DATABASE_RETRY_AFTER_SECONDS,
    QUEUE_RETRY_AFTER_SECONDS,
    ApiError,
    ProblemDoc,
    problem_responses,
)
from app.api.queue_connection import queue_answers
from app.db.engine import ping_database

log = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


@router.get("/healthz", operation_id="healthz", summary="The process is alive")
async def healthz() -> Health:
    """Answer on the event loop itself: a liveness probe must not queue behind database work."""
    return Health(status="ok")


@router.get(
    "/readyz",
    operation_id="readyz",
    summary="The database and the job queue's Redis answer",
    description=(
        "503 names each dependency that is down (`database`, `redis`) in `detail`, and"
        " never the database's own error text, which holds host and user names."
    ),
    responses=problem_responses(
        ProblemDoc(
            503,
            "A dependency is down: `database_unavailable` (the database, and maybe Redis)"
            " or `queue_unavailable` (Redis only)",
            retry_after=True,
        )
    ),
)
async def readyz(request: Request, engine: EngineDep) -> Health:
    down = []
    if not await run_in_threadpool(_database_answers, engine):
        down.append("database")
    if not await queue_answers(request):
        down.append("redis")
    if down:
        raise _not_ready(down)
    return Health(status="ready")


def _database_answers(engine: Engine) -> bool:
    """SELECT 1; a failure is logged (the log may name the server), never answered."""
    try:
        ping_database(engine)
    except (sa.exc.DBAPIError, sa.exc.TimeoutError) as exc:  # down, or no pooled connection
        log.warning("api.readyz_database_down", extra={"error": type(exc).__name__})
        return False
    return True


def _not_ready(down: list[str]) -> ApiError:
    if "database" in down:
        code, title = "database_unavailable", "The database is not available"
        retry_after = DATABASE_RETRY_AFTER_SECONDS
    else:
        code, title = "queue_unavailable", "The job queue is not available"
        retry_after = QUEUE_RETRY_AFTER_SECONDS
    return ApiError(
        503,
        code,
        title,
        f"not ready: {' and '.join(down)} {'is' if len(down) == 1 else 'are'} down",
        headers={"Retry-After": str(retry_after)},
    )
