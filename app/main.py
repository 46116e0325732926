"""The FastAPI application: `create_app()` wires settings, database, routers and errors."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp

from app.api import health, metrics
from app.api.auth import VerifiedKeys
from app.api.connection.router import router as connection_router
from app.api.correlation import RequestCorrelation
from app.api.deps import ImapSlots
from app.api.emails.router import router as emails_router
from app.api.events.router import install_stream_threads
from app.api.events.router import router as events_router
from app.api.events.webhooks import router as event_webhooks
from app.api.folders.router import router as folders_router
from app.api.limits import install_limits
from app.api.links import link_created_resources
from app.api.mailbox_health.router import router as mailbox_health_router
from app.api.mailboxes.router import router as mailboxes_router
from app.api.notifications.router import router as notifications_router
from app.api.oauth.router import public_router as oauth_public_router
from app.api.oauth.router import router as oauth_router
from app.api.problems import (
    INTERNAL_ERROR,
    INVALID_INPUT,
    document_problems,
    install_problem_handlers,
    problem_responses,
)
from app.api.queue_connection import connect_queue
from app.api.search.router import router as search_router
from app.api.status_page.router import router as status_page_router
from app.api.sync_runs.router import router as sync_runs_router
from app.api.webhooks.router import router as webhooks_router
from app.config import Settings, get_settings
from app.db import create_db_engine
from app.log_redaction import install_log_redaction
from app.security import SecretBox

API_VERSION = "1.0.0"


class BridgeApi(FastAPI):
    """The application; its OpenAPI document files every problem as problem+json and links
    each create to the operations on what it created."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = link_created_resources(document_problems(super().openapi()))
        return self.openapi_schema

    def build_middleware_stack(self) -> ASGIApp:
        """Bind each request's correlation id outside every other layer, error handling too."""
        return RequestCorrelation(super().build_middleware_stack())


@cache
def _freeze_startup_objects() -> None:
    """Take what start-up left alive out of the garbage collector's sight, once per process.

    Modules, routes, models and the app live as long as the process; otherwise every
    full collection walks them all (about 166,000 objects), a pause every request
    waiting at that moment pays: at 20 clients listing mail it set the p99 of both
    a list and `/healthz`.
    """
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; nothing connects until the first request or startup."""
    settings = settings or get_settings()
    install_log_redaction()  # uvicorn's access log holds query strings: OAuth codes

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # None while Redis is down: the first request that needs the queue connects then.
        app.state.queue = await connect_queue(settings)
        _freeze_startup_objects()
        yield
        if app.state.queue is not None:
            await app.state.queue.aclose()
        app.state.engine.dispose()

    app = BridgeApi(
        title="imap-bridge",
        version=API_VERSION,
        summary="A local, always-current SQL copy of IMAP mailboxes, for a host CRM.",
        lifespan=lifespan,
        responses=problem_responses(INVALID_INPUT, INTERNAL_ERROR),
    )
    app.state.settings = settings
    app.state.engine = create_db_engine(settings.database_url)
    app.state.secrets = SecretBox.from_settings(settings)
    app.state.queue = None
    app.state.queue_lock = asyncio.Lock()
    app.state.database_turns = asyncio.Semaphore(settings.api_database_concurrency)
    app.state.imap_slots = ImapSlots(settings.api_imap_concurrency)
    app.state.verified_keys = VerifiedKeys()
    install_problem_handlers(app)
    install_limits(app, settings)
    install_stream_threads(app, settings.sse_poll_threads)
    metrics.install_metrics(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(connection_router)
    app.include_router(mailboxes_router)
    app.include_router(folders_router)
    app.include_router(mailbox_health_router)
    app.include_router(sync_runs_router)
    app.include_router(emails_router)
    app.include_router(search_router)
    app.include_router(webhooks_router)
    app.include_router(notifications_router)
    app.include_router(events_router)
    app.include_router(oauth_router)
    app.include_router(oauth_public_router)
    app.include_router(status_page_router)
    app.webhooks.include_router(event_webhooks)
    return app
