"""Engines and sessions behave the same on both backends; SQLite copes with concurrency."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import select

from app.db import create_db_engine, session_scope
from app.db.engine import is_unavailable
from app.db.models import Mailbox
from tests.support.factories import create_mailbox


def test_session_scope_commits_on_success_and_rolls_back_on_error(engine: Engine) -> None:
    with session_scope(engine) as session:
        create_mailbox(session, email_address="kept@example.com")

    def register_then_fail() -> None:
        with session_scope(engine) as session:
            create_mailbox(session, email_address="discarded@example.com")
            raise RuntimeError("the job failed after writing")

    with pytest.raises(RuntimeError, match="after writing"):
        register_then_fail()

    with session_scope(engine) as session:
        addresses = session.exec(select(Mailbox.email_address)).all()
    assert addresses == ["kept@example.com"]


def test_a_sqlite_file_in_a_missing_directory_is_created(tmp_path: Path) -> None:
    database = tmp_path / "not" / "yet" / "there.db"
    engine = create_db_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as connection:
            connection.execute(text("CREATE TABLE t (x INTEGER)"))
    finally:
        engine.dispose()
    assert database.is_file()


def test_a_plain_postgresql_url_uses_psycopg_3() -> None:
    engine = create_db_engine("postgresql://someone@db.invalid/imap_bridge")
    assert engine.dialect.driver == "psycopg"


def test_a_sqlite_writer_waits_for_another_writer_instead_of_failing(tmp_path: Path) -> None:
    database = tmp_path / "shared.db"
    engine = create_db_engine(f"sqlite:///{database}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))

    # Another process's long write transaction, committed half a second from now.
    other = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")
    timer = threading.Timer(0.5, other.execute, args=("COMMIT",))
    timer.start()
    try:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES (2)"))
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT x FROM t ORDER BY x")).scalars().all()
    finally:
        timer.join()
        other.close()
        engine.dispose()
    assert rows == [1, 2]


def test_a_locked_sqlite_file_is_an_outage_and_a_missing_table_is_not(tmp_path: Path) -> None:
    database = tmp_path / "locked.db"
    engine = create_db_engine(f"sqlite:///{database}?timeout=0.2")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
    other = sqlite3.connect(database, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(DBAPIError) as locked, engine.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        other.close()
    with pytest.raises(DBAPIError) as missing, engine.begin() as connection:
        connection.execute(text("SELECT x FROM no_such_table"))
    engine.dispose()

    assert is_unavailable(locked.value)  # the sync retries, the API answers 503
    assert not is_unavailable(missing.value)  # a bug or a missing migration: no retry hides it
