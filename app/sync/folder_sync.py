"""Step 4 of a sync: bring one folder's mail up to date, cheapest check first.

    STATUS (or LIST-STATUS) equals the checkpoint ........ done, no SELECT
    EXAMINE
    UIDVALIDITY changed .................................. drop the folder's links,
                                                           `folder.reset`, rescan as a first sync
                                                           that announces only mail it cannot
                                                           relink (arrived during the reset)
    first sync ........................................... checkpoint the high mark (UIDNEXT-1,
                                                           never the window's newest UID), then
                                                           backfill newest-first since `sync_since`
    later syncs:
      flags   CHANGEDSINCE highestmodseq (RFC 7162), else a full flag scan
                (`email.updated` for emails whose seen/flagged changed)
      expunges  only when EXISTS disagrees with the checkpoint: the UIDs listed by
                UID FETCH 1:* (UID), whose count must match EXISTS (else
                `folder_diverged`), against the stored links (`email.updated` for
                emails still in another folder; one left in none waits for the
                run's end, `email.deleted` when it is deleted)
      new mail  UIDs above the high mark, oldest first (`email.received` per batch,
                `email.updated` for mail relinked from another folder: a move or copy)
    checkpoint uidnext/EXISTS ............................ the next run can skip the folder

Every batch is written in one transaction together with the folder marks it
advances (`last_seen_uid` going up, `low_uid` going down), so a crash repeats
at most one batch and the unique (folder, uid) key makes the repeat harmless.
A batch the database refuses for one message's values is written again with
that message stored without its content (a defect says why), so no message can
hold a folder's checkpoint back and fail every later run.
Mail already stored in another folder of the mailbox is recognised by its
identity and linked, without downloading its body again.

Change events go out in the transaction that makes the change, and only for a
change of the stored state: a flag change the database already holds (our own
write-back, the same message seen in a second folder) announces nothing. A move
is one `email.updated` when its source folder is synced first (the email waits
in no folder and is relinked), or two when its target is (a link added, then
one dropped); never `email.deleted` + `email.received`. A first sync and the
rescan after a UIDVALIDITY reset relink silently: `folder.reset` said it all.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col, select

from app.db import session_scope
from app.db.engine import is_unavailable
from app.db.models import Email, EmailFolder, Folder, MailAddress, Mailbox, utcnow
from app.db.repositories.emails import (
    insert_attachments,
    insert_emails,
    insert_links,
    relinkable_emails,
)
from app.db.repositories.events import record_email_updates, record_event
from app.db.repositories.folders import linked_uids, lowest_linked_uid, unlink_folder, unlink_uids
from app.db.repositories.mailboxes import renew_lease
from app.imap import EmailManager, FolderStatus, SelectedFolder
from app.imap.email_manager import chunked
from app.imap.message import Address, ParsedMessage
from app.sync.batch_writer import BatchWriter
from app.sync.errors import FolderDivergedError, LeaseLostError
from app.sync.identity import message_identity


@dataclass(slots=True)
class SyncCounts:
    """What one run changed, for the sync run record and the `mailbox.synced` event."""

    new: int = 0
    flags_changed: int = 0
    expunged: int = 0
    folders_added: int = 0
    folders_removed: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class SyncProgress:
    """Where a running sync is, for a progress display."""

    folder: str
    stored: int
    total: int


ProgressCallback = Callable[[SyncProgress], None]


class Deadline:
    """The run's time budget: checked between batches, never in the middle of one."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def passed(self) -> bool:
        return time.monotonic() >= self._end


@dataclass(frozen=True, slots=True)
class Lease:
    """The mailbox lease a run holds; each transaction it commits first proves it still does."""

    mailbox_id: int
    owner: str
    duration: timedelta

    def hold(self, session: Session) -> None:
        """Renew the lease in `session`'s transaction; raise if another worker took it."""
        if not renew_lease(session, self.mailbox_id, self.owner, utcnow(), self.duration):
            raise LeaseLostError(f"mailbox {self.mailbox_id} was taken over by another worker")


