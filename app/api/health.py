"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from app.api.deps import EngineDep
from app.api.problems import ApiError, ProblemDoc, problem_responses
from app.api.queue import check_queue

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
    responses=problem_responses(
        ProblemDoc(
            503,
            "A dependency is down: `database_unavailable` or `queue_unavailable`",
            retry_after=True,
        )
    ),
)
async def readyz(request: Request, engine: EngineDep) -> Health:
    await run_in_threadpool(_check_database, engine)
    await check_queue(request)
    return Health(status="ready")


def _check_database(engine: Engine) -> None:
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        raise ApiError(
            503, "database_unavailable", "The database is not available", str(exc.orig)[:200]
        ) from exc
