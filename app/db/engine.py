"""Engines and sessions for the two supported databases, SQLite and PostgreSQL.

SQLite is the embedded default, shared by API processes and arq workers on
one machine, so every connection turns on what concurrent use needs:
foreign keys (cascades are declared in the schema), WAL (readers never wait
for the writer) and a busy timeout (a writer waits for the lock instead of
failing with "database is locked"). PostgreSQL goes through psycopg 3.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from sqlite3 import Connection as SQLiteConnection

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session

SQLITE_BUSY_TIMEOUT_MS = 30_000


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
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def create_db_engine(url: str) -> Engine:
    """Create the engine for `url`; a SQLite file's directory is created if missing."""
    parsed = database_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"check_same_thread": False})
    event.listen(engine, "connect", _configure_sqlite_connection)
    return engine


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
