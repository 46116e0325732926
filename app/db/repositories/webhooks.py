"""Queries on `webhook_endpoint` and its delivery log `webhook_delivery`."""

from __future__ import annotations

from sqlmodel import Session, col, select

from app.db.models import WebhookDelivery, WebhookEndpoint


def get_webhook_endpoint(session: Session, endpoint_id: int) -> WebhookEndpoint | None:
    return session.get(WebhookEndpoint, endpoint_id)


def add_webhook_endpoint(session: Session, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    session.add(endpoint)
    session.flush()
    return endpoint


def list_webhook_endpoints(
    session: Session, *, limit: int, after_id: int | None = None
) -> list[WebhookEndpoint]:
    """Return up to `limit` endpoints in creation order, after `after_id`."""
    statement = select(WebhookEndpoint)
    if after_id is not None:
        statement = statement.where(col(WebhookEndpoint.id) > after_id)
    return list(session.exec(statement.order_by(col(WebhookEndpoint.id)).limit(limit)))


def enabled_webhook_endpoints(session: Session) -> list[WebhookEndpoint]:
    statement = select(WebhookEndpoint).where(col(WebhookEndpoint.enabled).is_(True))
    return list(session.exec(statement.order_by(col(WebhookEndpoint.id))))


def delete_webhook_endpoint(session: Session, endpoint: WebhookEndpoint) -> None:
    session.delete(endpoint)


def add_webhook_delivery(session: Session, delivery: WebhookDelivery) -> None:
    session.add(delivery)


def webhook_deliveries(
    session: Session, endpoint_id: int, *, limit: int, before_id: int | None = None
) -> list[WebhookDelivery]:
    """Return up to `limit` attempts on the endpoint, newest first, older than `before_id`."""
    statement = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    if before_id is not None:
        statement = statement.where(col(WebhookDelivery.id) < before_id)
    return list(session.exec(statement.order_by(col(WebhookDelivery.id).desc()).limit(limit)))
