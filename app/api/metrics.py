"""Prometheus metrics at `GET /metrics`.

Request latency is measured in this process. Sync figures (runs by outcome,
messages synced, mailboxes by status) are read from the database at scrape
time, so every API process reports the same totals whichever worker did the
work, and queue depth is read from Redis.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from redis.exceptions import RedisError
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from app.api.deps import EngineDep
from app.api.problems import DATABASE_UNAVAILABLE, problem_responses
from app.db import session_scope
from app.db.repositories.stats import mailboxes_by_status, messages_synced, sync_runs_by_status

router = APIRouter(tags=["operations"])


class ServiceMetrics:
    """The metric families of one application instance (its own registry)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "imap_bridge_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.sync_runs = Gauge(
            "imap_bridge_sync_runs",
            "Sync runs recorded, by outcome.",
            ["status"],
            registry=self.registry,
        )
        self.messages = Gauge(
            "imap_bridge_messages_synced",
            "Messages stored by all sync runs.",
            registry=self.registry,
        )
        self.mailboxes = Gauge(
            "imap_bridge_mailboxes", "Mailboxes, by status.", ["status"], registry=self.registry
        )
        self.queue_depth = Gauge(
            "imap_bridge_queue_depth",
            "Jobs waiting in the arq queue (-1: Redis unavailable).",
            registry=self.registry,
        )


def install_metrics(app: FastAPI) -> None:
    """Time every request under its route template (not its raw path: bounded labels)."""
    metrics = ServiceMetrics()
    app.state.metrics = metrics

    @app.middleware("http")
    async def _timed(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        metrics.latency.labels(
            request.method, _route_template(request), response.status_code
        ).observe(time.perf_counter() - started)
        return response


def _route_template(request: Request) -> str:
    """The matched route's path template; the router records it in the scope."""
    route = request.scope.get("route")
    return str(getattr(route, "path", "unmatched"))


@router.get(
    "/metrics",
    operation_id="metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"},
        **problem_responses(DATABASE_UNAVAILABLE),
    },
)
async def metrics(request: Request, engine: EngineDep) -> Response:
    service: ServiceMetrics = request.app.state.metrics
    await run_in_threadpool(_read_database, engine, service)
    service.queue_depth.set(await _queue_depth(request))
    return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)


def _read_database(engine: Engine, service: ServiceMetrics) -> None:
    with session_scope(engine) as session:
        for status, count in sync_runs_by_status(session).items():
            service.sync_runs.labels(status).set(count)
        service.messages.set(messages_synced(session))
        for status, count in mailboxes_by_status(session).items():
            service.mailboxes.labels(status).set(count)


async def _queue_depth(request: Request) -> int:
    """Jobs waiting in arq's queue (a sorted set named after the queue), -1 when unknown."""
    queue = getattr(request.app.state, "queue", None)
    if queue is None:
        return -1
    try:
        return int(await queue.zcard(queue.default_queue_name))
    except (RedisError, OSError):
        return -1
