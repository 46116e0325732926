"""Throwaway databases for tests, on SQLite and PostgreSQL alike.

Migrations run once per backend per test session, into a template; each test
then gets its own copy (a file copy on SQLite, `CREATE DATABASE ... TEMPLATE`
on PostgreSQL), so tests commit for real, use several connections and
threads, and never see each other's rows.

PostgreSQL is the server on 127.0.0.1:5432, reached as superuser through its
`test` database (override with TEST_POSTGRES_ADMIN_URL). Databases are named
`imap_bridge_test_<random>`. A test's own database is dropped once the test ends, by
a thread of its own and together with any others released meanwhile: each DROP
DATABASE waits for a checkpoint (0.3 to 1.5 s here), which then overlaps the next
tests and is shared by the drops under way, instead of adding up, one after the
other, at the session's end. The templates go at the end of the session. When the
server does not answer the PostgreSQL tests are skipped, or fail when the CI
environment variable is set: CI must not pass without them.
"""

from __future__ import annotations

import os
import queue
import secrets
import shutil
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import make_url

from app.db.migrate import upgrade_database

Backend = Literal["sqlite", "postgresql"]
BACKENDS: tuple[Backend, ...] = ("sqlite", "postgresql")

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


class ThrowawayDatabases(ABC):
    """Create databases on one backend; remember them so they can all be dropped."""

    def __init__(self) -> None:
        self._template: str | None = None

    @abstractmethod
    def create_empty(self) -> str:
        """Return the URL of a new database with no tables."""

    @abstractmethod
    def _copy(self, template_url: str) -> str:
        """Return the URL of a new database holding what `template_url` holds."""

    @abstractmethod
    def drop_all(self) -> None:
        """Remove every database this object created."""

    @abstractmethod
    def release(self, url: str) -> None:
        """Say the test that had `url` is over; the database may go before `drop_all`."""

    def create_migrated(self) -> str:
        """Return the URL of a new database at the newest migration."""
        if self._template is None:
            self._template = self.create_empty()
            upgrade_database(self._template)
        return self._copy(self._template)


_SIDE_FILES = ("-journal", "-wal", "-shm")  # what SQLite keeps beside a database file


class SQLiteDatabases(ThrowawayDatabases):
    def __init__(self, directory: Path) -> None:
        super().__init__()
        self._directory = directory

    def _new_path(self) -> Path:
        return self._directory / f"imap_bridge_test_{secrets.token_hex(6)}.db"

    def create_empty(self) -> str:
        return f"sqlite:///{self._new_path()}"

    def _copy(self, template_url: str) -> str:
        copy = self._new_path()
        shutil.copyfile(str(make_url(template_url).database), copy)
        return f"sqlite:///{copy}"

    def release(self, url: str) -> None:
        database = Path(str(make_url(url).database))
        for path in (database, *(database.with_name(database.name + s) for s in _SIDE_FILES)):
            path.unlink(missing_ok=True)

    def drop_all(self) -> None:
        shutil.rmtree(self._directory, ignore_errors=True)


class PostgresDatabases(ThrowawayDatabases):
    def __init__(self, admin: psycopg.Connection[tuple[object, ...]], admin_url: str) -> None:
        super().__init__()
        self._admin = admin
        self._admin_url = admin_url
        self._names: list[str] = []
        self._dropper = _Dropper(admin_url)

    def _create(self, template: str | None) -> str:
        name = f"imap_bridge_test_{secrets.token_hex(6)}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        self._admin.execute(statement)
        self._names.append(name)
        url = make_url(self._admin_url).set(drivername="postgresql+psycopg", database=name)
        return url.render_as_string(hide_password=False)

    def create_empty(self) -> str:
        return self._create(template=None)

    def _copy(self, template_url: str) -> str:
        return self._create(template=make_url(template_url).database)

    def release(self, url: str) -> None:
        name = make_url(url).database
        if name in self._names:
            self._names.remove(name)
            self._dropper.drop(name)

    def drop_all(self) -> None:
        self._dropper.close()
        _drop_at_once(self._admin_url, [*reversed(self._names), *self._dropper.pending])
        self._names.clear()


DROPS_AT_ONCE = 8


def _drop_at_once(admin_url: str, names: list[str]) -> None:
    """Drop `names`, several at a time: the checkpoint each DROP DATABASE waits for is then
    one for all of them (8 drops took 1.3 s at once, 4.3 s one after the other)."""

    def drop(name: str) -> None:
        with _connect(admin_url) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    with ThreadPoolExecutor(DROPS_AT_ONCE) as pool:
        for _ in pool.map(drop, names):
            pass


class _Dropper:
    """Drop released databases in a thread of their own, what has queued up at once."""

    def __init__(self, admin_url: str) -> None:
        self._admin_url = admin_url
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.pending: list[str] = []  # asked for and not dropped yet
        self._thread = threading.Thread(target=self._run, name="drop-test-databases", daemon=True)
        self._thread.start()

    def drop(self, name: str) -> None:
        self.pending.append(name)
        self._queue.put(name)

    def close(self) -> None:
        """Wait for the drops under way; what is still `pending` then is the caller's."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        closing = False
        while not closing:
            batch = [self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get())
            closing = None in batch
            names = [name for name in batch if name is not None]
            try:
                _drop_at_once(self._admin_url, names)
            except psycopg.Error:
                return  # still pending: `drop_all` drops them, and fails the run if it cannot
            for name in names:
                self.pending.remove(name)


def _connect(admin_url: str) -> psycopg.Connection[tuple[object, ...]]:
    conninfo = make_url(admin_url).set(drivername="postgresql").render_as_string(False)
    return psycopg.connect(conninfo, autocommit=True, connect_timeout=5)


def _connect_admin(admin_url: str) -> psycopg.Connection[tuple[object, ...]]:
    """Connect as superuser, or skip (fail under CI) when PostgreSQL does not answer."""
    try:
        return _connect(admin_url)
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL is not reachable at {admin_url} (TEST_POSTGRES_ADMIN_URL): {exc}"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


@contextmanager
def throwaway_databases(backend: Backend, directory: Path) -> Iterator[ThrowawayDatabases]:
    """Yield a database factory for `backend` and drop what it made on the way out."""
    databases: ThrowawayDatabases
    if backend == "sqlite":
        databases = SQLiteDatabases(directory)
        try:
            yield databases
        finally:
            databases.drop_all()
        return
    with _connect_admin(POSTGRES_ADMIN_URL) as admin:
        databases = PostgresDatabases(admin, POSTGRES_ADMIN_URL)
        try:
            yield databases
        finally:
            databases.drop_all()
