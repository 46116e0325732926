"""Download on demand what the local copy leaves on the server: sources and attachments.

The database knows where the message lived at the last sync: one `(folder,
UIDVALIDITY, UID)` per link. Any of them may be stale by now (expunged,
moved, the folder deleted or renumbered), so each is tried in turn on one
session, live folders first::

    email id --- unknown ----------------------------> EmailNotFoundError
      | its links (folder, UIDVALIDITY, UID)
    connect + log in (once)
    each link: EXAMINE folder -- gone -----------------> next link
                 UIDVALIDITY differs from the stored one -> next link
                   (the UID now names another message, RFC 3501 2.3.1.1)
               UID FETCH ------- not there (expunged) ---> next link
               bytes -> done
    no link left ----------------------------------------> MessageGoneError

Folders are examined read-only, so a download never sets \\Seen. The content
is held in memory while it is sent: imapclient returns whole literals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.config import Settings
from app.db import session_scope
from app.db.models import Mailbox
from app.db.repositories.email_queries import (
    MessageCopy,
    email_mailbox_id,
    get_attachment,
    message_copies,
)
from app.db.repositories.mailboxes import get_mailbox
from app.imap import EmailManager
from app.imap.errors import FolderNotFound
from app.security import SecretBox
from app.sync.credentials import connect_mailbox
from app.sync.errors import AttachmentNotFoundError, EmailNotFoundError, MessageGoneError

# Fetch something of one message by UID in the selected folder; None when it is gone.
_Download = Callable[[EmailManager, int], bytes | None]


@dataclass(frozen=True, slots=True)
class AttachmentContent:
    """A decoded attachment and what the database says it is."""

    filename: str | None
    content_type: str
    content: bytes


def fetch_message_source(
    engine: Engine, settings: Settings, secrets: SecretBox, email_id: int
) -> bytes:
    """Return the RFC 5322 source of the email, fetched from the server now."""
    with session_scope(engine) as session:
        mailbox, copies = _locate(session, email_id)
    return _download(
        engine, mailbox, copies, settings=settings, secrets=secrets, download=_raw_source
    )


def fetch_attachment(
    engine: Engine, settings: Settings, secrets: SecretBox, email_id: int, n: int
) -> AttachmentContent:
    """Return attachment `n` of the email, decoded, fetched from the server now."""
    with session_scope(engine) as session:
        mailbox, copies = _locate(session, email_id)
        attachment = get_attachment(session, email_id, n)
    if attachment is None:
        raise AttachmentNotFoundError(f"email {email_id} has no attachment {n}")
    part_id = attachment.part_id
    content = _download(
        engine,
        mailbox,
        copies,
        settings=settings,
        secrets=secrets,
        download=lambda mail, uid: mail.attachment(uid, part_id),
    )
    return AttachmentContent(attachment.filename, attachment.content_type, content)


def _locate(session: Session, email_id: int) -> tuple[Mailbox, list[MessageCopy]]:
    """Return the email's mailbox and where on the server the message was last seen."""
    mailbox_id = email_mailbox_id(session, email_id)
    mailbox = get_mailbox(session, mailbox_id) if mailbox_id is not None else None
    if mailbox is None:
        raise EmailNotFoundError(f"email {email_id} does not exist")
    return mailbox, message_copies(session, email_id)


def _raw_source(mail: EmailManager, uid: int) -> bytes | None:
    return mail.raw(uid)


def _download(
    engine: Engine,
    mailbox: Mailbox,
    copies: list[MessageCopy],
    *,
    settings: Settings,
    secrets: SecretBox,
    download: _Download,
) -> bytes:
    """Try each copy in turn on one session; raise MessageGoneError when none is left."""
    if copies:
        with connect_mailbox(engine, mailbox, settings, secrets) as connection:
            mail = EmailManager(connection)
            for place in copies:
                try:
                    selected = mail.select_folder(place.folder_name)
                except FolderNotFound:
                    continue
                if place.uidvalidity is not None and selected.uidvalidity != place.uidvalidity:
                    continue
                content = download(mail, place.uid)
                if content is not None:
                    return content
    raise MessageGoneError("no folder on the server holds this message any more")
