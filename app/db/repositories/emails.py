"""Queries on `email` and `attachment`: what a sync writes, and the local mail the API reads.

The API reads filtered pages of emails, one email in full, its copies. Pages
are newest first, `(date DESC, id DESC)`, undated mail after all dated mail,
and continue strictly after the position of the last row served (keyset
pagination): mail synced between two pages can never make a page repeat or skip
a row that existed when the listing started. Each page is two index walks at
most, both on `ix_email_mailbox_id_date_id`: the dated rows before the position
(a row-value comparison, `(date, id) < (:date, :id)`), then, once those run
out, the undated ones by id. That keeps PostgreSQL's NULLS FIRST for DESC out
of the ORDER BY and leaves both backends a plain backward index scan.

Filters are substring matches with LIKE (`%` and `_` in a term are escaped):
a full scan of the mailbox's rows that match the other filters, which is fine
for a CRM's mailboxes but no full-text search. Case folding is the
database's: PostgreSQL's ILIKE folds every letter, SQLite's `lower()` only
ASCII ones. The recipient filter looks into the `to`/`cc` JSON arrays with
each backend's JSON table function (`json_each` on SQLite,
`json_array_elements` on PostgreSQL) and compares each address's `name` and
`email` as decoded text: a LIKE on the serialized JSON would match the keys
(`email`, `name`) of every address and miss non-ASCII names, which the JSON
serializer stores as `\\u` escapes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Mapped
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from app.db.models import Attachment, Email, EmailFolder, Folder, MailAddress, Mailbox
from app.db.repositories.results import rows_changed

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
    return rows_changed(result) > 0


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


# What a list shows of each email, read as plain rows: an entity per row (and the
# bodies) would cost more than the query itself.
_SUMMARY_COLUMNS = (
    col(Email.id),
    col(Email.mailbox_id),
    col(Email.message_id),
    col(Email.subject),
    col(Email.from_name),
    col(Email.from_email),
    col(Email.to),
    col(Email.cc),
    col(Email.date),
    col(Email.seen),
    col(Email.flagged),
    col(Email.has_attachments),
    col(Email.size),
    col(Email.thread_key),
)


@dataclass(frozen=True, slots=True)
class EmailFilters:
    """What a listing keeps; every filter given must match (None = no filter)."""

    folder_id: int | None = None
    sender: str | None = None  # substring of the From address or display name
    recipient: str | None = None  # substring of a To or Cc address or display name
    subject: str | None = None
    text: str | None = None  # substring of the subject, the text body or the sender
    since: datetime | None = None  # date >= since
    before: datetime | None = None  # date < before
    seen: bool | None = None
    flagged: bool | None = None
    thread_key: str | None = None


@dataclass(frozen=True, slots=True)
class EmailPosition:
    """Where a page ended: the sort key `(date, id)` of its last email."""

    date: datetime | None
    email_id: int


class FolderUid(NamedTuple):
    """A folder holding the email, and the message's UID there."""

    folder_id: int
    uid: int


@dataclass(frozen=True, slots=True)
class EmailPage:
    """One page of emails, their folder links by email id, and where it ended (None on the last).

    Each row holds the columns of `Email` a list shows (`id`, `subject`, `to`, ...), no bodies.
    """

    rows: list[sa.RowMapping]
    links: dict[int, list[FolderUid]]
    next_position: EmailPosition | None


@dataclass(frozen=True, slots=True)
class EmailDetail:
    """One email with its bodies, the folders holding it and its attachments by `n`."""

    email: Email
    links: list[FolderUid]
    attachments: list[Attachment] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class MessageCopy:
    """One place on the server that held the message when the folder was last synced."""

    folder_name: str
    uidvalidity: int | None
    uid: int


def mailbox_exists(session: Session, mailbox_id: int) -> bool:
    statement = select(Mailbox.id).where(Mailbox.id == mailbox_id)
    return session.exec(statement).first() is not None


def email_page(
    session: Session,
    mailbox_id: int,
    filters: EmailFilters,
    *,
    after: EmailPosition | None,
    limit: int,
) -> EmailPage:
    """Return the `limit` newest emails after `after` that pass `filters`."""
    dialect = session.get_bind().dialect.name
    matching = sa.select(*_SUMMARY_COLUMNS).where(
        col(Email.mailbox_id) == mailbox_id, *_conditions(filters, dialect)
    )
    wanted = limit + 1  # one more than shown tells whether another page follows
    rows: list[sa.RowMapping] = []
    if after is None or after.date is not None:
        dated = matching.where(col(Email.date).is_not(None))
        if after is not None:
            dated = dated.where(
                sa.tuple_(col(Email.date), col(Email.id)) < sa.tuple_(after.date, after.email_id)
            )
        ordered = dated.order_by(col(Email.date).desc(), col(Email.id).desc())
        rows.extend(session.execute(ordered.limit(wanted)).mappings())
    if len(rows) < wanted:
        undated = matching.where(col(Email.date).is_(None))
        if after is not None and after.date is None:
            undated = undated.where(col(Email.id) < after.email_id)
        ordered = undated.order_by(col(Email.id).desc())
        rows.extend(session.execute(ordered.limit(wanted - len(rows))).mappings())
    page = rows[:limit]
    next_position = None
    if len(rows) > limit:
        next_position = EmailPosition(page[-1]["date"], page[-1]["id"])
    links = folder_links(session, [row["id"] for row in page])
    return EmailPage(page, links, next_position)


