"""Engines and sessions for the two supported databases, SQLite and PostgreSQL.

SQLite is the embedded default, shared by API processes and arq workers on
one machine, so every connection turns on what concurrent use needs:
foreign keys (cascades are declared in the schema), WAL (readers never wait
for the writer) and a busy timeout (a writer waits for the lock instead of
failing with "database is locked"): 30 s, or the seconds of the URL's
`timeout` (`sqlite:///var/imap-bridge.db?timeout=5`). PostgreSQL goes through
psycopg 3, with a connect timeout (10 s unless the URL sets `connect_timeout`)
and a ping before a pooled connection is used when it may have died, so the pool
recovers by itself after the server restarts or the network drops.

A ping is a round trip, and a no-change sync is little else, so a connection
returned to the pool less than PING_AFTER_IDLE_SECONDS ago is pinged only when
the server sent it something meanwhile: a server that shuts down or ends a
session says so (FATAL) and closes the socket, which leaves it readable. A
connection from the pool is then as safe as with SQLAlchemy's `pool_pre_ping`,
except for a server host that vanished without a word in that second; a
statement on such a connection fails as an outage (`is_unavailable`).

JSON columns (the address lists every listed email carries) are decoded by
pydantic_core's parser, several times faster than the standard library's.

A database that is down, unreachable or locked surfaces as a SQLAlchemy
`DBAPIError`; `is_unavailable` tells those apart from errors in a statement,
by type: each layer turns them into its own answer (the sync engine retries,
the API says 503).
"""

from __future__ import annotations

import select
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from sqlite3 import Connection as SQLiteConnection

import psycopg
from pydantic_core import from_json
from sqlalchemy import URL, Dialect, Engine, create_engine, event, make_url, text
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, InvalidatePoolError, OperationalError
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlmodel import Session

SQLITE_BUSY_TIMEOUT_SECONDS = 30.0
POSTGRES_CONNECT_TIMEOUT_SECONDS = 10
PING_AFTER_IDLE_SECONDS = 1.0
_RETURNED_AT = "imap_bridge_returned_at"  # ConnectionPoolEntry.info key: monotonic seconds


def database_url(url: str) -> URL:
    """Parse `url`, sending bare `postgresql://` (and `postgres://`) to the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        return parsed.set(drivername="postgresql+psycopg")
    return parsed


def _configure_sqlite_connection(
    dbapi_connection: SQLiteConnection, _record: ConnectionPoolEntry
) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def create_db_engine(url: str) -> Engine:
    """Create the engine for `url`; a SQLite file's directory is created if missing."""
    parsed = database_url(url)
    if parsed.get_backend_name() != "sqlite":
        defaults = _unless_in_url(parsed, connect_timeout=POSTGRES_CONNECT_TIMEOUT_SECONDS)
        engine = create_engine(parsed, connect_args=defaults, json_deserializer=from_json)
        event.listen(engine.pool, "connect", _note_return)
        event.listen(engine.pool, "checkin", _note_return)
        event.listen(engine.pool, "checkout", partial(_ping_if_in_doubt, engine.dialect))
        return engine
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # sqlite3's `timeout` is SQLite's busy timeout.
    defaults = _unless_in_url(parsed, timeout=SQLITE_BUSY_TIMEOUT_SECONDS)
    engine = create_engine(
        parsed,
        connect_args={"check_same_thread": False, **defaults},
        json_deserializer=from_json,
    )
    event.listen(engine, "connect", _configure_sqlite_connection)
    return engine


def _note_return(dbapi_connection: object, record: ConnectionPoolEntry) -> None:
    record.info[_RETURNED_AT] = time.monotonic()


def _ping_if_in_doubt(
    dialect: Dialect,
    dbapi_connection: DBAPIConnection,
    record: ConnectionPoolEntry,
    _proxy: PoolProxiedConnection,
) -> None:
    """Ping a connection leaving the pool if it idled or the server spoke; drop it if dead.

    Raising InvalidatePoolError makes the pool discard this connection and every
    older one, and hand out a new connection, as `pool_pre_ping` does.
    """
    idle = time.monotonic() - record.info.get(_RETURNED_AT, 0.0)
    if idle < PING_AFTER_IDLE_SECONDS and not _server_spoke(dbapi_connection):
        return
    try:
        dialect.do_ping(dbapi_connection)  # outside a transaction, as `pool_pre_ping` does
    except psycopg.Error as exc:
        raise InvalidatePoolError(f"the pooled connection is dead: {exc}") from exc


def _server_spoke(connection: DBAPIConnection) -> bool:
    """Say whether the socket of an idle connection has input (a FATAL, the end of stream)."""
    try:
        readable, _, _ = select.select([connection.fileno()], [], [], 0)
    except (psycopg.Error, OSError, ValueError):  # closed, or its socket is gone
        return True
    return bool(readable)


def _unless_in_url(url: URL, **defaults: float) -> dict[str, float]:
    """Return the driver arguments of `defaults` that the URL does not set in its query."""
    return {name: value for name, value in defaults.items() if name not in url.query}


# SQLite's result codes (primary, the low byte) of a database that cannot serve now.
_SQLITE_UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_PROTOCOL,
    }
)


def is_unavailable(error: DBAPIError) -> bool:
    """Say whether `error` means the database cannot serve now (down, unreachable, locked).

    The driver's OperationalError is that class of error on both backends (a refused
    or lost connection, "database is locked"); any error SQLAlchemy recognised as a
    lost connection (`connection_invalidated`) is one too. sqlite3 also raises
    OperationalError for a statement it cannot run ("no such table"): its result
    code tells those apart.
    """
    if error.connection_invalidated:
        return True
    if not isinstance(error, OperationalError):
        return False
    code = getattr(error.orig, "sqlite_errorcode", None)
    return code is None or (code & 0xFF) in _SQLITE_UNAVAILABLE


def ping_database(engine: Engine) -> None:
    """Run `SELECT 1` on a pooled connection; raise what the driver raises when it cannot."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """Yield a session that commits when the block succeeds and rolls back when it raises.

    Objects stay readable after the block (`expire_on_commit=False`), so a job
    or a command can report what it wrote without another query.
    """
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
