"""Request dependencies as `Annotated` aliases: settings, database session, API key.

Those that only read application state are `async`: FastAPI runs a plain
`def` dependency in its thread pool, a hop that costs more than the read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import Depends, Path, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from app.api.problems import ApiError, not_found
from app.config import Settings
from app.db import session_scope
from app.db.repositories.mailboxes import get_mailbox
from app.oauth.registry import ProviderRegistry, installed_providers
from app.security import SecretBox


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_secret_box(request: Request) -> SecretBox:
    secrets: SecretBox = request.app.state.secrets
    return secrets


async def database_turn(request: Request) -> AsyncIterator[None]:
    """Wait for one of the process's database turns and hold it until the route returns.

    A route answered from the database alone runs in FastAPI's thread pool,
    one thread per request. Past a few threads, more only fight over the
    interpreter lock: every request gets slower and the slowest much slower.
    Waiting here costs nothing (it is on the event loop), so requests queue in
    arrival order instead. Routes that wait on an IMAP server or an identity
    provider do not take a turn: they would hold it for seconds.
    """
    turns: asyncio.Semaphore = request.app.state.database_turns
    async with turns:
        yield


class ImapSlots:
    """Count the process's API requests that talk to an IMAP server; refuse past `total`.

    Such a request holds one of the request threads for as long as the server
    takes (up to IMAP_OPERATION_TIMEOUT). Capping them well below the size of
    the thread pool keeps threads free for every other route, however many
    slow servers are being checked. Counted on the event loop, so no lock.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.in_use = 0


# A request that found every slot taken; by then a slot frees within an operation's time.
_IMAP_BUSY_RETRY_SECONDS = 5


async def imap_slot(request: Request) -> AsyncIterator[None]:
    """Hold one of the IMAP slots until the response is sent, or answer 503 `imap_busy`.

    A full pool is refused at once rather than queued: a queue in front of slow
    servers only makes every caller wait, and the CRM can retry.
    """
    slots: ImapSlots = request.app.state.imap_slots
    if slots.in_use >= slots.total:
        raise ApiError(
            503,
            "imap_busy",
            "Too many requests are waiting on IMAP servers",
            f"this API process talks to at most {slots.total} IMAP servers at once;"
            f" retry in {_IMAP_BUSY_RETRY_SECONDS} s",
            headers={"Retry-After": str(_IMAP_BUSY_RETRY_SECONDS)},
        )
    slots.in_use += 1
    try:
        yield
    finally:
        slots.in_use -= 1


async def get_session(engine: Annotated[Engine, Depends(get_engine)]) -> AsyncIterator[Session]:
    """One transaction per request (`session_scope`), committed when the route returns.

    The scope is entered here on the event loop (the session touches the
    database only at its first query); leaving it, commit or rollback, takes
    one trip to the thread pool, even when the request was cancelled.
    """
    scope = session_scope(engine)
    session = scope.__enter__()
    try:
        yield session
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(scope.__exit__, type(exc), exc, exc.__traceback__)
        raise
    with anyio.CancelScope(shield=True):
        await run_in_threadpool(scope.__exit__, None, None, None)


MAX_ROW_ID = 2**31 - 1  # ids are 32-bit on PostgreSQL: a larger one names no row
MailboxIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="A mailbox id.")]
EmailIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="An email id.")]
SyncRunIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="A sync run id.")]


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SecretsDep = Annotated[SecretBox, Depends(get_secret_box)]
RegistryDep = Annotated[ProviderRegistry, Depends(installed_providers)]
# scope="function": the commit happens before the response is sent, so a client
# that reads right after a write sees it.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
# In a route's `dependencies=[...]`: it runs from the database alone (see `database_turn`).
DATABASE_ONLY = Depends(database_turn, scope="function")
# In the `dependencies=[...]` of a route that talks to an IMAP server (see `imap_slot`); held
# until the response is sent, so a streamed download keeps its slot while it streams.
IMAP_SESSION = Depends(imap_slot)


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
