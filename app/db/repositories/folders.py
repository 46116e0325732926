"""Queries on `folder` and on the links (`email_folder`) that place mail in folders.

Removing links may leave emails in no folder: the functions that remove them
mark the mailbox (`orphans_possible`) in the same transaction.

The folder list the API shows gives each folder with how many synced emails it holds.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from app.db.models import Email, EmailFolder, Folder, Mailbox
from app.db.repositories.results import rows_changed


def mailbox_folders(session: Session, mailbox_id: int) -> list[Folder]:
    """Return every local folder of the mailbox."""
    return list(session.exec(select(Folder).where(Folder.mailbox_id == mailbox_id)))


def update_folder(session: Session, folder_id: int, **values: Any) -> Folder:
    """Write `values` to the folder row, flush, and return the row."""
    row = session.get(Folder, folder_id)
    assert row is not None, "a folder cannot vanish while its mailbox is leased"
    for name, value in values.items():
        setattr(row, name, value)
    session.flush()
    return row


def folder_ids_with_links(session: Session, folder_ids: list[int]) -> set[int]:
    """Return those of `folder_ids` that hold at least one synced email."""
    if not folder_ids:
        return set()
    statement = select(EmailFolder.folder_id).where(col(EmailFolder.folder_id).in_(folder_ids))
    return set(session.exec(statement.distinct()))


def linked_uids(session: Session, folder_id: int) -> dict[int, int]:
    """Map every synced UID of the folder to its email id."""
    statement = select(EmailFolder.uid, EmailFolder.email_id).where(
        EmailFolder.folder_id == folder_id
    )
    return dict(session.exec(statement).all())


def linked_identities(session: Session, folder_id: int) -> set[str]:
    """Return the identities of the emails the folder holds."""
    statement = (
        select(Email.identity)
        .join(EmailFolder, col(EmailFolder.email_id) == Email.id)
        .where(EmailFolder.folder_id == folder_id)
    )
    return set(session.exec(statement))


def lowest_linked_uid(session: Session, folder_id: int) -> int | None:
    """Return the smallest synced UID of the folder, or None when it holds no mail."""
    statement = select(func.min(EmailFolder.uid)).where(EmailFolder.folder_id == folder_id)
    return session.exec(statement).one()


def unlink_uids(session: Session, folder_id: int, uids: list[int]) -> int:
    """Remove the folder's links for `uids` (mail expunged there); return how many went."""
    removed = 0
    for start in range(0, len(uids), 500):
        result = session.execute(
            sa.delete(EmailFolder).where(
                col(EmailFolder.folder_id) == folder_id,
                col(EmailFolder.uid).in_(uids[start : start + 500]),
            )
        )
        removed += rows_changed(result)
    if removed:
        _mark_orphans_possible(session, folder_id)
    return removed


def unlink_folder(session: Session, folder_id: int) -> None:
    """Drop every link of the folder (its UIDs are void after a UIDVALIDITY change)."""
    result = session.execute(sa.delete(EmailFolder).where(col(EmailFolder.folder_id) == folder_id))
    if rows_changed(result):
        _mark_orphans_possible(session, folder_id)


def _mark_orphans_possible(session: Session, folder_id: int) -> None:
    """Tell the folder's mailbox that an email may be left in no folder."""
    mailbox_id = select(Folder.mailbox_id).where(Folder.id == folder_id).scalar_subquery()
    session.execute(
        sa.update(Mailbox)
        .where(col(Mailbox.id) == mailbox_id)
        .values(orphans_possible=True)
        .execution_options(synchronize_session=False)
    )


def folders_with_email_counts(session: Session, mailbox_id: int) -> list[tuple[Folder, int]]:
    """Return the mailbox's folders by name, each with its count of synced emails.

    One grouped query (grouping by the primary key lets PostgreSQL and SQLite
    select the other columns). The count is the local copy, the links in
    `email_folder`, not the server's EXISTS: a folder not synced counts 0.
    """
    statement = (
        select(Folder, func.count(col(EmailFolder.id)))
        .outerjoin(EmailFolder, col(EmailFolder.folder_id) == Folder.id)
        .where(Folder.mailbox_id == mailbox_id)
        .group_by(col(Folder.id))
    )
    rows = [(folder, int(emails)) for folder, emails in session.exec(statement)]
    return sorted(rows, key=lambda row: row[0].full_name.casefold())
