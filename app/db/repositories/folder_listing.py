"""The folder list the API shows: each folder with how many synced emails it holds."""

from __future__ import annotations

from sqlmodel import Session, col, func, select

from app.db.models import EmailFolder, Folder


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
