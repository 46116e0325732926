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
               first chunk ----- not there (expunged) ---> next link
               chunks, one partial FETCH each, as the caller reads them
    no link left ----------------------------------------> MessageGoneError

Folders are examined read-only, so a download never sets \\Seen. Content
streams in IMAP_DOWNLOAD_CHUNK_BYTES chunks, so a message of any size costs
one chunk of memory. Everything up to the first chunk happens before the
download is handed back, so every failure that has an answer (not found, gone,
refused credentials, an unreachable server) is raised while the caller can
still answer with it. The session ends when the chunks are exhausted or
closed, and within IMAP_OPERATION_TIMEOUT in any case.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.config import Settings
from app.db import session_scope
from app.db.models import Mailbox
from app.db.repositories.emails import (
    MessageCopy,
    email_mailbox_id,
    get_attachment,
    message_copies,
)
from app.db.repositories.mailboxes import get_mailbox
from app.imap import EmailManager
from app.imap.errors import FolderNotFound
from app.security import SecretBox
from app.sync.credentials import connect_mailbox, interactive_login_options
from app.sync.errors import AttachmentNotFoundError, EmailNotFoundError, MessageGoneError

# Start downloading something of one message by UID in the selected folder; None when gone.
_Download = Callable[[EmailManager, int], Iterator[bytes] | None]


@dataclass(frozen=True, slots=True)
class AttachmentContent:
    """A decoded attachment's chunks (close them to end the session early) and what it is."""

    filename: str | None
    content_type: str
    content: Generator[bytes]


def fetch_message_source(
    engine: Engine, settings: Settings, secrets: SecretBox, email_id: int
) -> Generator[bytes]:
    """Start streaming the RFC 5322 source of the email from the server."""
    with session_scope(engine) as session:
        mailbox, copies = locate_copies(session, email_id)
    chunk_bytes = settings.imap_download_chunk_bytes
    return _started(
        _download(
            engine,
            mailbox,
            copies,
            settings=settings,
            secrets=secrets,
            download=lambda mail, uid: mail.source_chunks(uid, chunk_bytes),
        )
    )


def fetch_attachment(
    engine: Engine, settings: Settings, secrets: SecretBox, email_id: int, n: int
) -> AttachmentContent:
    """Start streaming attachment `n` of the email from the server, decoded."""
    with session_scope(engine) as session:
        mailbox, copies = locate_copies(session, email_id)
        attachment = get_attachment(session, email_id, n)
    if attachment is None:
        raise AttachmentNotFoundError(f"email {email_id} has no attachment {n}")
    part_id, chunk_bytes = attachment.part_id, settings.imap_download_chunk_bytes
    content = _download(
        engine,
        mailbox,
        copies,
        settings=settings,
        secrets=secrets,
        download=lambda mail, uid: mail.part_chunks(uid, part_id, chunk_bytes),
    )
    return AttachmentContent(attachment.filename, attachment.content_type, _started(content))


def locate_copies(session: Session, email_id: int) -> tuple[Mailbox, list[MessageCopy]]:
    """Return the email's mailbox and where on the server the message was last seen."""
    mailbox_id = email_mailbox_id(session, email_id)
    mailbox = get_mailbox(session, mailbox_id) if mailbox_id is not None else None
    if mailbox is None:
        raise EmailNotFoundError(f"email {email_id} does not exist")
    return mailbox, message_copies(session, email_id)


def _started(chunks: Generator[bytes]) -> Generator[bytes]:
    """Run `chunks` up to its first chunk now, so that whatever stops it raises here."""
    first = next(chunks)

    def resumed() -> Generator[bytes]:
        try:
            yield first
            yield from chunks
        finally:
            chunks.close()

    return resumed()


def _download(
    engine: Engine,
    mailbox: Mailbox,
    copies: list[MessageCopy],
    *,
    settings: Settings,
    secrets: SecretBox,
    download: _Download,
) -> Generator[bytes]:
    """Try each copy in turn on one session; raise MessageGoneError when none is left."""
    with closing(selected_copies(engine, mailbox, copies, settings, secrets)) as found:
        for mail, place in found:
            chunks = download(mail, place.uid)
            if chunks is not None:
                yield from chunks
                return
    raise MessageGoneError("no folder on the server holds this message any more")


def selected_copies(
    engine: Engine,
    mailbox: Mailbox,
    copies: list[MessageCopy],
    settings: Settings,
    secrets: SecretBox,
    *,
    readonly: bool = True,
) -> Generator[tuple[EmailManager, MessageCopy]]:
    """Select each copy's folder in turn on one session (opened only if there is a copy),
    passing over a folder that is gone or whose UIDVALIDITY changed (the UID now names
    another message, RFC 3501 2.3.1.1); close the generator to end the session."""
    if not copies:
        return
    options = interactive_login_options(settings)
    with connect_mailbox(engine, mailbox, settings, secrets, options) as connection:
        mail = EmailManager(connection)
        for place in copies:
            try:
                selected = mail.select_folder(place.folder_name, readonly=readonly)
            except FolderNotFound:
                continue
            if place.uidvalidity is None or selected.uidvalidity == place.uidvalidity:
                yield mail, place
