"""Apply the Alembic migrations to any database URL, from code (the CLI, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, inspect

from app.db.models import ApiKey

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"


def alembic_config(url: str) -> Config:
    """Return the project's Alembic configuration aimed at `url`.

    The URL travels as a config attribute, not through `sqlalchemy.url`, so a
    password with `%` in it survives ConfigParser; the caller's logging
    setup is left alone.
    """
    config = Config(ALEMBIC_INI)
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    return config


def upgrade_database(url: str) -> None:
    """Bring the schema of the database at `url` to the newest revision."""
    command.upgrade(alembic_config(url), "head")


def is_migrated(engine: Engine) -> bool:
    """Say whether the database holds the service's tables (it was migrated at least once)."""
    return inspect(engine).has_table(ApiKey.__tablename__)
