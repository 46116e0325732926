"""A real webhook receiver on loopback: checks Standard Webhooks signatures, answers as scripted.

It answers the scripted responses in order, then 200 to everything, and
accepts each `webhook-id` once, as a receiver with idempotency would.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.config import Settings
from app.db import session_scope
from app.notify.webhook_endpoints import create_webhook_endpoint
from app.security import SecretBox
from tests.support.live_api import serving
from tests.support.secret_watch import SecretKind, register_secret


@dataclass
class WebhookReceiver:
    """What the receiver saw; set `secret` before deliveries arrive."""

    url: str = ""
    secret: str | None = None
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)  # one per request, as received
    accepted: dict[str, Any] = field(default_factory=dict)  # webhook-id -> verified payload
    bad_signatures: int = 0

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        self.requests.append(headers)
        self.bodies.append(body)
        if self.script:
            return self.script.pop(0)
        assert self.secret is not None, "the test sets the endpoint's secret"
        try:
            payload = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            self.bad_signatures += 1
            return 400, {}
        self.accepted.setdefault(headers["webhook-id"], payload)
        return 204, {}


@contextmanager
def running_receiver() -> Iterator[WebhookReceiver]:
    """Serve a receiver with uvicorn in a thread on 127.0.0.1; stop it afterwards."""
    receiver = WebhookReceiver()

    async def hook(request: Request) -> Response:
        status, headers = receiver.answer(dict(request.headers), await request.body())
        return Response(status_code=status, headers=headers)

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    with serving(app) as base_url:
        receiver.url = f"{base_url}/hook"
        yield receiver


def register_endpoint(
    engine: Engine, settings: Settings, url: str, secrets: SecretBox | None = None
) -> tuple[int, str]:
    """Register `url` as a webhook endpoint of every event type; return its id and secret."""
    with session_scope(engine) as session:
        endpoint, secret = create_webhook_endpoint(
            session,
            settings,
            secrets or SecretBox.from_settings(settings),
            url=url,
            event_types=[],
            enabled=True,
        )
    assert endpoint.id is not None
    return endpoint.id, register_secret(SecretKind.WEBHOOK_SECRET, secret, f"endpoint {url}")


def subscribe_to_everything(engine: Engine, settings: Settings, receiver: WebhookReceiver) -> None:
    """Register `receiver` as a webhook endpoint of every event type; keep its signing secret."""
    _, receiver.secret = register_endpoint(engine, settings, receiver.url)
