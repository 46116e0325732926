"""The FastAPI application: `create_app()` wires settings, database, routers and errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import health, metrics
from app.api.problems import Problem, install_problem_handlers
from app.config import Settings, get_settings
from app.db import create_db_engine
from app.security import SecretBox

API_VERSION = "1.0.0"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; nothing connects until the first request or startup."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.engine.dispose()

    app = FastAPI(
        title="imap-bridge",
        version=API_VERSION,
        summary="A local, always-current SQL copy of IMAP mailboxes, for a host CRM.",
        lifespan=lifespan,
        responses={
            422: {"model": Problem, "description": "Invalid input; `errors` names each field"},
            500: {"model": Problem, "description": "Unexpected error"},
        },
    )
    app.state.settings = settings
    app.state.engine = create_db_engine(settings.database_url)
    app.state.secrets = SecretBox.from_settings(settings)
    install_problem_handlers(app)
    metrics.install_metrics(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    return app
