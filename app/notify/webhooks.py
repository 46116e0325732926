"""Standard Webhooks delivery: sign the envelope, post it to a vetted address, judge the answer.

Signature (standardwebhooks.com): `webhook-id` is `msg_<event id>_<endpoint id>`,
the same on every retry so receivers can drop repeats; `webhook-timestamp` is
the send time; `webhook-signature` is `v1,` + base64 HMAC-SHA256 of
`id.timestamp.body` under the endpoint's `whsec_` secret; while a replaced
secret is in its grace period, a space-separated `v1,` entry for each secret.

SSRF: the URL's host is resolved before every attempt and every address must
be public unless `WEBHOOK_ALLOW_PRIVATE_HOSTS`; the request then goes to the
vetted address itself (the Host header and TLS server name stay the URL's),
so a DNS answer that changes after the check (rebinding) is never used.
Redirects are not followed (the Location could point anywhere, the
metadata service 169.254.169.254 included): a 3xx fails the delivery like a 4xx.

A receiver is a peer we do not trust: one attempt (connect, send, the answer's
head and at most ANSWER_BODY_CAP bytes of its body) has one overall deadline,
so a receiver that drips bytes or streams without end holds a send slot no
longer than that; its `Retry-After` is read as ASCII delta-seconds or an HTTP
date and clamped to MAX_RETRY_AFTER, anything else ignored.

    2xx ............................. delivered
    408, 429, 5xx, timeout, network . retried (Retry-After honoured)
    410 Gone ........................ failed, and the endpoint is disabled
    any other answer, blocked host .. failed, not retried
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum

import httpx
from standardwebhooks import Webhook

from app.netguard import AddressBlocked, ResolutionFailed, ResolvedAddress, resolve
from app.notify.errors import WebhookUrlRefusedError
from app.notify.retry import MAX_RETRY_AFTER

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of every secret, not a secret
USER_AGENT = "imap-bridge-webhooks/1"
# Bytes of a receiver's answer body read at most; the judgement needs only the status.
ANSWER_BODY_CAP = 4096
_DELTA_SECONDS = re.compile(r"[0-9]+")  # RFC 9110 delta-seconds: ASCII digits, not `²`


class AttemptOutcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    """What one POST to an endpoint came to."""

    outcome: AttemptOutcome
    status_code: int | None = None
    latency_ms: int | None = None
    error: str | None = None
    retry_after: timedelta | None = None
    gone: bool = False  # 410: the receiver asks never to be called again


def generate_secret() -> str:
    """Return a new signing secret, `whsec_` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def webhook_message_id(event_id: int, endpoint_id: int) -> str:
    """Return the `webhook-id` of an event's message to one endpoint (stable across retries)."""
    return f"msg_{event_id}_{endpoint_id}"


def check_webhook_url(url: str, *, allow_private: bool) -> None:
    """Refuse a URL that is not http(s), or whose host does not resolve to public addresses."""
    parsed = _parse(url)
    try:
        resolve(parsed.host, _port(parsed), allow_private=allow_private)
    except AddressBlocked as exc:
        raise WebhookUrlRefusedError(
            f"{parsed.host} resolves to a private or loopback address"
        ) from exc
    except ResolutionFailed as exc:
        raise WebhookUrlRefusedError(f"{parsed.host} does not resolve") from exc


async def post_webhook(
    client: httpx.AsyncClient,
    url: str,
    signing_secrets: Sequence[str],
    message_id: str,
    body: str,
    *,
    allow_private: bool,
    deadline_seconds: float,
) -> WebhookAttempt:
    """Sign `body` with each secret and POST it once within `deadline_seconds`; never raises
    for what the network or receiver does."""
    parsed = _parse(url)
    try:
        addresses = await asyncio.to_thread(
            resolve, parsed.host, _port(parsed), allow_private=allow_private
        )
    except AddressBlocked:
        return WebhookAttempt(
            AttemptOutcome.REJECTED, error="the host resolves to a blocked address"
        )
    except ResolutionFailed:
        return WebhookAttempt(AttemptOutcome.RETRY, error="the host does not resolve")
    now = datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "host": parsed.netloc.decode("ascii"),
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(
            Webhook(secret).sign(message_id, now, body) for secret in signing_secrets
        ),
    }
    started = time.monotonic()
    try:
        async with asyncio.timeout(deadline_seconds):
            response = await _post_to_first_answering(client, parsed, addresses, headers, body)
    except (TimeoutError, httpx.TimeoutException):
        return WebhookAttempt(AttemptOutcome.RETRY, latency_ms=_since(started), error="timed out")
    except httpx.TransportError as exc:
        error = f"connection failed: {type(exc).__name__}"
        return WebhookAttempt(AttemptOutcome.RETRY, latency_ms=_since(started), error=error)
    return _judge(response, _since(started))


async def _post_to_first_answering(
    client: httpx.AsyncClient,
    url: httpx.URL,
    addresses: list[ResolvedAddress],
    headers: dict[str, str],
    body: str,
) -> httpx.Response:
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    last_error: httpx.ConnectError | None = None
    for address in addresses:
        request = client.build_request(
            "POST",
            url.copy_with(host=str(address.address)),
            headers=headers,
            content=body.encode(),
            extensions=extensions,
        )
        try:
            response = await client.send(request, follow_redirects=False, stream=True)
        except httpx.ConnectError as exc:
            last_error = exc
            continue
        try:
            await _read_capped(response)
        finally:
            await response.aclose()
        return response
    assert last_error is not None  # resolve() never returns an empty list
    raise last_error


async def _read_capped(response: httpx.Response) -> None:
    """Read the answer body up to ANSWER_BODY_CAP bytes and drop it (never the whole)."""
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read >= ANSWER_BODY_CAP:
            return


def _judge(response: httpx.Response, latency_ms: int) -> WebhookAttempt:
    status = response.status_code
    if 200 <= status < 300:
        return WebhookAttempt(AttemptOutcome.DELIVERED, status, latency_ms)
    error = f"HTTP {status}"
    if 300 <= status < 400:
        error += ": redirects are not followed"
    if status in (408, 429) or status >= 500:
        retry_after = _retry_after(response.headers.get("retry-after"))
        return WebhookAttempt(AttemptOutcome.RETRY, status, latency_ms, error, retry_after)
    return WebhookAttempt(AttemptOutcome.REJECTED, status, latency_ms, error, gone=status == 410)


def _retry_after(value: str | None) -> timedelta | None:
    """Read `Retry-After` as delta-seconds or an HTTP date (RFC 9110, 10.2.3), clamped to
    [0, MAX_RETRY_AFTER]; None when absent or neither."""
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        # Compare digit counts first: int() of a 5,000-digit string is slow or refused.
        if len(value) > len(str(int(MAX_RETRY_AFTER.total_seconds()))):
            return MAX_RETRY_AFTER
        return min(timedelta(seconds=int(value)), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(when - datetime.now(UTC), timedelta(0)), MAX_RETRY_AFTER)


def _parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise WebhookUrlRefusedError("not a valid URL") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise WebhookUrlRefusedError("use an http or https URL with a host")
    if parsed.userinfo:
        raise WebhookUrlRefusedError("credentials in the URL are not supported")
    return parsed


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