@dataclass
class FolderSyncer:
    """Syncs the folders of one mailbox over one IMAP session."""

    engine: Engine
    mailbox: Mailbox
    mail: EmailManager
    deadline: Deadline
    window_start: date
    batch_size: int
    lease: Lease
    counts: SyncCounts = field(default_factory=SyncCounts)
    progress: ProgressCallback | None = None
    # The UIDNEXT this run last saw of each folder it synced, and whether it removed any
    # link: together they tell whether a message it saw leave may have moved elsewhere.
    seen_uidnext: dict[str, int | None] = field(default_factory=dict)
    unlinked: bool = False
    # A run stores at least one batch, however small its budget: every run makes progress.
    _batches_stored: int = 0

    def sync(self, folder: Folder, status: FolderStatus | None) -> bool:
        """Bring `folder` up to date; return False when the time budget ran out first."""
        if status is not None and _unchanged(folder, status):
            self.seen_uidnext[folder.full_name] = status.uidnext
            return True
        selected = self.mail.select_folder(folder.full_name)
        self.seen_uidnext[folder.full_name] = selected.uidnext
        if folder.uidvalidity is not None and folder.uidvalidity != selected.uidvalidity:
            folder = self._reset(folder, selected)
        if folder.uidvalidity is None:
            folder = self._start(folder, selected)
        else:
            new_uids = self._server_uids_since_checkpoint(folder, selected)
            folder = self._flags_and_expunges(folder, selected, len(new_uids))
            fresh = [uid for uid in new_uids if uid > folder.last_seen_uid]
            if not self._store(folder, fresh, newest_first=False, announce=True):
                return False
        if not folder.backfill_done and not self._backfill(folder):
            return False
        self._checkpoint(folder, selected)
        return True

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        """A transaction that commits only while this run still holds the mailbox's lease."""
        with session_scope(self.engine) as session:
            self.lease.hold(session)
            yield session

    # -- the phases ---------------------------------------------------------------------

    def _reset(self, folder: Folder, selected: SelectedFolder) -> Folder:
        """UIDVALIDITY changed: every UID is void; rescan and relink by identity."""
        self.unlinked = True
        with self._writing() as session:
            unlink_folder(session, _id(folder))
            record_event(
                session,
                "folder.reset",
                self.mailbox,
                {
                    "folder_id": folder.id,
                    "full_name": folder.full_name,
                    "old_uidvalidity": folder.uidvalidity,
                    "new_uidvalidity": selected.uidvalidity,
                },
            )
            return _update_folder(
                session,
                folder,
                uidvalidity=None,
                uidnext=None,
                highestmodseq=None,
                last_seen_uid=0,
                low_uid=None,
                backfill_done=False,
                message_count=0,
            )

    def _start(self, folder: Folder, selected: SelectedFolder) -> Folder:
        """First sync: fix the window and the high mark before fetching anything."""
        since = folder.sync_since or self.window_start
        in_window = self._snapshot(
            self.mail.search(self.mail.query().since(since).build()), selected
        )
        high = max((selected.uidnext or 1) - 1, in_window[-1] if in_window else 0)
        with self._writing() as session:
            return _update_folder(
                session,
                folder,
                uidvalidity=selected.uidvalidity,
                highestmodseq=selected.highestmodseq,
                sync_since=since,
                last_seen_uid=high,
                low_uid=high + 1,
                backfill_done=not in_window,
            )

    def _server_uids_since_checkpoint(self, folder: Folder, selected: SelectedFolder) -> list[int]:
        """UIDs that arrived since the last complete checkpoint, up to the SELECT snapshot."""
        first = min(folder.uidnext or folder.last_seen_uid + 1, folder.last_seen_uid + 1)
        last = (selected.uidnext - 1) if selected.uidnext else None
        return self._snapshot(self.mail.uids(first, last), selected)

    def _flags_and_expunges(self, folder: Folder, selected: SelectedFolder, arrived: int) -> Folder:
        """Apply flag changes and expunges of stored mail; advance HIGHESTMODSEQ with them.

        Expunges are looked for only when EXISTS disagrees with the checkpoint's
        count plus the arrivals: a folder that only gained mail costs no UID diff.
        """
        low = self._lowest_uid(folder)
        flags: dict[int, frozenset[str]] = {}
        on_server: set[int] | None = None
        if low is not None:
            flags = self._changed_flags(folder, selected, low)
            if folder.uidnext is None or folder.message_count + arrived != selected.exists:
                on_server = self._listed_uids(folder, selected)
        with self._writing() as session:
            if low is not None:
                links = linked_uids(session, _id(folder))
                changed: set[int] = set()
                if on_server is not None:
                    gone = [uid for uid in links if uid not in on_server]
                    self.counts.expunged += unlink_uids(session, _id(folder), gone)
                    self.unlinked = self.unlinked or bool(gone)
                    changed.update(links[uid] for uid in gone)
                flag_changes = _apply_flags(session, links, flags)
                self.counts.flags_changed += flag_changes.changed
                changed.update(flag_changes.visible)
                record_email_updates(session, self.mailbox, changed, self.batch_size)
            return _update_folder(session, folder, highestmodseq=selected.highestmodseq)

    def _listed_uids(self, folder: Folder, selected: SelectedFolder) -> set[int]:
        """List every UID of the folder and check the count against EXISTS.

        A server that lists fewer (or more) UIDs than it counts would make stored mail
        look expunged (or keep mail that is gone). One disagreement may be mail that
        moved in between: the folder is selected and listed again, and a second
        disagreement fails the folder (`FolderDivergedError`) before anything is unlinked.
        """
        listed = self._snapshot(self.mail.uids(1), selected)
        if len(listed) != selected.exists:
            again = self.mail.select_folder(folder.full_name)
            listed = self._snapshot(self.mail.uids(1), again)
            if len(listed) != again.exists:
                raise FolderDivergedError(
                    f"folder {folder.full_name!r}: the server counts {again.exists} messages"
                    f" (EXISTS) but lists {len(listed)} UIDs"
                )
        return set(listed)

    def _changed_flags(
        self, folder: Folder, selected: SelectedFolder, low: int
    ) -> dict[int, frozenset[str]]:
        if folder.highestmodseq is not None and selected.highestmodseq is not None:
            if folder.highestmodseq == selected.highestmodseq:
                return {}
            changes = self.mail.flags_changed_since(low, folder.last_seen_uid, folder.highestmodseq)
            return {uid: state.flags for uid, state in changes.items()}
        return self.mail.flags(low, folder.last_seen_uid)

    def _backfill(self, folder: Folder) -> bool:
        """Fetch the rest of the first-sync window, newest first, within the budget."""
        assert folder.sync_since is not None, "set by the first sync"
        assert folder.low_uid is not None, "set by the first sync"
        if folder.low_uid <= 1:
            remaining: list[int] = []
        else:
            query = self.mail.query().since(folder.sync_since).uid_range(1, folder.low_uid - 1)
            remaining = [uid for uid in self.mail.search(query.build()) if uid < folder.low_uid]
        # A first sync announces nothing; the rescan after a UIDVALIDITY reset (the folder
        # had a complete sync before) announces what it cannot relink: mail that arrived
        # meanwhile.
        announce = folder.synced_at is not None
        if not self._store(folder, remaining, newest_first=True, announce=announce):
            return False
        with self._writing() as session:
            _update_folder(session, folder, backfill_done=True)
        return True

    def _checkpoint(self, folder: Folder, selected: SelectedFolder) -> None:
        """Record the SELECT snapshot: the next run skips the folder if it still matches."""
        with self._writing() as session:
            row = _update_folder(
                session, folder, uidnext=selected.uidnext, message_count=selected.exists
            )
            row.last_seen_uid = max(row.last_seen_uid, (selected.uidnext or 1) - 1)
            row.synced_at = utcnow()

    # -- storing mail ---------------------------------------------------------------------

    def _store(
        self, folder: Folder, uids: Sequence[int], *, newest_first: bool, announce: bool
    ) -> bool:
        """Store `uids` batch by batch; return False when the budget ran out before the end.

        Each batch is written while the next one is fetched (`BatchWriter`),
        unless the mailbox holds mail outside this folder: recognising a message
        already stored must then see every earlier batch committed, so batches
        are written one after another.
        """
        ordered = sorted(uids, reverse=newest_first)
        if not ordered:
            return True
        relinking = self._mailbox_has_mail_outside(folder)
        stored = 0
        with BatchWriter[int](ahead=0 if relinking else 1) as writer:
            for batch in chunked(ordered, self.batch_size):
                if self.deadline.passed() and self._batches_stored:
                    self._report(folder, stored, writer.finish(), len(ordered))
                    return False
                known = self._known_elsewhere(folder, batch) if relinking else {}
                bodies = list(self.mail.fetch([uid for uid in batch if uid not in known]))
                write = partial(
                    self._write_batch,
                    folder,
                    batch,
                    known,
                    bodies,
                    newest_first=newest_first,
                    announce=announce,
                )
                self._batches_stored += 1
                stored = self._report(folder, stored, writer.submit(write), len(ordered))
            self._report(folder, stored, writer.finish(), len(ordered))
        return True

    def _report(self, folder: Folder, stored: int, written: list[int], total: int) -> int:
        """Count the batches just written; tell the progress callback after each."""
        for count in written:
            stored += count
            if self.progress:
                self.progress(SyncProgress(folder.full_name, stored, total))
        return stored

    def _write_batch(
        self,
        folder: Folder,
        batch: Sequence[int],
        known: dict[int, KnownMessage],
        bodies: list[ParsedMessage],
        *,
        newest_first: bool,
        announce: bool,
    ) -> int:
        """Store one fetched batch with the folder mark it advances; return its size.

        A batch the database refuses for a value of one message (a failure that is
        neither an outage nor a lost lease) is written again with each message the
        database refuses on its own stored without its content: one message never
        stops the mailbox, and the checkpoint still moves past it.
        """

        def write(messages: list[ParsedMessage]) -> list[int]:
            return self._commit_batch(
                folder, batch, known, messages, newest_first=newest_first, announce=announce
            )

        try:
            new_ids = write(bodies)
        except Exception as exc:
            if isinstance(exc, LeaseLostError) or _outage(exc):
                raise
            storable = [self._storable(message) for message in bodies]
            if all(kept is message for kept, message in zip(storable, bodies, strict=True)):
                raise  # no message is to blame: the batch fails as a whole
            bodies = storable
            new_ids = write(bodies)
        self.counts.new += len(new_ids)
        self.counts.bytes += sum(message.size for message in bodies)
        return len(batch)

    def _commit_batch(
        self,
        folder: Folder,
        batch: Sequence[int],
        known: dict[int, KnownMessage],
        bodies: list[ParsedMessage],
        *,
        newest_first: bool,
        announce: bool,
    ) -> list[int]:
        """Write one batch and its folder mark in one transaction; return the new email ids."""
        with self._writing() as session:
            relinked = _link_known(session, folder, known)
            new_ids = self._insert(session, folder, bodies, relinked)
            # Arrivals (oldest first, above the high mark) relinked to a stored email are
            # a move or a copy; a backfill's relinks are a first sync's or a reset's rescan.
            if announce and not newest_first:
                record_email_updates(session, self.mailbox, relinked, self.batch_size)
            if announce and new_ids:
                record_event(
                    session,
                    "email.received",
                    self.mailbox,
                    {"folder_id": folder.id, "folder": folder.full_name, "email_ids": new_ids},
                )
            marks: dict[str, Any] = (
                {"low_uid": min(batch)} if newest_first else {"last_seen_uid": max(batch)}
            )
            _update_folder(session, folder, **marks)
        return new_ids

    def _storable(self, message: ParsedMessage) -> ParsedMessage:
        """Try the message's rows alone in a transaction rolled back; if the database refuses
        them, return the message without its content (what the FETCH gave, its identity)."""
        with Session(self.engine) as session:
            try:
                row = _email_row(_id(self.mailbox), message_identity(message), message)
                [email_id] = insert_emails(session, [row])
                insert_attachments(session, list(_attachment_rows(email_id, message)))
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

    def _known_elsewhere(self, folder: Folder, batch: Sequence[int]) -> dict[int, KnownMessage]:
        """Find which UIDs hold mail stored from another folder, from their headers only."""
        identities = {m.uid: (message_identity(m), m.flags) for m in self.mail.identities(batch)}
        with session_scope(self.engine) as session:
            emails = relinkable_emails(
                session, _id(self.mailbox), _id(folder), (i for i, _ in identities.values())
            )
        known: dict[int, KnownMessage] = {}
        claimed: set[int] = set()
        for uid, (identity, flags) in identities.items():
            email_id = emails.get(identity)
            if email_id is not None and email_id not in claimed:
                claimed.add(email_id)
                known[uid] = KnownMessage(email_id, flags)
        return known

    def _mailbox_has_mail_outside(self, folder: Folder) -> bool:
        with session_scope(self.engine) as session:
            in_folder = select(EmailFolder.email_id).where(EmailFolder.folder_id == folder.id)
            statement = select(Email.id).where(
                Email.mailbox_id == self.mailbox.id, col(Email.id).not_in(in_folder)
            )
            return session.exec(statement.limit(1)).first() is not None

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
        folder_id = _id(folder)
        identities = [message_identity(message) for message in messages]
        existing = relinkable_emails(session, _id(self.mailbox), folder_id, identities)
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
            rows.append(_email_row(_id(self.mailbox), identity, message))
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
                for row in _attachment_rows(email_id, message)
            ],
        )
        return new_ids

    def _snapshot(self, uids: list[int], selected: SelectedFolder) -> list[int]:
        """Keep the UIDs that existed at SELECT time; later arrivals wait for the next run."""
        if selected.uidnext is None:
            return uids
        return [uid for uid in uids if uid < selected.uidnext]

    def _lowest_uid(self, folder: Folder) -> int | None:
        with session_scope(self.engine) as session:
            return lowest_linked_uid(session, _id(folder))


