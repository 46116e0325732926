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

Beside this state machine: the batch writes (app.sync.mail_store), the rows a
message becomes (app.sync.email_rows), the flag updates (app.sync.flag_updates)
and the lease every write transaction proves (app.sync.lease).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import partial

from sqlalchemy.engine import Engine

from app.db import session_scope
from app.db.models import Folder, Mailbox, persisted_id, utcnow
from app.db.repositories.events import record_email_updates, record_event
from app.db.repositories.folders import (
    linked_uids,
    lowest_linked_uid,
    unlink_folder,
    unlink_uids,
    update_folder,
)
from app.imap import EmailManager, FolderStatus, SelectedFolder
from app.imap.email_manager import chunked
from app.sync.batch_writer import BatchWriter
from app.sync.errors import FolderDivergedError
from app.sync.flag_updates import apply_flags
from app.sync.identity import message_identity
from app.sync.lease import Lease
from app.sync.mail_store import FetchedBatch, KnownMessage, MailStore


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
    _mail_store: MailStore = field(init=False)

    def __post_init__(self) -> None:
        self._mail_store = MailStore(self.engine, self.mailbox, self.lease, self.batch_size)

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

    # -- the phases ---------------------------------------------------------------------

    def _reset(self, folder: Folder, selected: SelectedFolder) -> Folder:
        """UIDVALIDITY changed: every UID is void; rescan and relink by identity."""
        self.unlinked = True
        with self.lease.writing(self.engine) as session:
            unlink_folder(session, persisted_id(folder))
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
            return update_folder(
                session,
                persisted_id(folder),
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
        with self.lease.writing(self.engine) as session:
            return update_folder(
                session,
                persisted_id(folder),
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
        with self.lease.writing(self.engine) as session:
            if low is not None:
                links = linked_uids(session, persisted_id(folder))
                changed: set[int] = set()
                if on_server is not None:
                    gone = [uid for uid in links if uid not in on_server]
                    self.counts.expunged += unlink_uids(session, persisted_id(folder), gone)
                    self.unlinked = self.unlinked or bool(gone)
                    changed.update(links[uid] for uid in gone)
                flag_changes = apply_flags(session, links, flags)
                self.counts.flags_changed += flag_changes.changed
                changed.update(flag_changes.visible)
                record_email_updates(session, self.mailbox, changed, self.batch_size)
            return update_folder(
                session, persisted_id(folder), highestmodseq=selected.highestmodseq
            )

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
        with self.lease.writing(self.engine) as session:
            update_folder(session, persisted_id(folder), backfill_done=True)
        return True

    def _checkpoint(self, folder: Folder, selected: SelectedFolder) -> None:
        """Record the SELECT snapshot: the next run skips the folder if it still matches."""
        with self.lease.writing(self.engine) as session:
            row = update_folder(
                session,
                persisted_id(folder),
                uidnext=selected.uidnext,
                message_count=selected.exists,
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
        relinking = self._mail_store.has_mail_outside(folder)
        stored = 0
        with BatchWriter[int](ahead=0 if relinking else 1) as writer:
            for batch in chunked(ordered, self.batch_size):
                if self.deadline.passed() and self._batches_stored:
                    self._report(folder, stored, writer.finish(), len(ordered))
                    return False
                known = self._known_elsewhere(folder, batch) if relinking else {}
                bodies = list(self.mail.fetch([uid for uid in batch if uid not in known]))
                fetched = FetchedBatch(folder, batch, known, bodies, newest_first, announce)
                write = partial(self._write_batch, fetched)
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

    def _write_batch(self, batch: FetchedBatch) -> int:
        """Store one fetched batch (app.sync.mail_store) and count it; return its size."""
        stored = self._mail_store.write_batch(batch)
        self.counts.new += stored.new
        self.counts.bytes += stored.bytes
        return len(batch.uids)

    def _known_elsewhere(self, folder: Folder, batch: Sequence[int]) -> dict[int, KnownMessage]:
        """Find which UIDs hold mail stored from another folder, from their headers only."""
        identities = ((m.uid, message_identity(m), m.flags) for m in self.mail.identities(batch))
        return self._mail_store.known_elsewhere(folder, identities)

    def _snapshot(self, uids: list[int], selected: SelectedFolder) -> list[int]:
        """Keep the UIDs that existed at SELECT time; later arrivals wait for the next run."""
        if selected.uidnext is None:
            return uids
        return [uid for uid in uids if uid < selected.uidnext]

    def _lowest_uid(self, folder: Folder) -> int | None:
        with session_scope(self.engine) as session:
            return lowest_linked_uid(session, persisted_id(folder))


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
