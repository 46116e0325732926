"""Webhook endpoints: CRUD, their delivery log, and a test event."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from redis.exceptions import RedisError
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from app.api.auth import require_api_key
from app.api.deps import MAX_ROW_ID, EngineDep, SecretsDep, SessionDep, SettingsDep
from app.api.pagination import (
    CursorQuery,
    LimitQuery,
    Page,
    decode_id_cursor,
    next_id_cursor,
)
from app.api.problems import Problem
from app.api.webhooks.schemas import (
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryRead,
    WebhookRead,
    WebhookTestQueued,
    WebhookUpdate,
)
from app.db import session_scope
from app.db.repositories.webhooks import list_webhook_endpoints, webhook_deliveries
from app.notify.webhook_endpoints import (
    WebhookEndpointChanges,
    create_webhook_endpoint,
    get_webhook_endpoint_or_raise,
    record_test_event,
    remove_webhook_endpoint,
    update_webhook_endpoint,
)
from app.queue import enqueue_dispatch

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/v1",
    tags=["webhooks"],
    dependencies=[Depends(require_api_key)],
    responses={401: {"model": Problem, "description": "Missing or invalid API key"}},
)

WebhookIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="A webhook endpoint id.")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such webhook endpoint"}
}
_URL_REFUSED: dict[int | str, dict[str, Any]] = {
    422: {
        "model": Problem,
        "description": "Invalid input; `webhook_url_refused` when the URL is private",
    }
}


@router.post(
    "/webhooks",
    operation_id="create_webhook",
    summary="Register a webhook endpoint; the answer holds its signing secret, shown once",
    status_code=201,
    response_model=WebhookCreated,
    responses=_URL_REFUSED,
)
def create_webhook(
    body: WebhookCreate, session: SessionDep, settings: SettingsDep, secrets: SecretsDep
) -> WebhookCreated:
    endpoint, secret = create_webhook_endpoint(
        session,
        settings,
        secrets,
        url=body.url,
        event_types=list(body.event_types),
        enabled=body.enabled,
    )
    return WebhookCreated(**WebhookRead.of(endpoint).model_dump(), secret=secret)


@router.get(
    "/webhooks",
    operation_id="list_webhooks",
    summary="Webhook endpoints, oldest first",
    response_model=Page[WebhookRead],
)
def list_webhooks(
    session: SessionDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> Page[WebhookRead]:
    after_id = decode_id_cursor(cursor) if cursor is not None else None
    endpoints = list_webhook_endpoints(session, limit=limit, after_id=after_id)
    next_cursor = next_id_cursor(endpoints, limit)
    return Page(items=[WebhookRead.of(e) for e in endpoints], next_cursor=next_cursor)


@router.get(
    "/webhooks/{webhook_id}",
    operation_id="get_webhook",
    summary="One webhook endpoint, with why it was disabled if it was",
    response_model=WebhookRead,
    responses=_NOT_FOUND,
)
def read_webhook(session: SessionDep, webhook_id: WebhookIdPath) -> WebhookRead:
    return WebhookRead.of(get_webhook_endpoint_or_raise(session, webhook_id))


@router.patch(
    "/webhooks/{webhook_id}",
    operation_id="update_webhook",
    summary="Change the URL, the event filter, or enable/disable the endpoint",
    response_model=WebhookRead,
    responses={**_NOT_FOUND, **_URL_REFUSED},
)
def update_webhook(
    body: WebhookUpdate, session: SessionDep, settings: SettingsDep, webhook_id: WebhookIdPath
) -> WebhookRead:
    changes = WebhookEndpointChanges(
        url=body.url,
        event_types=list(body.event_types) if body.event_types is not None else None,
        enabled=body.enabled,
    )
    return WebhookRead.of(update_webhook_endpoint(session, settings, webhook_id, changes))


@router.delete(
    "/webhooks/{webhook_id}",
    operation_id="delete_webhook",
    summary="Remove a webhook endpoint and its delivery log",
    status_code=204,
    responses=_NOT_FOUND,
)
def delete_webhook(session: SessionDep, webhook_id: WebhookIdPath) -> None:
    remove_webhook_endpoint(session, webhook_id)


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    operation_id="list_webhook_deliveries",
    summary="The endpoint's delivery attempts, newest first: status, latency, error",
    response_model=Page[WebhookDeliveryRead],
    responses=_NOT_FOUND,
)
def list_webhook_deliveries(
    session: SessionDep,
    webhook_id: WebhookIdPath,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[WebhookDeliveryRead]:
    get_webhook_endpoint_or_raise(session, webhook_id)
    before_id = decode_id_cursor(cursor) if cursor is not None else None
    attempts = webhook_deliveries(session, webhook_id, limit=limit, before_id=before_id)
    next_cursor = next_id_cursor(attempts, limit)
    return Page(items=[WebhookDeliveryRead.of(a) for a in attempts], next_cursor=next_cursor)


@router.post(
    "/webhooks/{webhook_id}/test",
    operation_id="test_webhook",
    summary="Send a `webhook.test` event to this endpoint only",
    description="Answers 202 at once; the attempt shows in the endpoint's delivery log.",
    status_code=202,
    response_model=WebhookTestQueued,
    responses=_NOT_FOUND,
)
async def test_webhook(
    request: Request, engine: EngineDep, webhook_id: WebhookIdPath
) -> WebhookTestQueued:
    event_id = await run_in_threadpool(_record_test_event, engine, webhook_id)
    await _wake_dispatcher(request)
    return WebhookTestQueued(event_id=event_id)


def _record_test_event(engine: Engine, webhook_id: int) -> int:
    with session_scope(engine) as session:
        event = record_test_event(session, webhook_id)
    assert event.id is not None
    return event.id


async def _wake_dispatcher(request: Request) -> None:
    """Ask a worker to dispatch now; when Redis is down, the dispatcher's cron does it later."""
    pool = request.app.state.queue
    if pool is None:
        return
    try:
        await enqueue_dispatch(pool)
    except (RedisError, OSError) as exc:
        log.warning("api.dispatch_not_queued", extra={"error": type(exc).__name__})