@dataclass(frozen=True, slots=True)
class KnownMessage:
    """A UID whose message the mailbox already stores (found by identity)."""

    email_id: int
    flags: frozenset[str]


def _unchanged(folder: Folder, status: FolderStatus) -> bool:
    """Say whether STATUS proves nothing changed since the checkpoint (needs CONDSTORE)."""
    return (
        folder.backfill_done
        and status.highestmodseq is not None
        and folder.uidvalidity == status.uidvalidity
        and folder.uidnext == status.uidnext
        and folder.message_count == status.messages
        and folder.highestmodseq == status.highestmodseq
    )


def _link_known(session: Session, folder: Folder, known: dict[int, KnownMessage]) -> set[int]:
    for uid, message in known.items():
        session.add(EmailFolder(email_id=message.email_id, folder_id=_id(folder), uid=uid))
    _apply_flags(
        session,
        {uid: message.email_id for uid, message in known.items()},
        {uid: message.flags for uid, message in known.items()},
    )
    return {message.email_id for message in known.values()}


_FLAG_READ_CHUNK = 1000
_FLAG_COLUMNS = {
    "seen": "\\Seen",
    "flagged": "\\Flagged",
    "answered": "\\Answered",
    "draft": "\\Draft",
}
_VISIBLE_FLAGS = 2  # seen and flagged, the first columns: what `email.updated` carries


