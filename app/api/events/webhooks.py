"""The OpenAPI `webhooks` section: the request a registered webhook endpoint receives.

Nothing here serves a route: `app.webhooks` only documents what the dispatcher
posts (app.notify.dispatcher), so generated clients get the typed `Event`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header

from app.notify.envelope import Event

router = APIRouter(tags=["events"])

_SIGNED = (
    "Signed as [Standard Webhooks](https://www.standardwebhooks.com/) describe: verify"
    " `webhook-signature` over `webhook-id`, `webhook-timestamp` and the body with the"
    " endpoint's `whsec_` secret before trusting it. Retries repeat the `webhook-id`; drop a"
    " repeat. Answer 2xx within `WEBHOOK_TIMEOUT_SECONDS`. The body is the same"
    " `Event` the SSE stream (`GET /v1/events`) sends as `data:`; narrow on `type` for a"
    " typed `data`."
)


@router.post(
    "event",
    operation_id="receive_event",
    summary="An event, posted to every enabled endpoint whose filters match it",
    description=_SIGNED,
    status_code=204,
    responses={
        "default": {
            "description": "Any answer but 2xx: retried with backoff for about a day;"
            " 410 Gone disables the endpoint."
        }
    },
)
def receive_event(
    event: Event,
    webhook_id: Annotated[str, Header(description="The message id, the same on every retry.")],
    webhook_timestamp: Annotated[str, Header(description="Unix seconds of this attempt.")],
    webhook_signature: Annotated[
        str, Header(description="`v1,<base64 HMAC-SHA256>`, space-separated during a rotation.")
    ],
) -> None:
    """Document the delivery; the CRM implements it."""
