"""Store one folder's fetched batches: new emails, relinks, the folder mark, and their events.

    a batch, in one transaction under the lease (app.sync.lease):
      UIDs known from another folder (by identity) ... linked, their flags applied
      fetched messages whose identity is stored ..... linked to that email
      the others ...................................... `email` and `attachment` rows
      arrivals (announced) ............................ `email.updated` for the relinked,
                                                        `email.received` for the new
      the folder mark ................................. `low_uid` down (a backfill) or
                                                        `last_seen_uid` up (arrivals)
    the database refuses the batch for a value ....... each message it refuses alone is
                                                        stored without its content, and
                                                        the batch is written again

The per-folder state machine that decides what to fetch is app.sync.folder_sync.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from app.db import session_scope
from app.db.engine import is_unavailable
from app.db.models import EmailFolder, Folder, Mailbox, persisted_id
from app.db.repositories.emails import (
    has_mail_outside,
    insert_attachments,
    insert_emails,
    insert_links,
    relinkable_emails,
)
from app.db.repositories.events import record_email_updates, record_event
from app.db.repositories.folders import update_folder
from app.imap.message import ParsedMessage
from app.sync.email_rows import attachment_rows, email_row
from app.sync.errors import LeaseLostError
from app.sync.flag_updates import apply_flags
from app.sync.identity import message_identity
from app.sync.lease import Lease


@dataclass(frozen=True, slots=True)
class KnownMessage:
    """A UID whose message the mailbox already stores (found by identity)."""

    email_id: int
    flags: frozenset[str]


@dataclass(frozen=True, slots=True)
class FetchedBatch:
    """One batch of a folder as fetched, and how it is to be written."""

    folder: Folder
    uids: Sequence[int]
    known: dict[int, KnownMessage]  # UIDs whose mail is stored from another folder
    bodies: list[ParsedMessage]  # the other UIDs' messages, downloaded
    newest_first: bool  # a backfill, moving `low_uid` down; else arrivals, `last_seen_uid` up
    announce: bool  # tell the CRM (`email.received`, `email.updated` for relinks)


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """What writing one batch added: new emails, and the bytes of the messages fetched."""

    new: int
    bytes: int


@dataclass(frozen=True, slots=True)
class MailStore:
    """Writes the fetched mail of one mailbox, batch by batch, under the run's lease."""

    engine: Engine
    mailbox: Mailbox
    lease: Lease
    batch_size: int

    def has_mail_outside(self, folder: Folder) -> bool:
        """Say whether the mailbox stores mail that `folder` does not hold (relinks possible)."""
        with session_scope(self.engine) as session:
            return has_mail_outside(session, persisted_id(self.mailbox), persisted_id(folder))

    def known_elsewhere(
        self, folder: Folder, identities: Iterable[tuple[int, str, frozenset[str]]]
    ) -> dict[int, KnownMessage]:
        """Find which of the (UID, identity, flags) hold mail stored from another folder."""
        wanted = list(identities)
        with session_scope(self.engine) as session:
            emails = relinkable_emails(
                session,
                persisted_id(self.mailbox),
                persisted_id(folder),
                (identity for _, identity, _ in wanted),
            )
        known: dict[int, KnownMessage] = {}
        claimed: set[int] = set()
        for uid, identity, flags in wanted:
            email_id = emails.get(identity)
            if email_id is not None and email_id not in claimed:
                claimed.add(email_id)
                known[uid] = KnownMessage(email_id, flags)
        return known

    def write_batch(self, batch: FetchedBatch) -> StoredBatch:
        """Store one fetched batch with the folder mark it advances.

        A batch the database refuses for a value of one message (a failure that is
        neither an outage nor a lost lease) is written again with each message the
        database refuses on its own stored without its content: one message never
        stops the mailbox, and the checkpoint still moves past it.
        """
        bodies = batch.bodies
        try:
            new_ids = self._commit_batch(batch, bodies)
        except Exception as exc:
            if isinstance(exc, LeaseLostError) or _outage(exc):
                raise
            storable = [self._storable(message) for message in bodies]
            if all(kept is message for kept, message in zip(storable, bodies, strict=True)):
                raise  # no message is to blame: the batch fails as a whole
            bodies = storable
            new_ids = self._commit_batch(batch, bodies)
        return StoredBatch(len(new_ids), sum(message.size for message in bodies))

    def _commit_batch(self, batch: FetchedBatch, bodies: list[ParsedMessage]) -> list[int]:
        """Write one batch (with `bodies`) and its folder mark in one transaction.

        Return the new email ids.
        """
        folder, uids, announce = batch.folder, batch.uids, batch.announce
        with self.lease.writing(self.engine) as session:
            relinked = _link_known(session, folder, batch.known)
            new_ids = self._insert(session, folder, bodies, relinked)
            # Arrivals (oldest first, above the high mark) relinked to a stored email are
            # a move or a copy; a backfill's relinks are a first sync's or a reset's rescan.
            if announce and not batch.newest_first:
                record_email_updates(session, self.mailbox, relinked, self.batch_size)
            if announce and new_ids:
                record_event(
                    session,
                    "email.received",
                    self.mailbox,
                    {"folder_id": folder.id, "folder": folder.full_name, "email_ids": new_ids},
                )
            marks: dict[str, Any] = (
                {"low_uid": min(uids)} if batch.newest_first else {"last_seen_uid": max(uids)}
            )
            update_folder(session, persisted_id(folder), **marks)
        return new_ids

    def _storable(self, message: ParsedMessage) -> ParsedMessage:
        """Try the message's rows alone in a transaction rolled back; if the database refuses
        them, return the message without its content (what the FETCH gave, its identity)."""
        with Session(self.engine) as session:
            try:
                row = email_row(persisted_id(self.mailbox), message_identity(message), message)
                [email_id] = insert_emails(session, [row])
                insert_attachments(session, list(attachment_rows(email_id, message)))
            except Exception as exc:
                if _outage(exc):
                    raise
                return message.without_content(
                    f"the database refused the message ({type(exc).__name__}):"
                    " stored without its content"
                )
            finally:
                session.rollback()
        return message

    def _insert(
        self,
        session: Session,
        folder: Folder,
        messages: list[ParsedMessage],
        taken: set[int],
    ) -> list[int]:
        """Store fetched messages; link those whose identity matches an email stored elsewhere.

        The emails linked join `taken` (each takes one UID of the folder).
        """
        folder_id = persisted_id(folder)
        identities = [message_identity(message) for message in messages]
        existing = relinkable_emails(session, persisted_id(self.mailbox), folder_id, identities)
        links: list[dict[str, Any]] = []
        new: list[ParsedMessage] = []
        rows: list[dict[str, Any]] = []
        for message, identity in zip(messages, identities, strict=True):
            email_id = existing.get(identity)
            if email_id is not None and email_id not in taken:
                taken.add(email_id)
                links.append({"email_id": email_id, "folder_id": folder_id, "uid": message.uid})
                continue
            new.append(message)
            rows.append(email_row(persisted_id(self.mailbox), identity, message))
        new_ids = insert_emails(session, rows)
        links.extend(
            {"email_id": email_id, "folder_id": folder_id, "uid": message.uid}
            for email_id, message in zip(new_ids, new, strict=True)
        )
        insert_links(session, links)
        insert_attachments(
            session,
            [
                row
                for email_id, message in zip(new_ids, new, strict=True)
                for row in attachment_rows(email_id, message)
            ],
        )
        return new_ids


def _link_known(session: Session, folder: Folder, known: dict[int, KnownMessage]) -> set[int]:
    for uid, message in known.items():
        session.add(EmailFolder(email_id=message.email_id, folder_id=persisted_id(folder), uid=uid))
    apply_flags(
        session,
        {uid: message.email_id for uid, message in known.items()},
        {uid: message.flags for uid, message in known.items()},
    )
    return {message.email_id for message in known.values()}


def _outage(error: Exception) -> bool:
    """Say whether `error` is the database not answering (retried later), not a refusal."""
    return isinstance(error, DBAPIError) and is_unavailable(error)
