"""Webhook endpoints: CRUD, their delivery log, and a test event."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Path, Request
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from app.api.auth import full_key_router
from app.api.deps import DATABASE_ONLY, MAX_ROW_ID, EngineDep, SecretsDep, SessionDep, SettingsDep
from app.api.limits import RATE_LIMIT
from app.api.pagination import (
    CursorQuery,
    LimitQuery,
    Page,
    decode_id_cursor,
    id_page,
)
from app.api.problems import (
    INVALID_INPUT,
    RATE_LIMITED,
    ProblemDoc,
    missing,
    problem_responses,
)
from app.api.queue_connection import wake_dispatcher
from app.api.webhooks.schemas import (
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryRead,
    WebhookRead,
    WebhookSecretRotated,
    WebhookSecretRotation,
    WebhookTestQueued,
    WebhookUpdate,
)
from app.db import session_scope
from app.db.models import persisted_id
from app.db.repositories.webhooks import list_webhook_endpoints, webhook_deliveries
from app.notify.webhook_endpoints import (
    create_webhook_endpoint,
    get_webhook_endpoint_or_raise,
    record_test_event,
    remove_webhook_endpoint,
    rotate_webhook_secret,
    update_webhook_endpoint,
)

log = logging.getLogger(__name__)

router = full_key_router("/v1", "webhooks")

WebhookIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="A webhook endpoint id.")]
_NO_SUCH_ENDPOINT = missing("webhook endpoint")
_URL_REFUSED = ProblemDoc(422, "`webhook_url_refused`: the URL is not a public address")


@router.post(
    "/webhooks",
    operation_id="create_webhook",
    summary="Register a webhook endpoint; the answer holds its signing secret, shown once",
    status_code=201,
    response_model=WebhookCreated,
    responses=problem_responses(INVALID_INPUT, _URL_REFUSED, RATE_LIMITED),
    dependencies=[RATE_LIMIT],
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
        owner=body.owner,
        mailbox_id=body.mailbox_id,
    )
    return WebhookCreated(**WebhookRead.of(endpoint).model_dump(), secret=secret)


@router.get(
    "/webhooks",
    operation_id="list_webhooks",
    summary="Webhook endpoints, oldest first",
    response_model=Page[WebhookRead],
    dependencies=[DATABASE_ONLY],
)
def list_webhooks(
    session: SessionDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> Page[WebhookRead]:
    after_id = decode_id_cursor(cursor)
    endpoints = list_webhook_endpoints(session, limit=limit + 1, after_id=after_id)
    return id_page(endpoints, limit, WebhookRead.of)


@router.get(
    "/webhooks/{webhook_id}",
    operation_id="get_webhook",
    summary="One webhook endpoint, with why it was disabled if it was",
    response_model=WebhookRead,
    responses=problem_responses(_NO_SUCH_ENDPOINT),
    dependencies=[DATABASE_ONLY],
)
def read_webhook(session: SessionDep, webhook_id: WebhookIdPath) -> WebhookRead:
    return WebhookRead.of(get_webhook_endpoint_or_raise(session, webhook_id))


@router.patch(
    "/webhooks/{webhook_id}",
    operation_id="update_webhook",
    summary="Change the URL, the filters (event types, owner, mailbox), or enable/disable it",
    response_model=WebhookRead,
    responses=problem_responses(_NO_SUCH_ENDPOINT, INVALID_INPUT, _URL_REFUSED, RATE_LIMITED),
    dependencies=[RATE_LIMIT],
)
def update_webhook(
    body: WebhookUpdate, session: SessionDep, settings: SettingsDep, webhook_id: WebhookIdPath
) -> WebhookRead:
    return WebhookRead.of(update_webhook_endpoint(session, settings, webhook_id, body.to_changes()))


@router.post(
    "/webhooks/{webhook_id}/rotate-secret",
    operation_id="rotate_webhook_secret",
    summary="Issue a new signing secret, shown once; the old one still signs for a grace period",
    description=(
        "During the grace period every delivery carries two `v1,` signatures in its"
        " `webhook-signature` header, one per secret, so the receiver can switch to the"
        " new secret whenever it likes; afterwards only the new secret signs."
    ),
    response_model=WebhookSecretRotated,
    responses=problem_responses(_NO_SUCH_ENDPOINT, INVALID_INPUT),
    dependencies=[DATABASE_ONLY],
)
def rotate_secret(
    session: SessionDep,
    secrets: SecretsDep,
    webhook_id: WebhookIdPath,
    body: WebhookSecretRotation | None = None,
) -> WebhookSecretRotated:
    grace = (body or WebhookSecretRotation()).grace
    endpoint, secret = rotate_webhook_secret(session, secrets, webhook_id, grace=grace)
    return WebhookSecretRotated(**WebhookRead.of(endpoint).model_dump(), secret=secret)


@router.delete(
    "/webhooks/{webhook_id}",
    operation_id="delete_webhook",
    summary="Remove a webhook endpoint and its delivery log",
    status_code=204,
    responses=problem_responses(_NO_SUCH_ENDPOINT),
    dependencies=[DATABASE_ONLY],
)
def delete_webhook(session: SessionDep, webhook_id: WebhookIdPath) -> None:
    remove_webhook_endpoint(session, webhook_id)


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    operation_id="list_webhook_deliveries",
    summary="The endpoint's delivery attempts, newest first: status, latency, error",
    response_model=Page[WebhookDeliveryRead],
    responses=problem_responses(_NO_SUCH_ENDPOINT),
    dependencies=[DATABASE_ONLY],
)
def list_webhook_deliveries(
    session: SessionDep,
    webhook_id: WebhookIdPath,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[WebhookDeliveryRead]:
    get_webhook_endpoint_or_raise(session, webhook_id)
    before_id = decode_id_cursor(cursor)
    attempts = webhook_deliveries(session, webhook_id, limit=limit + 1, before_id=before_id)
    return id_page(attempts, limit, WebhookDeliveryRead.of)


@router.post(
    "/webhooks/{webhook_id}/test",
    operation_id="test_webhook",
    summary="Send a `webhook.test` event to this endpoint only",
    description="Answers 202 at once; the attempt shows in the endpoint's delivery log.",
    status_code=202,
    response_model=WebhookTestQueued,
    responses=problem_responses(_NO_SUCH_ENDPOINT, RATE_LIMITED),
    dependencies=[RATE_LIMIT],
)
async def test_webhook(
    request: Request, engine: EngineDep, webhook_id: WebhookIdPath
) -> WebhookTestQueued:
    event_id = await run_in_threadpool(_record_test_event, engine, webhook_id)
    await wake_dispatcher(request)
    return WebhookTestQueued(event_id=event_id)


def _record_test_event(engine: Engine, webhook_id: int) -> int:
    with session_scope(engine) as session:
        event = record_test_event(session, webhook_id)
    return persisted_id(event)