@dataclass(frozen=True, slots=True)
class FlagChanges:
    """What `_apply_flags` wrote: how many emails changed, and which of them in seen/flagged."""

    changed: int
    visible: list[int]


def _apply_flags(
    session: Session, links: dict[int, int], flags: dict[int, frozenset[str]]
) -> FlagChanges:
    """Write changed system flags of linked UIDs; say which emails changed.

    Current flags are read in chunks (a folder without CONDSTORE reports every
    UID's flags, more than a statement may bind) and the changes go out in one
    executemany.
    """
    targets = {links[uid]: state for uid, state in flags.items() if uid in links}
    columns = [col(getattr(Email, name)) for name in _FLAG_COLUMNS]
    current: dict[int, tuple[bool, ...]] = {}
    for chunk in chunked(list(targets), _FLAG_READ_CHUNK):
        rows = session.execute(sa.select(col(Email.id), *columns).where(col(Email.id).in_(chunk)))
        current.update((email_id, tuple(values)) for email_id, *values in rows)
    changes: list[dict[str, Any]] = []
    visible: list[int] = []
    for email_id, state in targets.items():
        wanted = tuple(flag in state for flag in _FLAG_COLUMNS.values())
        if email_id in current and current[email_id] != wanted:
            changes.append({"id": email_id, **dict(zip(_FLAG_COLUMNS, wanted, strict=True))})
            if current[email_id][:_VISIBLE_FLAGS] != wanted[:_VISIBLE_FLAGS]:
                visible.append(email_id)
    if changes:
        session.execute(sa.update(Email), changes)  # an UPDATE by primary key per row
    return FlagChanges(len(changes), visible)


