"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter
from pydantic import BaseModel

from app.api.deps import EngineDep
from app.api.problems import ApiError

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


@router.get("/healthz", operation_id="healthz", summary="The process is alive")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    operation_id="readyz",
    summary="The database answers",
    responses={503: {"description": "A dependency is down"}},
)
def readyz(engine: EngineDep) -> Health:
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        raise ApiError(
            503, "database_unavailable", "The database is not available", str(exc.orig)[:200]
        ) from exc
    return Health(status="ready")
