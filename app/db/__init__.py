"""The database layer: SQLModel tables (`app.db.models`), engines, sessions, migrations."""

from __future__ import annotations

from app.db.engine import create_db_engine, session_scope

__all__ = ["create_db_engine", "session_scope"]