def folder_links(session: Session, email_ids: Sequence[int]) -> dict[int, list[FolderUid]]:
    """Map each of `email_ids` to its folder links, in one query (ordered by folder, UID)."""
    links: dict[int, list[FolderUid]] = {email_id: [] for email_id in email_ids}
    if not email_ids:
        return links
    statement = (
        sa.select(col(EmailFolder.email_id), col(EmailFolder.folder_id), col(EmailFolder.uid))
        .where(col(EmailFolder.email_id).in_(email_ids))
        .order_by(col(EmailFolder.folder_id), col(EmailFolder.uid))
    )
    for email_id, folder_id, uid in session.execute(statement):
        links[email_id].append(FolderUid(folder_id, uid))
    return links


def email_detail(session: Session, email_id: int) -> EmailDetail | None:
    """Return the email with everything the API shows of it, or None when it does not exist."""
    email = session.get(Email, email_id)
    if email is None:
        return None
    attachments = session.exec(
        select(Attachment).where(Attachment.email_id == email_id).order_by(col(Attachment.n))
    )
    return EmailDetail(email, folder_links(session, [email_id])[email_id], list(attachments))


def email_mailbox_id(session: Session, email_id: int) -> int | None:
    """Return the mailbox holding the email, or None when the email does not exist."""
    return session.exec(select(Email.mailbox_id).where(Email.id == email_id)).first()


def get_attachment(session: Session, email_id: int, n: int) -> Attachment | None:
    statement = select(Attachment).where(Attachment.email_id == email_id, Attachment.n == n)
    return session.exec(statement).first()


def message_copies(session: Session, email_id: int) -> list[MessageCopy]:
    """Return where the server held the message: live folders first, then oldest link first."""
    statement = (
        select(Folder.full_name, Folder.uidvalidity, EmailFolder.uid)
        .join(Folder, col(Folder.id) == EmailFolder.folder_id)
        .where(EmailFolder.email_id == email_id)
        .order_by(col(Folder.outdated_since).is_not(None), col(EmailFolder.id))
    )
    return [
        MessageCopy(name, uidvalidity, uid) for name, uidvalidity, uid in session.exec(statement)
    ]


def _conditions(filters: EmailFilters, dialect: str) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.folder_id is not None:
        in_folder = sa.exists().where(
            col(EmailFolder.email_id) == Email.id, col(EmailFolder.folder_id) == filters.folder_id
        )
        conditions.append(in_folder)
    if filters.sender is not None:
        conditions.append(
            _any_contains([col(Email.from_email), col(Email.from_name)], filters.sender)
        )
    if filters.recipient is not None:
        conditions.append(
            sa.or_(
                _addresses_contain(col(Email.to), filters.recipient, dialect),
                _addresses_contain(col(Email.cc), filters.recipient, dialect),
            )
        )
    if filters.subject is not None:
        conditions.append(_any_contains([col(Email.subject)], filters.subject))
    if filters.text is not None:
        searched = [
            col(Email.subject),
            col(Email.text_body),
            col(Email.from_email),
            col(Email.from_name),
        ]
        conditions.append(_any_contains(searched, filters.text))
    if filters.since is not None:
        conditions.append(col(Email.date) >= filters.since)
    if filters.before is not None:
        conditions.append(col(Email.date) < filters.before)
    if filters.seen is not None:
        conditions.append(col(Email.seen) == filters.seen)
    if filters.flagged is not None:
        conditions.append(col(Email.flagged) == filters.flagged)
    if filters.thread_key is not None:
        conditions.append(col(Email.thread_key) == filters.thread_key)
    return conditions


def _any_contains(
    columns: Sequence[ColumnElement[Any] | Mapped[Any]], needle: str
) -> ColumnElement[bool]:
    """Case-insensitive substring match in any of `columns`; LIKE wildcards are literal."""
    return sa.or_(*(column.icontains(needle, autoescape=True) for column in columns))


def _addresses_contain(
    column: Mapped[list[MailAddress]], needle: str, dialect: str
) -> ColumnElement[bool]:
    """Match `needle` in the name or email of any address of a JSON address list."""
    fields: list[ColumnElement[str]]
    if dialect == "postgresql":
        entries = sa.func.json_array_elements(column).table_valued("value")
        fields = [entries.c.value.op("->>", return_type=sa.Text)(key) for key in ("email", "name")]
    else:
        entries = sa.func.json_each(column).table_valued("value")
        fields = [
            sa.func.json_extract(entries.c.value, f"$.{key}", type_=sa.Text)
            for key in ("email", "name")
        ]
    return sa.exists().select_from(entries).where(_any_contains(fields, needle))
