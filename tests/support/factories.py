"""Plain factory functions: a valid row with defaults, any column overridable.

`create_mailbox` is the one way tests and the bench make a mailbox row; `account_mailbox`
gives it the columns the API stores for an account of a test server.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from sqlmodel import Session

from app.db.models import Email, EmailFolder, Folder, Mailbox
from app.imap import FolderType, Security
from tests.support.dovecot import MailUser
from tests.support.imap_account import ImapAccount

# add_mailbox(user, **columns) -> mailbox id: registers a Dovecot user as a mailbox.
MailboxFactory = Callable[..., int]


def id_of(row: Mailbox | Folder | Email) -> int:
    """Return the primary key of a flushed row; it is None only before the INSERT."""
    assert row.id is not None
    return row.id


def create_mailbox(session: Session, **overrides: Any) -> Mailbox:
    values: dict[str, Any] = {
        "owner_user_id": "user-1",
        "email_address": f"{secrets.token_hex(4)}@example.com",
        "host": "imap.example.com",
        "username": "user",
        "password_enc": "not-a-real-token",
    }
    mailbox = Mailbox(**(values | overrides))
    session.add(mailbox)
    session.flush()
    return mailbox


def account_mailbox(account: ImapAccount, password_enc: str) -> dict[str, Any]:
    """Return the columns the API stores for `account`, its password encrypted as given.

    Dovecot's users connect over TLS; Cyrus and Courier serve plain IMAP only.
    """
    host, port = account.address()
    security = Security.NONE
    if isinstance(account, MailUser):
        port, security = account.dovecot.tls_port, Security.SSL
    return {
        "owner_user_id": "crm-user-1",
        "owner_email": "owner@example.com",
        "email_address": f"{account.name}@example.com",
        "host": host,
        "port": port,
        "security": security,
        "username": account.name,
        "password_enc": password_enc,
    }


def create_folder(session: Session, mailbox: Mailbox, **overrides: Any) -> Folder:
    values: dict[str, Any] = {
        "mailbox_id": mailbox.id,
        "full_name": "INBOX",
        "name": "INBOX",
        "type": FolderType.INBOX,
        "sync_enabled": True,
    }
    folder = Folder(**(values | overrides))
    session.add(folder)
    session.flush()
    return folder


def create_email(session: Session, mailbox: Mailbox, **overrides: Any) -> Email:
    message_id = f"<{secrets.token_hex(8)}@example.com>"
    values: dict[str, Any] = {
        "mailbox_id": mailbox.id,
        "identity": f"mid:{message_id}",
        "message_id": message_id,
        "subject": "Hello",
    }
    email = Email(**(values | overrides))
    session.add(email)
    session.flush()
    return email


def link_email(session: Session, email: Email, folder: Folder, uid: int) -> EmailFolder:
    link = EmailFolder(email_id=id_of(email), folder_id=id_of(folder), uid=uid)
    session.add(link)
    session.flush()
    return link
