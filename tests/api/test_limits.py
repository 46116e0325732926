"""Request limits a client runs into: body size (413), page size (422), rate (429)."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import Engine

from app.api.limits import RateLimiter
from app.api.pagination import MAX_PAGE_SIZE
from app.config import Settings
from tests.support.live_api import LiveApi, create_api_key

MAX_BODY = 64 * 1024
RATE_PER_MINUTE = 3
SEARCH = {"folder": "INBOX", "subject": "invoice"}
DOCUMENT = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings with small limits, so tests reach them in a few requests."""
    return settings.model_copy(
        update={"api_max_body_bytes": MAX_BODY, "api_rate_limit_per_minute": RATE_PER_MINUTE}
    )


def raw_post(
    live_api: LiveApi, head: dict[str, str], chunks: Iterable[bytes]
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """POST over a bare socket: the headers as given, then `chunks` exactly as given.

    httpx would always finish sending its body first, which a server refusing the
    body early may reset; here the test sends only what the server reads.
    """
    url = urlsplit(live_api.base_url)
    assert url.hostname is not None and url.port is not None
    lines = [
        "POST /v1/mailboxes HTTP/1.1",
        f"Host: {url.hostname}",
        f"Authorization: Bearer {live_api.api_key}",
        "Content-Type: application/json",
        *(f"{name}: {value}" for name, value in head.items()),
    ]
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        for chunk in chunks:
            sock.sendall(chunk)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, dict(response.getheaders()), json.loads(response.read())


def assert_documented(operation: str, status: int, headers: Mapping[str, str]) -> None:
    """Check the answer is one the checked-in document declares: status, media type, headers."""
    method, path = operation.split(" ")
    document = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    declared = document["paths"][path][method.lower()]["responses"][str(status)]
    sent = {name.lower(): value for name, value in headers.items()}
    assert list(declared["content"]) == [sent["content-type"]]
    assert {name.lower() for name in declared.get("headers", {})} <= set(sent)


def assert_too_large(status: int, headers: dict[str, str], problem: dict[str, Any]) -> None:
    assert status == 413
    assert headers["content-type"] == "application/problem+json"
    assert problem["code"] == "payload_too_large"
    assert str(MAX_BODY) in problem["detail"]
    assert_documented("POST /v1/mailboxes", status, headers)


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(live_api: LiveApi) -> None:
    assert_too_large(*raw_post(live_api, {"Content-Length": str(MAX_BODY + 1)}, []))


def test_a_streamed_body_is_refused_once_it_crosses_the_limit(live_api: LiveApi) -> None:
    piece = b"x" * 4096
    chunks = [b"%x\r\n%s\r\n" % (len(piece), piece)] * (MAX_BODY // len(piece) + 1)

    assert_too_large(*raw_post(live_api, {"Transfer-Encoding": "chunked"}, chunks))


def test_a_body_within_the_limit_reaches_validation(live_api: LiveApi) -> None:
    body = {"email_address": "x" * (MAX_BODY - 1000)}

    response = live_api.client.post("/v1/mailboxes", json=body)

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize("limit", [0, MAX_PAGE_SIZE + 1])
def test_a_page_size_out_of_range_is_a_422_naming_limit(live_api: LiveApi, limit: int) -> None:
    response = live_api.client.get("/v1/mailboxes", params={"limit": limit})

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["limit"]


# Every route that costs a remote round trip (app/api/limits.py), and a call to it that
# stops before any server is asked: no such row, or a body that fails validation.
RATE_LIMITED_CALLS = [
    ("POST", "/v1/connection/check", {}),
    ("POST", "/v1/oauth/{provider}/check-connection", {}),
    ("POST", "/v1/oauth/{provider}/token", {}),
    ("POST", "/v1/oauth/{provider}/complete", {}),
    ("PUT", "/v1/oauth/providers/{name}", {}),
    ("POST", "/v1/mailboxes", {}),
    ("PATCH", "/v1/mailboxes/{mailbox_id}", {}),
    ("POST", "/v1/mailboxes/{mailbox_id}/reauthorize/complete", {}),
    ("PATCH", "/v1/mailboxes/{mailbox_id}/folders", []),
    ("POST", "/v1/mailboxes/{mailbox_id}/search", SEARCH),
    ("POST", "/v1/mailboxes/{mailbox_id}/sync", None),
    ("PATCH", "/v1/emails/{email_id}", {"seen": True}),
    ("GET", "/v1/emails/{email_id}/raw", None),
    ("GET", "/v1/emails/{email_id}/attachments/{n}", None),
    ("POST", "/v1/webhooks", {}),
    ("PATCH", "/v1/webhooks/{webhook_id}", {}),
    ("POST", "/v1/webhooks/{webhook_id}/test", None),
]
PATH_VALUES = {
    "{provider}": "google",
    "{name}": "google",
    "{mailbox_id}": "999999",
    "{email_id}": "999999",
    "{n}": "0",
    "{webhook_id}": "999999",
}


def call(client: httpx.Client, method: str, template: str, body: Any, **kw: Any) -> httpx.Response:
    path = template
    for name, value in PATH_VALUES.items():
        path = path.replace(name, value)
    return client.request(method, path, json=body, **kw)


@pytest.mark.parametrize(("method", "path", "body"), RATE_LIMITED_CALLS)
def test_each_expensive_route_gives_an_api_key_its_rate_then_429_with_retry_after(
    live_api: LiveApi, engine: Engine, method: str, path: str, body: Any
) -> None:
    allowed = [call(live_api.client, method, path, body) for _ in range(RATE_PER_MINUTE)]
    refused = call(live_api.client, method, path, body)

    assert [r.status_code for r in allowed if r.status_code == 429 or r.status_code >= 500] == []
    assert refused.status_code == 429, f"{method} {path} is not rate limited: {refused.text}"
    assert refused.json()["code"] == "rate_limited"
    assert refused.headers["content-type"] == "application/problem+json"
    # 3 calls a minute: the next one is 20 s away.
    assert refused.headers["Retry-After"] == "20"
    assert_documented(f"{method} {path}", refused.status_code, refused.headers)
    # Another key has a bucket of its own.
    other = {"Authorization": f"Bearer {create_api_key(engine, 'other')}"}
    assert call(live_api.client, method, path, body, headers=other).status_code != 429


def test_a_key_over_its_rate_on_one_route_may_still_call_the_others(live_api: LiveApi) -> None:
    client = live_api.client
    for _ in range(RATE_PER_MINUTE):
        client.get("/v1/emails/999999/raw")
    assert client.get("/v1/emails/999999/raw").status_code == 429

    assert client.post("/v1/mailboxes/999999/sync").status_code == 404
    assert client.post("/v1/connection/check", json={}).status_code == 422
    # Cheap routes are not limited at all.
    assert [client.get("/v1/mailboxes").status_code for _ in range(2 * RATE_PER_MINUTE)] == [
        200
    ] * (2 * RATE_PER_MINUTE)


def test_a_bucket_refills_evenly_and_never_beyond_its_burst() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=6, clock=lambda: now[0])  # one call every 10 s

    assert [limiter.take(1) for _ in range(6)] == [0.0] * 6
    assert limiter.take(1) == pytest.approx(10.0)
    now[0] += 10.0
    assert limiter.take(1) == 0.0
    assert limiter.take(1) == pytest.approx(10.0)
    now[0] += 3600.0
    assert [limiter.take(1) for _ in range(6)] == [0.0] * 6
    assert limiter.take(1) > 0
