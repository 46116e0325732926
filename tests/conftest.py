"""Shared fixtures: a private Dovecot with a fresh user per test, and a fresh database per
test on each backend (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from app.db import create_db_engine
from app.imap.config import ConnectOptions
from tests.databases import BACKENDS, Backend, ThrowawayDatabases, throwaway_databases
from tests.dovecot import Dovecot, DovecotInstances, MailUser


@pytest.fixture(scope="session")
def dovecot_instances() -> Iterator[DovecotInstances]:
    """Start Dovecots on demand (`.get(condstore=False)`), each once; stop all at the end.

    A start failure raises DovecotError carrying the master output and the Dovecot log.
    """
    instances = DovecotInstances()
    yield instances
    instances.stop_all()


@pytest.fixture(scope="session")
def dovecot(dovecot_instances: DovecotInstances) -> Dovecot:
    """Return the session's Dovecot with CONDSTORE/QRESYNC, STARTTLS and SPECIAL-USE."""
    return dovecot_instances.get()


@pytest.fixture
def mail_user(dovecot: Dovecot) -> MailUser:
    """Return a new user with an empty mailbox, so no two tests share mailbox state."""
    return dovecot.add_user()


@pytest.fixture(scope="session")
def connect_options(dovecot: Dovecot) -> ConnectOptions:
    """Return options that trust the test CA and allow the loopback server."""
    return ConnectOptions(
        connect_timeout=5, read_timeout=10, allow_private_hosts=True, ca_file=dovecot.ca_file
    )


@pytest.fixture(scope="session", params=BACKENDS)
def databases(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ThrowawayDatabases]:
    backend: Backend = request.param
    with throwaway_databases(backend, tmp_path_factory.mktemp(backend)) as factory:
        yield factory


@pytest.fixture
def empty_database_url(databases: ThrowawayDatabases) -> str:
    return databases.create_empty()


@pytest.fixture
def database_url(databases: ThrowawayDatabases) -> str:
    """A database of its own for this test, already migrated to the newest revision."""
    return databases.create_migrated()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    db_engine = create_db_engine(database_url)
    yield db_engine
    db_engine.dispose()
