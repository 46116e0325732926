"""Request dependencies as `Annotated` aliases: settings, database session, API key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.config import Settings
from app.db import session_scope
from app.security import SecretBox


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_secret_box(request: Request) -> SecretBox:
    secrets: SecretBox = request.app.state.secrets
    return secrets


def get_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    """One transaction per request, committed when the route returns without error."""
    with session_scope(engine) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SecretsDep = Annotated[SecretBox, Depends(get_secret_box)]
# scope="function": the commit happens before the response is sent, so a client
# that reads right after a write sees it.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
