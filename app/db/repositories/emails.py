"""Queries on `email` and `attachment` that the sync engine needs."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from app.db.models import Attachment, Email, EmailFolder

Row = Mapping[str, Any]


def relinkable_emails(
    session: Session, mailbox_id: int, folder_id: int, identities: Iterable[str]
) -> dict[str, int]:
    """Map identities to emails of the mailbox that are not yet in `folder_id`.

    A message that shows up in a second folder (a copy, a move, a folder whose
    UIDVALIDITY changed) is linked to the email already stored instead of
    stored twice. Emails already in this folder are left out: two UIDs of one
    folder are two messages, however alike their headers are.
    """
    wanted = list(set(identities))
    found: dict[str, int] = {}
    in_folder = select(EmailFolder.email_id).where(EmailFolder.folder_id == folder_id)
    for start in range(0, len(wanted), 500):
        statement = (
            select(Email.identity, Email.id)
            .where(
                Email.mailbox_id == mailbox_id,
                col(Email.identity).in_(wanted[start : start + 500]),
                col(Email.id).not_in(in_folder),
            )
            .order_by(col(Email.id))
        )
        for identity, email_id in session.exec(statement):
            if email_id is not None:
                found.setdefault(identity, email_id)
    return found


def insert_emails(session: Session, rows: Sequence[Row]) -> list[int]:
    """Insert email rows; return their ids in the order of `rows`.

    Plain column values skip building a model object per row, which costs
    more than the INSERT itself when a sync stores thousands of messages.
    PostgreSQL returns the ids of many rows per statement. SQLite can only
    promise their order one row per statement, so there the first row goes
    alone and the others take the ids after its own in one executemany: that
    INSERT holds the database's write lock until commit, and SQLite numbers a
    new row one above the largest id, so nobody else can take those ids.
    """
    if not rows:
        return []
    table = _table(Email)
    if session.get_bind().dialect.name != "sqlite":
        statement = sa.insert(table).returning(table.c.id, sort_by_parameter_order=True)
        return list(session.execute(statement, list(rows)).scalars())
    first = session.execute(sa.insert(table).returning(table.c.id), [rows[0]]).scalar_one()
    ids = list(range(first, first + len(rows)))
    if len(rows) > 1:
        session.execute(
            sa.insert(table), [{**row, "id": i} for row, i in zip(rows[1:], ids[1:], strict=True)]
        )
    return ids


def insert_links(session: Session, rows: Sequence[Row]) -> None:
    """Insert `email_folder` rows (email_id, folder_id, uid) in one executemany."""
    if rows:
        session.execute(sa.insert(_table(EmailFolder)), list(rows))


def insert_attachments(session: Session, rows: Sequence[Row]) -> None:
    """Insert attachment rows in one executemany."""
    if rows:
        session.execute(sa.insert(_table(Attachment)), list(rows))


def _table(model: type[Email | EmailFolder | Attachment]) -> sa.Table:
    """Return the model's table: Core statements on it skip the ORM's per-row bookkeeping."""
    table = sa.inspect(model).local_table
    assert isinstance(table, sa.Table)
    return table


def set_flags(session: Session, email_id: int, *, seen: bool | None, flagged: bool | None) -> bool:
    """Store the flags given (None: leave as it is); return whether anything changed."""
    values = {
        name: value for name, value in (("seen", seen), ("flagged", flagged)) if value is not None
    }
    differs = sa.or_(*(getattr(Email, name) != value for name, value in values.items()))
    result = session.execute(
        sa.update(Email).where(col(Email.id) == email_id, differs).values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def email_states(session: Session, email_ids: Collection[int]) -> list[dict[str, Any]]:
    """Return what `email.updated` says of each email: its flags and the folders holding it.

    Ordered by id; an email that no longer exists is left out, one in no folder has none.
    """
    wanted = sorted(set(email_ids))
    states: dict[int, dict[str, Any]] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = session.execute(
            sa.select(col(Email.id), col(Email.seen), col(Email.flagged)).where(
                col(Email.id).in_(chunk)
            )
        )
        for email_id, seen, flagged in rows:
            states[email_id] = {"id": email_id, "seen": seen, "flagged": flagged, "folders": []}
        links = session.execute(
            sa.select(col(EmailFolder.email_id), col(EmailFolder.folder_id), col(EmailFolder.uid))
            .where(col(EmailFolder.email_id).in_(chunk))
            .order_by(col(EmailFolder.folder_id), col(EmailFolder.uid))
        )
        for email_id, folder_id, uid in links:
            states[email_id]["folders"].append({"folder_id": folder_id, "uid": uid})
    return [states[email_id] for email_id in wanted if email_id in states]


def _orphaned(mailbox_id: int) -> sa.ColumnElement[bool]:
    linked = select(EmailFolder.email_id).where(col(EmailFolder.email_id) == Email.id)
    return sa.and_(col(Email.mailbox_id) == mailbox_id, ~linked.exists())


def orphan_email_ids(session: Session, mailbox_id: int) -> set[int]:
    """Return the ids of the mailbox's emails that no folder holds."""
    return set(session.scalars(select(Email.id).where(_orphaned(mailbox_id))))


def delete_orphans(
    session: Session, mailbox_id: int, among: Collection[int] | None = None
) -> list[int]:
    """Delete the mailbox's emails that no folder holds any more (only `among`, if given).

    Return the ids deleted, in order.
    """
    if among is not None and not among:
        return []
    condition = _orphaned(mailbox_id)
    if among is not None:
        condition = sa.and_(condition, col(Email.id).in_(among))
    result = session.execute(sa.delete(Email).where(condition).returning(col(Email.id)))
    return sorted(result.scalars())


def has_mail_outside(session: Session, mailbox_id: int, folder_id: int) -> bool:
    """Say whether the mailbox stores an email that `folder_id` does not hold."""
    in_folder = select(EmailFolder.email_id).where(EmailFolder.folder_id == folder_id)
    statement = select(Email.id).where(
        Email.mailbox_id == mailbox_id, col(Email.id).not_in(in_folder)
    )
    return session.exec(statement.limit(1)).first() is not None


def flag_columns(
    session: Session, email_ids: Sequence[int], columns: Sequence[str]
) -> dict[int, tuple[bool, ...]]:
    """Map each email id that exists to its boolean `columns`, in the order given.

    Read 1,000 ids per statement: a folder without CONDSTORE reports every UID's
    flags, more than a statement may bind.
    """
    selected = [col(getattr(Email, name)) for name in columns]
    found: dict[int, tuple[bool, ...]] = {}
    for start in range(0, len(email_ids), 1000):
        chunk = email_ids[start : start + 1000]
        rows = session.execute(sa.select(col(Email.id), *selected).where(col(Email.id).in_(chunk)))
        found.update((email_id, tuple(values)) for email_id, *values in rows)
    return found


def update_flag_columns(session: Session, changes: Sequence[Row]) -> None:
    """Write each `{"id": ..., column: value}` in one executemany (an UPDATE by primary key)."""
    if changes:
        session.execute(sa.update(Email), changes)
