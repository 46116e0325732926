"""Request dependencies as `Annotated` aliases: settings, database session, API key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.api.problems import not_found
from app.config import Settings
from app.db import session_scope
from app.db.repositories.mailboxes import get_mailbox
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


MAX_ROW_ID = 2**31 - 1  # ids are 32-bit on PostgreSQL: a larger one names no row
MailboxIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="A mailbox id.")]
EmailIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="An email id.")]
SyncRunIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="A sync run id.")]


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SecretsDep = Annotated[SecretBox, Depends(get_secret_box)]
# scope="function": the commit happens before the response is sent, so a client
# that reads right after a write sees it.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def existing_mailbox_id(engine: EngineDep, mailbox_id: MailboxIdPath) -> int:
    """Resolve the `{mailbox_id}` of a path to a mailbox that exists, else 404.

    It reads in a short session of its own, so routes that then talk to the
    IMAP server hold no database transaction open while the server answers.
    """
    with session_scope(engine) as session:
        if get_mailbox(session, mailbox_id) is None:
            raise not_found("mailbox", mailbox_id)
    return mailbox_id


MailboxIdDep = Annotated[int, Depends(existing_mailbox_id)]
