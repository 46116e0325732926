"""Throwaway databases for tests, on SQLite and PostgreSQL alike.

Migrations run once per backend per test session, into a template; each test
then gets its own copy (a file copy on SQLite, `CREATE DATABASE ... TEMPLATE`
on PostgreSQL), so tests commit for real, use several connections and
threads, and never see each other's rows.

PostgreSQL is the server on 127.0.0.1:5432, reached as superuser through its
`test` database (override with TEST_POSTGRES_ADMIN_URL). Databases are named
`imap_bridge_test_<random>` and dropped at the end of the session. When the
server does not answer the PostgreSQL tests are skipped, or fail when the CI
environment variable is set: CI must not pass without them.
"""

from __future__ import annotations

import os
import secrets
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
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

    def create_migrated(self) -> str:
        """Return the URL of a new database at the newest migration."""
        if self._template is None:
            self._template = self.create_empty()
            upgrade_database(self._template)
        return self._copy(self._template)


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

    def drop_all(self) -> None:
        shutil.rmtree(self._directory, ignore_errors=True)


class PostgresDatabases(ThrowawayDatabases):
    def __init__(self, admin: psycopg.Connection[tuple[object, ...]], admin_url: str) -> None:
        super().__init__()
        self._admin = admin
        self._admin_url = admin_url
        self._names: list[str] = []

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

    def drop_all(self) -> None:
        for name in reversed(self._names):
            self._admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        self._names.clear()


def _connect_admin(admin_url: str) -> psycopg.Connection[tuple[object, ...]]:
    """Connect as superuser, or skip (fail under CI) when PostgreSQL does not answer."""
    conninfo = make_url(admin_url).set(drivername="postgresql").render_as_string(False)
    try:
        return psycopg.connect(conninfo, autocommit=True, connect_timeout=5)
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
