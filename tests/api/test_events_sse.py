"""The SSE stream read by a real HTTP client: filters, and resuming with no gap and no repeat."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from app.db import session_scope
from app.db.repositories.events import record_event
from tests.support.factories import create_mailbox
from tests.support.live_api import LiveApi


def add_events(engine: Engine, owner: str, count: int) -> list[int]:
    with session_scope(engine) as session:
        mailbox = create_mailbox(session, owner_user_id=owner)
        events = [record_event(session, "email.received", mailbox, {"n": n}) for n in range(count)]
        session.flush()
        return [event.id for event in events if event.id is not None]


def read_events(live_api: LiveApi, count: int, **headers: str) -> list[dict[str, Any]]:
    """Open the stream for user `alice`, read `count` events, and disconnect."""
    received: list[dict[str, Any]] = []
    with live_api.client.stream(
        "GET",
        "/v1/events",
        params={"user_id": "alice", "types": "email.received"},
        headers=headers,
        timeout=httpx.Timeout(10),
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for line in stream.iter_lines():
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if "data" in fields:
                envelope = json.loads(fields["data"])
                assert fields["id"] == str(envelope["id"])
                assert fields["event"] == envelope["type"]
                received.append(envelope)
                if len(received) == count:
                    break
            fields = {}
    return received


def test_a_resumed_stream_misses_nothing_and_repeats_nothing(
    live_api: LiveApi, engine: Engine
) -> None:
    first = add_events(engine, "alice", 3)
    add_events(engine, "bob", 2)

    start = read_events(live_api, 2, **{"Last-Event-ID": "0"})
    assert [e["id"] for e in start] == first[:2]
    assert {e["owner"] for e in start} == {"alice"}
    assert set(start[0]) == {"id", "type", "created_at", "mailbox_id", "owner", "data"}

    later = add_events(engine, "alice", 2)
    resumed = read_events(live_api, 3, **{"Last-Event-ID": str(start[-1]["id"])})

    assert [e["id"] for e in resumed] == [first[2], *later]
    assert [e["data"] for e in resumed] == [{"n": 2}, {"n": 0}, {"n": 1}]


def test_a_bad_last_event_id_or_type_is_a_422(live_api: LiveApi) -> None:
    bad_id = live_api.client.get("/v1/events", headers={"Last-Event-ID": "abc"})
    bad_type = live_api.client.get("/v1/events", params={"types": "nope"})

    assert (bad_id.status_code, bad_id.json()["errors"][0]["field"]) == (422, "last-event-id")
    assert (bad_type.status_code, bad_type.json()["errors"][0]["field"]) == (422, "types")


@pytest.mark.parametrize("last_event_id", ["²".encode("latin-1"), b"9" * 5000, b"-1"])
def test_a_last_event_id_that_is_not_ascii_digits_is_a_422_not_a_500(
    live_api: LiveApi, last_event_id: bytes
) -> None:
    """`isdigit()` says yes to `²`, and int() refuses more than 4,300 digits."""
    answer = live_api.client.get("/v1/events", headers={b"Last-Event-ID": last_event_id})

    assert answer.status_code == 422, (
        f"Last-Event-ID {last_event_id[:20]!r} -> {answer.status_code}"
    )
    assert answer.json()["errors"][0]["field"] == "last-event-id"
