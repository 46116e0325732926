"""Event streams as a careless or hostile client holds them, over a real uvicorn: capped per
API key, freed when the client goes away, ended when the key is revoked, and never taking
the threads or database connections the other routes answer with."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlmodel import select

from app.config import Settings
from app.db import session_scope
from app.db.models import ApiKey
from tests.support.cli import imap_bridge
from tests.support.live_api import LiveApi, create_api_key

MAX_STREAMS = 2
MANY_STREAMS = 45  # more than the routes' 40 threads and the engine's 15 connections
POSTGRESQL_ONLY = pytest.mark.parametrize("databases", ["postgresql"], indirect=True)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings with a small stream cap and a key re-check every second."""
    return settings.model_copy(
        update={"sse_max_streams_per_key": MAX_STREAMS, "sse_key_recheck_seconds": 1.0}
    )


@contextmanager
def open_stream(client: httpx.Client, **headers: str) -> Iterator[httpx.Response]:
    """Open `GET /v1/events` and yield the response once its headers are in; close it after."""
    with client.stream(
        "GET", "/v1/events", headers=headers, timeout=httpx.Timeout(10, read=20)
    ) as stream:
        yield stream


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_key_holds_at_most_its_streams_and_a_closed_one_frees_its_slot(
    live_api: LiveApi, engine: Engine
) -> None:
    client = live_api.client
    with ExitStack() as streams:
        held = [streams.enter_context(open_stream(client)) for _ in range(MAX_STREAMS)]
        assert [stream.status_code for stream in held] == [200] * MAX_STREAMS
        with open_stream(client) as refused:
            assert refused.status_code == 429, "a stream over SSE_MAX_STREAMS_PER_KEY was opened"
            refused.read()
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "too_many_streams"
        assert int(refused.headers["retry-after"]) > 0
        other = bearer(create_api_key(engine, "another crm"))
        with open_stream(client, **other) as own:
            assert own.status_code == 200, "another key has slots of its own"

    # The client went away without a word: the server notices and frees the slots.
    deadline = time.monotonic() + 10
    while True:
        with ExitStack() as streams:
            again = [streams.enter_context(open_stream(client)) for _ in range(MAX_STREAMS)]
            if all(stream.status_code == 200 for stream in again):
                break
        assert time.monotonic() < deadline, "closed streams still hold their slots after 10 s"
        time.sleep(0.2)


def test_an_open_stream_ends_within_seconds_of_its_key_being_revoked(
    live_api: LiveApi, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    key = create_api_key(engine, "revoked while streaming")
    with session_scope(engine) as session:
        key_id = session.exec(
            select(ApiKey.id).where(ApiKey.name == "revoked while streaming")
        ).one()

    with open_stream(live_api.client, **bearer(key)) as stream:
        assert stream.status_code == 200
        revoked = imap_bridge(settings, tmp_path, "apikey", "revoke", str(key_id))
        assert revoked.returncode == 0, revoked.stderr
        revoked_at = time.monotonic()
        for _ in stream.iter_lines():  # a ping comes every 15 s while the stream is open
            assert time.monotonic() - revoked_at < 10, "the revoked key's stream is still open"
        ended_after = time.monotonic() - revoked_at

    assert ended_after < 10, f"the stream of a revoked key ended only after {ended_after:.1f} s"
    with open_stream(live_api.client, **bearer(key)) as reconnect:
        assert reconnect.status_code == 401


@POSTGRESQL_ONLY
def test_many_streams_stuck_on_the_outbox_leave_the_routes_their_threads(
    live_api: LiveApi, engine: Engine, settings: Settings
) -> None:
    """Every stream's poll waits on a lock held on the outbox table: ordinary routes answer."""
    client = live_api.client
    keys = [bearer(create_api_key(engine, f"crm {n}")) for n in range(MANY_STREAMS)]
    with ExitStack() as streams:
        opened = [streams.enter_context(open_stream(client, **key)) for key in keys]
        assert {stream.status_code for stream in opened} == {200}
        with engine.connect() as locker:
            locker.execute(text("LOCK TABLE event IN ACCESS EXCLUSIVE MODE"))
            time.sleep(3)  # every stream has polled by now and waits on the lock
            started = time.monotonic()
            try:
                listed = client.get("/v1/mailboxes", timeout=15)
            except httpx.ReadTimeout:
                pytest.fail("with the streams' polls stuck, a database route got no answer")
            finally:
                locker.rollback()
        took = time.monotonic() - started

    assert listed.status_code == 200, listed.text
    assert took < 10, f"a database route took {took:.1f} s beside stuck streams"
