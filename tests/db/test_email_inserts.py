"""Bulk email inserts hand back each row's own id, on both backends."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import col, select

from app.db import session_scope
from app.db.models import Email
from app.db.repositories.emails import insert_emails
from tests.support.factories import create_email, create_mailbox, id_of


def email_row(mailbox_id: int, n: int) -> dict[str, object]:
    return {
        "mailbox_id": mailbox_id,
        "identity": f"identity-{n}",
        "subject": f"message {n}",
        "to": [],
        "cc": [],
        "bcc": [],
        "reply_to": [],
        "size": 100 + n,
        "seen": False,
        "flagged": False,
        "answered": False,
        "draft": False,
        "has_attachments": False,
    }


def test_ids_come_back_in_the_order_of_the_rows(engine: Engine) -> None:
    with session_scope(engine) as session:
        mailbox = create_mailbox(session)
        create_email(session, mailbox)  # ids do not start at 1
        mailbox_id = id_of(mailbox)
    with session_scope(engine) as session:
        ids = insert_emails(session, [email_row(mailbox_id, n) for n in range(250)])
        single = insert_emails(session, [email_row(mailbox_id, 250)])
    with session_scope(engine) as session:
        rows = session.exec(select(Email.id, Email.subject).where(col(Email.id).in_(ids)))
        stored = dict(rows.all())
        assert len(set(ids)) == 250
        assert [stored[email_id] for email_id in ids] == [f"message {n}" for n in range(250)]
        assert session.exec(select(Email.subject).where(Email.id == single[0])).one() == (
            "message 250"
        )
