"""What the schema itself guarantees, checked on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from app.db import session_scope
from app.db.models import (
    Attachment,
    Email,
    EmailFolder,
    Event,
    Folder,
    Mailbox,
    MailboxStatus,
    Model,
    Notification,
    SyncRun,
)
from tests.support.factories import create_email, create_folder, create_mailbox, id_of, link_email


def count(session: Session, model: type[Model]) -> int:
    return session.exec(select(func.count()).select_from(model)).one()


def test_a_uid_is_linked_to_one_email_per_folder(engine: Engine) -> None:
    with session_scope(engine) as session:
        mailbox = create_mailbox(session)
        inbox = create_folder(session, mailbox)
        archive = create_folder(session, mailbox, full_name="Archive", name="Archive")
        first, second = create_email(session, mailbox), create_email(session, mailbox)
        link_email(session, first, inbox, uid=7)
        link_email(session, second, archive, uid=7)  # the same UID in another folder is fine

    with pytest.raises(IntegrityError), session_scope(engine) as session:
        link_email(session, second, inbox, uid=7)


def test_deleting_a_mailbox_deletes_its_local_mail_and_keeps_its_events(engine: Engine) -> None:
    with session_scope(engine) as session:
        doomed, kept = create_mailbox(session), create_mailbox(session)
        for mailbox in (doomed, kept):
            folder = create_folder(session, mailbox)
            email = create_email(session, mailbox, has_attachments=True)
            link_email(session, email, folder, uid=1)
            session.add(Attachment(email_id=id_of(email), n=0, part_id="2", filename="a.pdf"))
            session.add(SyncRun(mailbox_id=id_of(mailbox)))
            session.add(Notification(user_id="user-1", mailbox_id=mailbox.id, kind="k", title="t"))
        event = Event(type="mailbox.synced", mailbox_id=doomed.id)
        session.add(event)

    with session_scope(engine) as session:
        session.delete(session.get_one(Mailbox, doomed.id))

    with session_scope(engine) as session:
        for model in (Mailbox, Folder, Email, EmailFolder, Attachment, SyncRun, Notification):
            assert count(session, model) == 1, model.__name__
        assert session.exec(select(Folder.mailbox_id)).one() == kept.id
        assert session.get_one(Event, event.id).mailbox_id is None


def test_system_mailboxes_are_unique_per_address(engine: Engine) -> None:
    with session_scope(engine) as session:
        create_mailbox(session, owner_user_id=None, email_address="crm@example.com")

    with pytest.raises(IntegrityError), session_scope(engine) as session:
        create_mailbox(session, owner_user_id=None, email_address="crm@example.com")


def test_an_owner_registers_an_address_once_while_others_may_share_it(engine: Engine) -> None:
    with session_scope(engine) as session:
        for owner in ("user-1", "user-2", None):
            create_mailbox(session, owner_user_id=owner, email_address="team@example.com")

    with pytest.raises(IntegrityError), session_scope(engine) as session:
        create_mailbox(session, owner_user_id="user-1", email_address="team@example.com")


def test_deleting_a_folder_keeps_its_subfolders_at_the_top(engine: Engine) -> None:
    with session_scope(engine) as session:
        mailbox = create_mailbox(session)
        parent = create_folder(session, mailbox, full_name="Projects", name="Projects")
        child = create_folder(
            session, mailbox, full_name="Projects/Acme", name="Acme", parent_id=parent.id
        )

    with session_scope(engine) as session:
        session.delete(session.get_one(Folder, parent.id))

    with session_scope(engine) as session:
        assert session.get_one(Folder, child.id).parent_id is None


def test_event_ids_only_grow_even_after_the_newest_is_deleted(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add(Event(type="mailbox.synced"))
        newest = Event(type="mailbox.synced")
        session.add(newest)

    with session_scope(engine) as session:
        session.delete(session.get_one(Event, newest.id))

    with session_scope(engine) as session:
        later = Event(type="mailbox.synced")
        session.add(later)
        session.flush()
        assert later.id is not None
        assert newest.id is not None
        assert later.id > newest.id


def test_values_read_back_as_written(engine: Engine) -> None:
    expires = datetime(2030, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    addresses = [
        {"name": "Bob Example", "email": "bob@example.com"},
        {"name": None, "email": "c@x.org"},
    ]
    with session_scope(engine) as session:
        mailbox = create_mailbox(
            session, token_expires_at=expires, status=MailboxStatus.AUTH_FAILED
        )
        email = create_email(session, mailbox, to=addresses, gm_msgid=2**62)

    with session_scope(engine) as session:
        stored_mailbox = session.get_one(Mailbox, mailbox.id)
        stored_email = session.get_one(Email, email.id)
        assert stored_mailbox.token_expires_at == expires
        assert stored_mailbox.token_expires_at.tzinfo == UTC
        assert stored_mailbox.created_at.tzinfo == UTC
        assert stored_mailbox.status is MailboxStatus.AUTH_FAILED
        assert stored_email.to == addresses
        assert stored_email.gm_msgid == 2**62
