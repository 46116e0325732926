"""Run migrations against the URL a caller passed, else the service's DATABASE_URL.

`app.db.migrate.alembic_config(url)` passes the URL as the `database_url`
config attribute; the bare `alembic` command falls back to the settings.
Autogenerate always renders batch operations: they are plain ALTERs on
PostgreSQL and the copy-and-move SQLite needs, so one script serves both.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from app.config import get_settings
from app.db.engine import create_db_engine, database_url
from app.db.models import metadata

MIGRATION_LOCK_KEY = 0x696D6170  # "imap": any constant no other lock holder uses

config = context.config

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)


def target_url() -> str:
    url = config.attributes.get("database_url")
    return str(url) if url is not None else get_settings().database_url


def run_migrations_offline() -> None:
    """Write the SQL to stdout (`alembic upgrade --sql`) instead of running it."""
    context.configure(
        url=database_url(target_url()),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run every pending migration in one transaction that holds the database's migration lock.

    Processes that start together thus migrate one after the other, and a
    failed migration leaves the schema as it was. SQLite: `BEGIN IMMEDIATE`
    takes the write lock (its DDL is transactional, but the driver would not
    open a transaction for it); foreign keys are switched off before, since a
    batch migration drops and re-creates tables and would otherwise
    cascade-delete the children's rows. PostgreSQL: a transaction-level
    advisory lock.
    """
    engine = create_db_engine(target_url())
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
                connection.commit()
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            elif connection.dialect.name == "postgresql":
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
            context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
