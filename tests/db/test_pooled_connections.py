"""A pooled PostgreSQL connection the server ended is replaced before a statement uses it."""

from __future__ import annotations

import time

import psycopg
import pytest
from sqlalchemy import Engine, make_url, text

from app.db import session_scope
from app.db.engine import PING_AFTER_IDLE_SECONDS

POSTGRESQL_ONLY = pytest.mark.parametrize("databases", ["postgresql"], indirect=True)


def backend_pid(engine: Engine) -> int:
    with session_scope(engine) as session:
        return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def end_session(database_url: str, pid: int) -> None:
    """End one server session from outside, as a restart or an administrator does."""
    conninfo = make_url(database_url).set(drivername="postgresql")
    with psycopg.connect(conninfo.render_as_string(hide_password=False), autocommit=True) as admin:
        ended = admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid]).fetchone()
    assert ended == (True,)


@POSTGRESQL_ONLY
def test_a_connection_ended_right_after_its_last_use_is_replaced(
    engine: Engine, database_url: str
) -> None:
    first = backend_pid(engine)
    returned = time.monotonic()
    end_session(database_url, first)

    second = backend_pid(engine)

    assert second != first
    # The connection idled less than the ping window: only the server's goodbye told.
    assert time.monotonic() - returned < PING_AFTER_IDLE_SECONDS


@POSTGRESQL_ONLY
def test_a_connection_ended_while_idle_in_the_pool_is_replaced(
    engine: Engine, database_url: str
) -> None:
    first = backend_pid(engine)
    end_session(database_url, first)
    time.sleep(PING_AFTER_IDLE_SECONDS)

    assert backend_pid(engine) != first