def _update_folder(session: Session, folder: Folder, **values: Any) -> Folder:
    """Write `values` to the folder row and return the updated snapshot."""
    row = session.get(Folder, _id(folder))
    assert row is not None, "a folder cannot vanish while its mailbox is leased"
    for name, value in values.items():
        setattr(row, name, value)
    session.flush()
    return row


def _clean(text: str | None) -> str | None:
    """Drop NUL characters: PostgreSQL text cannot hold them."""
    return text.replace("\x00", "\ufffd") if text else text


def _addresses(addresses: tuple[Address, ...]) -> list[MailAddress]:
    return [{"name": _clean(a.name) or None, "email": _clean(a.email) or ""} for a in addresses]


_MAX_ADDRESS = 320  # RFC 5321's limit; the column is indexed
_MAX_INDEXED_KEY = 200


def _index_safe(key: str | None) -> str | None:
    """Hash keys too long for a B-tree index (PostgreSQL refuses ~2.7 kB), as identities are."""
    if key is None or len(key) <= _MAX_INDEXED_KEY:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def _email_row(mailbox_id: int, identity: str, message: ParsedMessage) -> dict[str, Any]:
    """Return the `email` columns of a fetched message (`created_at` is the column default)."""
    return {
        "mailbox_id": mailbox_id,
        "identity": identity,
        "gm_msgid": message.gm_msgid,
        "message_id": _clean(message.message_id),
        "in_reply_to": _clean(message.in_reply_to),
        "references": _clean(" ".join(message.references)) or None,
        "thread_key": _index_safe(_clean(message.thread_key)),
        "subject": _clean(message.subject),
        "from_name": _clean(message.sender.name) or None if message.sender else None,
        "from_email": _clean(message.sender.email[:_MAX_ADDRESS]) if message.sender else None,
        "to": _addresses(message.to),
        "cc": _addresses(message.cc),
        "bcc": _addresses(message.bcc),
        "reply_to": _addresses(message.reply_to),
        "date": message.date,
        "received_at": message.internal_date,
        "size": message.size,
        "seen": message.seen,
        "flagged": message.flagged,
        "answered": "\\Answered" in message.flags,
        "draft": "\\Draft" in message.flags,
        "has_attachments": message.has_attachments,
        "text_body": _clean(message.text),
        "html_body": _clean(message.html),
        "headers": _clean(message.headers),
        "defects": list(message.defects),
    }


def _outage(error: Exception) -> bool:
    """Say whether `error` is the database not answering (retried later), not a refusal."""
    return isinstance(error, DBAPIError) and is_unavailable(error)


def _attachment_rows(email_id: int, message: ParsedMessage) -> Iterator[dict[str, Any]]:
    for n, attachment in enumerate(message.attachments):
        yield {
            "email_id": email_id,
            "n": n,
            "part_id": attachment.part_id,
            "filename": _clean(attachment.filename),
            "content_type": attachment.content_type[:255],
            "size": attachment.size,
            "content_id": _clean(attachment.content_id),
            "inline": attachment.inline,
        }


def _id(row: Folder | Mailbox | Email) -> int:
    assert row.id is not None, "rows are flushed before their id is used"
    return row.id
