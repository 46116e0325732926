"""The migrations build exactly the modelled schema, can be undone, and run concurrently."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.db import create_db_engine
from app.db.migrate import alembic_config, upgrade_database
from app.db.models import metadata

EVERY_TABLE = {*metadata.tables, "alembic_version"}


def table_names(url: str) -> set[str]:
    engine = create_db_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrations_build_exactly_the_modelled_schema(empty_database_url: str) -> None:
    upgrade_database(empty_database_url)

    engine = create_db_engine(empty_database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_downgrade_to_base_removes_every_table_and_upgrade_rebuilds_them(
    empty_database_url: str,
) -> None:
    upgrade_database(empty_database_url)
    upgrade_database(empty_database_url)  # running `migrate` again is harmless
    command.downgrade(alembic_config(empty_database_url), "base")
    assert table_names(empty_database_url) <= {"alembic_version"}

    upgrade_database(empty_database_url)
    assert table_names(empty_database_url) == EVERY_TABLE


def test_processes_migrating_at_once_all_succeed(empty_database_url: str) -> None:
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=3, mp_context=spawn) as pool:
        runs = [pool.submit(upgrade_database, empty_database_url) for _ in range(3)]
    for run in runs:
        run.result()
    assert table_names(empty_database_url) == EVERY_TABLE
