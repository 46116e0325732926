"""`GET /v1/events`: the outbox as a Server-Sent Events stream, resumable with Last-Event-ID.

Each event is `id: <event id>`, `event: <type>`, `data: <envelope JSON>`; an
idle stream gets a `: ping` comment every 15 s (FastAPI's SSE support), so
proxies keep it open. Without Last-Event-ID a stream starts with events
committed after it opened. Do not put GZip middleware in front of it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from app.api.auth import require_api_key
from app.api.deps import MAX_ROW_ID, EngineDep
from app.api.events.schemas import EventEnvelope, EventType
from app.api.problems import API_KEY_PROBLEMS, ApiError, FieldError
from app.notify.event_stream import OutboxTail

router = APIRouter(
    prefix="/v1",
    tags=["events"],
    dependencies=[Depends(require_api_key)],
    responses=API_KEY_PROBLEMS,
)

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
    response_class=EventSourceResponse,
)
async def stream_events(
    request: Request, tail: Annotated[OutboxTail, Depends(open_tail)]
) -> AsyncIterator[ServerSentEvent]:
    while not await request.is_disconnected():
        events = await run_in_threadpool(tail.poll)
        for event in events:
            envelope = EventEnvelope.of(event)
            yield ServerSentEvent(
                data=envelope.model_dump(mode="json"), event=envelope.type, id=str(envelope.id)
            )
        if not events:
            await asyncio.sleep(POLL_SECONDS)


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
