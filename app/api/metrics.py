"""Prometheus metrics at `GET /metrics`.

Request latency is measured in this process. Sync figures (runs by outcome,
messages synced, mailboxes by status and by health state, the worst lag) are
read from the database at scrape
time, so every API process reports the same totals whichever worker did the
work, and queue depth is read from Redis. Those reads are reused for
METRICS_CACHE_SECONDS: scrapers (several Prometheus replicas, a dashboard
refreshing) cost the database one read per period, however often they come.
With METRICS_TOKEN set, a scrape must bring it as a bearer token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.deps import EngineDep, SettingsDep
from app.api.problems import DATABASE_UNAVAILABLE, ApiError, ProblemDoc, problem_responses
from app.api.queue_connection import queue_depth
from app.config import Settings
from app.db import session_scope
from app.db.models import utcnow
from app.db.repositories.stats import mailboxes_by_status, messages_synced, sync_runs_by_status
from app.sync import fleet_health

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
        self.health = Gauge(
            "imap_bridge_mailbox_health",
            "Mailboxes, by health state (as GET /v1/health/mailboxes counts them).",
            ["state"],
            registry=self.registry,
        )
        self.max_lag = Gauge(
            "imap_bridge_mailbox_lag_seconds_max",
            "Seconds since a sync last saw the server, of the mailbox furthest behind.",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "imap_bridge_queue_depth",
            "Jobs waiting in the arq queue (-1: Redis unavailable).",
            registry=self.registry,
        )
        self.read_lock = asyncio.Lock()  # concurrent scrapes share one read
        self.read_at: float | None = None  # monotonic time of the last database read


def install_metrics(app: FastAPI) -> None:
    """Time every request under its route template (not its raw path: bounded labels)."""
    metrics = ServiceMetrics()
    app.state.metrics = metrics
    app.add_middleware(RequestTimer, latency=metrics.latency)


class RequestTimer:
    """ASGI middleware observing the time from a request to its response's status line.

    A plain ASGI wrapper, not Starlette's `BaseHTTPMiddleware`: that one runs
    the app in a task of its own and relays the response through a memory
    stream, which costs more than a short API request itself. A stream (SSE)
    counts until its headers go out, not for as long as it stays open.
    """

    def __init__(self, app: ASGIApp, latency: Histogram) -> None:
        self.app = app
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.latency.labels(
                    scope["method"], _route_template(scope), message["status"]
                ).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, timed_send)


def _route_template(scope: Scope) -> str:
    """The matched route's path template; the router records it in the scope."""
    return str(getattr(scope.get("route"), "path", "unmatched"))


_bearer = HTTPBearer(
    scheme_name="MetricsToken", auto_error=False, description="METRICS_TOKEN, when it is set."
)


async def require_metrics_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Refuse a scrape without METRICS_TOKEN, when one is set; compare in constant time."""
    expected = settings.metrics_token
    if expected is None:
        return
    presented = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(_digest(presented), _digest(expected.get_secret_value())):
        raise ApiError(
            401,
            "unauthorized",
            "Unauthorized",
            "send Authorization: Bearer <METRICS_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _digest(token: str) -> bytes:
    """Compare digests, not the tokens: equal lengths, so the time says nothing of the token."""
    return hashlib.sha256(token.encode()).digest()


@router.get(
    "/metrics",
    operation_id="metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"},
        **problem_responses(
            ProblemDoc(401, "`unauthorized`: METRICS_TOKEN is set and was not sent"),
            DATABASE_UNAVAILABLE,
        ),
    },
    dependencies=[Depends(require_metrics_token)],
    # The token is optional: without METRICS_TOKEN the scrape needs none ({} in the list).
    openapi_extra={"security": [{}]},
)
async def metrics(request: Request, engine: EngineDep, settings: SettingsDep) -> Response:
    service: ServiceMetrics = request.app.state.metrics
    async with service.read_lock:
        now = time.monotonic()
        if service.read_at is None or now - service.read_at >= settings.metrics_cache_seconds:
            await run_in_threadpool(_read_database, engine, settings, service)
            depth = await queue_depth(request)
            service.queue_depth.set(-1 if depth is None else depth)
            service.read_at = now
    return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)


def _read_database(engine: Engine, settings: Settings, service: ServiceMetrics) -> None:
    with session_scope(engine) as session:
        for status, count in sync_runs_by_status(session).items():
            service.sync_runs.labels(status).set(count)
        service.messages.set(messages_synced(session))
        for status, count in mailboxes_by_status(session).items():
            service.mailboxes.labels(status).set(count)
        fleet = fleet_health(session, settings, queue_depth=None, now=utcnow())
    for state, count in fleet.counts.items():
        service.health.labels(state).set(count)
    service.max_lag.set(fleet.max_lag_seconds)
