"""`GET /v1/events`: the outbox as a Server-Sent Events stream, resumable with Last-Event-ID.

Each event is `id: <event id>`, `event: <type>`, `data: <envelope JSON>`; an
idle stream gets a `: ping` comment every 15 s (FastAPI's SSE support), so
proxies keep it open. Without Last-Event-ID a stream starts with events
committed after it opened. Do not put GZip middleware in front of it.

A stream is a long-lived request, so it is bounded three ways:

    opening  -> one of SSE_MAX_STREAMS_PER_KEY slots of its API key (429 beyond),
                held until the response ends, also when the client just goes away
    each 1 s -> one outbox poll in the stream threads (SSE_POLL_THREADS, a limiter
                of their own): a thousand streams wait for those threads, never
                for the ones that answer requests, and hold as many connections
    each SSE_KEY_RECHECK_SECONDS -> the key is looked up again; revoked: the
                stream ends (the client's reconnect then gets 401)
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.engine import Engine

from app.api.auth import ApiKeyDep, full_key_router
from app.api.deps import MAX_ROW_ID, EngineDep, SettingsDep
from app.api.events.schemas import EventEnvelope, EventType
from app.api.limits import STREAM_SLOT
from app.api.problems import (
    TOO_MANY_STREAMS,
    ApiError,
    FieldError,
    problem_responses,
)
from app.api.request_models import USER_ID_PATTERN
from app.db import session_scope
from app.db.models import persisted_id
from app.db.repositories.api_keys import is_live_api_key
from app.notify.event_stream import OutboxTail

router = full_key_router("/v1", "events")

POLL_SECONDS = 1.0
_EVENT_TYPES = TypeAdapter(list[EventType])
_EVENT_ID = re.compile(r"[0-9]{1,19}")


def open_tail(
    engine: EngineDep,
    user_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=255,
            pattern=USER_ID_PATTERN,
            description="Only this CRM user's mailboxes (and system mailboxes' credential"
            " events when the user is a notification recipient).",
        ),
    ] = None,
    types: Annotated[
        str | None, Query(max_length=1000, description="Comma-separated event types to keep.")
    ] = None,
    last_event_id: Annotated[
        str | None, Header(description="The `id` of the last event received; resume after it.")
    ] = None,
) -> OutboxTail:
    """Check the stream's parameters before the response starts (so errors are still 422)."""
    wanted = _event_types(types)
    after_id = _resume_point(last_event_id)
    if after_id is None:
        return OutboxTail.from_now(engine, user_id=user_id, types=wanted)
    return OutboxTail(engine, after_id, user_id=user_id, types=wanted)


@router.get(
    "/events",
    operation_id="stream_events",
    summary="Stream events as Server-Sent Events; reconnect with Last-Event-ID to resume",
    description=(
        "Each message is `id: <event id>`, `event: <type>` and `data: <Event JSON>`: the"
        " `Event` schema, the same body a webhook endpoint receives."
    ),
    response_class=EventSourceResponse,
    responses=problem_responses(TOO_MANY_STREAMS),
    dependencies=[STREAM_SLOT],
)
async def stream_events(
    request: Request,
    tail: Annotated[OutboxTail, Depends(open_tail)],
    api_key: ApiKeyDep,
    engine: EngineDep,
    settings: SettingsDep,
) -> AsyncIterator[ServerSentEvent]:
    threads: anyio.CapacityLimiter = request.app.state.stream_threads
    key_checked_at = time.monotonic()
    while not await request.is_disconnected():
        if time.monotonic() - key_checked_at >= settings.sse_key_recheck_seconds:
            if not await anyio.to_thread.run_sync(
                _key_is_live, engine, persisted_id(api_key), limiter=threads
            ):
                return  # revoked: the client's reconnect gets 401
            key_checked_at = time.monotonic()
        events = await anyio.to_thread.run_sync(tail.poll, limiter=threads)
        for event in events:
            envelope = EventEnvelope.of(event)
            yield ServerSentEvent(
                data=envelope.model_dump(mode="json"), event=envelope.type, id=str(envelope.id)
            )
        if not events:
            await asyncio.sleep(POLL_SECONDS)


def install_stream_threads(app: FastAPI, threads: int) -> None:
    """Give the event streams their own thread limiter, apart from the routes' pool."""
    app.state.stream_threads = anyio.CapacityLimiter(threads)


def _key_is_live(engine: Engine, key_id: int) -> bool:
    with session_scope(engine) as session:
        return is_live_api_key(session, key_id)


def _event_types(types: str | None) -> list[str]:
    if not types:
        return []
    try:
        return list(_EVENT_TYPES.validate_python([t.strip() for t in types.split(",")]))
    except ValidationError as exc:
        raise _invalid("types", "unknown event type; see the Event types in the API docs") from exc


def _resume_point(last_event_id: str | None) -> int | None:
    if last_event_id is None or not last_event_id.strip():
        return None
    value = last_event_id.strip()
    # ASCII digits only, and few: `isdigit()` also accepts `²`, which int() refuses.
    if not _EVENT_ID.fullmatch(value) or int(value) > MAX_ROW_ID:
        raise _invalid("last-event-id", "an event id this stream sent")
    return int(value)


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(
        422,
        "validation_error",
        "The request is invalid",
        f"{field}: {message}",
        errors=[FieldError(field=field, message=message)],
    )
