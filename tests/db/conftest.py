"""Database fixtures: each test runs once on SQLite and once on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from app.db import create_db_engine
from tests.databases import BACKENDS, Backend, ThrowawayDatabases, throwaway_databases


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
