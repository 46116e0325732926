"""Synchronize one mailbox: the six steps of DESIGN.md, one run at a time.

    take the lease ---- held by another live worker ----> return None
      |  (free, expired, or its holder crashed on this machine: app.sync.holder)
      |  renewed every third of SYNC_LEASE_SECONDS until the run ends (app.sync.heartbeat)
      | sync_run: running (the same transaction)
    refresh the OAuth token when it expires within 5 minutes (app.sync.token_refresh)
    connect + log in -- AuthenticationFailed ----------> mailbox auth_failed, run failed;
      |                 (or the refresh's invalid_grant)
      |                                                  `mailbox.credentials_invalid` once
      |                                                  per transition, retried with backoff
      |              -- NetworkError ------------------> run failed, retried with backoff,
      |                                                  nobody is told
      |              -- any other ImapError -----------> run failed, `mailbox.sync_failed`
      |              (any failure but credentials, past FAILING_NOTICE_AFTER_SECONDS:
      |               `mailbox.connection_failing` once, app.sync.notices)
      |              -- plain IMAP, not allowed -------> the same, before anything is sent
    folders: LIST (+STATUS) and reconcile ------------> folders_only: done
    each enabled folder, inbox and sent first, until the time budget is spent
      a folder whose EXISTS disagrees with its UIDs --> the other folders go on; the run
                                                      fails `folder_diverged` naming it,
                                                      retried with backoff
    run succeeded: `mailbox.synced` (+ `mailbox.credentials_restored` after a failure;
      a complete run deletes the emails left in no folder: `email.deleted`)
    the database stops answering (any step) ----------> run failed `database_unavailable`,
                                                         retried with backoff, nobody is
                                                         told; recorded once it answers
                                                         again, or raised after
                                                         DATABASE_WAIT_SECONDS (the run
                                                         stays `running`)
    release the lease: in the transaction that records the outcome, else (a crash of
      the run itself) on the way out, waiting DATABASE_WAIT_SECONDS for the database

A run given `folders` (the watcher's: those that changed) syncs only those of
the enabled folders and leaves the schedule to the full runs; it deletes the
emails left in no folder only when no enabled folder grew (they cannot have
moved), else leaves them to the next full run.

A run cut short by its time budget still succeeds: every folder ends at a
consistent checkpoint, `complete` is False and the mailbox is due again at
once, so the worker continues it with a follow-up job.

A database outage costs at most the batch in flight: each batch commits with
the folder marks it advances, so the next run resumes at the last one stored.
The run waits a little for the database to answer again, so that it can say
why it failed and free the mailbox for the retry; a database that stays away
longer leaves the lease to expire, as a crashed worker's does, and the run
`running` until the next one closes it as `interrupted`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from functools import partial
from typing import Literal, TypeVar

from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.backoff import Backoff
from app.config import Settings
from app.db import session_scope
from app.db.models import (
    Folder,
    FolderType,
    Mailbox,
    MailboxStatus,
    SyncRun,
    SyncRunStatus,
    SyncTrigger,
    utcnow,
)
from app.db.repositories.emails import delete_orphans, orphan_email_ids
from app.db.repositories.events import record_event
from app.db.repositories.folders import mailbox_folders
from app.db.repositories.mailboxes import (
    get_mailbox,
    lease_holder,
    lease_mailbox,
    release_lease,
)
from app.db.repositories.sync_runs import fail_interrupted_sync_runs, open_sync_runs
from app.imap import EmailManager, FolderManager, ImapConnection
from app.imap.email_manager import chunked
from app.imap.errors import AuthenticationFailed, FolderNotFound, ImapError, NetworkError
from app.imap.folder_manager import FolderListing
from app.oauth.errors import (
    InvalidGrantError,
    OAuthError,
    ProviderHostBlockedError,
    ProviderUnavailableError,
)
from app.security import SecretBox, SecretError
from app.sync.credentials import connect_mailbox, login_options
from app.sync.errors import (
    DatabaseUnavailableError,
    FolderDivergedError,
    LeaseLostError,
    MailboxNotFoundError,
    PlaintextRefusedError,
    database_outages,
)
from app.sync.folder_sync import Deadline, FolderSyncer, Lease, ProgressCallback, SyncCounts
from app.sync.folders import is_reconciled, reconcile_folders, remote_identities
from app.sync.heartbeat import LeaseHeartbeat
from app.sync.holder import holder_is_gone, worker_identity
from app.sync.notices import note_failure, note_success, reconnect_url

log = logging.getLogger(__name__)

_FIRST_FOLDERS = (FolderType.INBOX, FolderType.SENT)
_NETWORK_RETRY_BASE_SECONDS = 60.0
_SLOW_RETRY_CAP_SECONDS = 24 * 3600.0
# How long a run whose database stopped answering waits for it, to record why it
# failed and to release the lease; shorter than the default lease.
DATABASE_WAIT_SECONDS = 15.0
_DATABASE_POLL_SECONDS = 1.0

_Written = TypeVar("_Written")

# credentials: the owner must act (told once); transient: the network or server, retried
# soon, nobody told; permanent: anything else that will not fix itself (`mailbox.sync_failed`).
FailureKind = Literal["credentials", "transient", "permanent"]


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a run failed, in the terms the run record and the events use."""

    code: str
    message: str
    kind: FailureKind


@dataclass(frozen=True, slots=True)
class SyncResult:
    """The outcome of one run, as recorded in its `sync_run` row."""

    run_id: int
    status: SyncRunStatus
    counts: SyncCounts
    complete: bool
    error_code: str | None = None


@dataclass(slots=True)
class _Claim:
    """What the transaction that takes the lease hands the run, read before it logs in."""

    lease: Lease
    mailbox: Mailbox
    run: SyncRun
    folders: list[Folder]  # every folder of the mailbox
    # emails no folder held (mail runs of a mailbox marked `orphans_possible` only)
    orphans: set[int]
    released: bool = False  # the run's last transaction gave the lease back


def sync_mailbox(
    engine: Engine,
    mailbox_id: int,
    settings: Settings,
    *,
    folders_only: bool = False,
    trigger: SyncTrigger = SyncTrigger.CRON,
    run_id: int | None = None,
    progress: ProgressCallback | None = None,
    folders: frozenset[str] | None = None,
) -> SyncResult | None:
    """Sync one mailbox now (only `folders`, when given); None when another worker holds it.

    Raises DatabaseUnavailableError when the database does not answer, before the run
    started or for longer than DATABASE_WAIT_SECONDS after.
    """
    lease = Lease(mailbox_id, worker_identity(), timedelta(seconds=settings.sync_lease_seconds))
    with database_outages(), _claimed(engine, lease, run_id, folders_only, trigger) as claim:
        if claim is None:
            return None
        with LeaseHeartbeat(engine, lease):
            return _Run(engine, settings, claim, progress, folders).execute()


@contextmanager
def _claimed(
    engine: Engine, lease: Lease, run_id: int | None, folders_only: bool, trigger: SyncTrigger
) -> Iterator[_Claim | None]:
    """Take the lease and start the run in one transaction; give the lease back at the end.

    A no-change sync is mostly database round trips: the first transaction also reads
    what the run compares with the server (the folders, and the orphans a complete run
    deletes if the mailbox is marked as possibly holding any), and the last one records
    the outcome and releases the lease together. A run whose server changed nothing
    writes nothing in between.
    """
    with session_scope(engine) as session:
        mailbox = _take_lease(session, lease)
        if mailbox is None:
            if get_mailbox(session, lease.mailbox_id) is None:
                raise MailboxNotFoundError(f"mailbox {lease.mailbox_id} does not exist")
            claim = None
        else:
            claim = _Claim(
                lease,
                mailbox,
                _start_run(session, lease.mailbox_id, run_id, folders_only, trigger),
                mailbox_folders(session, lease.mailbox_id),
                orphan_email_ids(session, lease.mailbox_id)
                if mailbox.orphans_possible and not folders_only
                else set(),
            )
    try:
        yield claim
    finally:
        if claim is not None and not claim.released:
            _when_database_answers(lambda: _give_back(engine, lease))


def _take_lease(session: Session, lease: Lease) -> Mailbox | None:
    """Take the mailbox if it is free, its lease expired, or its holder is gone (crashed here)."""
    now = utcnow()
    mailbox = lease_mailbox(session, lease.mailbox_id, lease.owner, now, lease.duration)
    if mailbox is not None:
        return mailbox
    holder = lease_holder(session, lease.mailbox_id)
    if holder is None or not holder_is_gone(holder):
        return None
    mailbox = lease_mailbox(
        session, lease.mailbox_id, lease.owner, now, lease.duration, dead_holder=holder
    )
    if mailbox is not None:
        log.info(
            "sync.lease_taken_over", extra={"mailbox_id": lease.mailbox_id, "dead_holder": holder}
        )
    return mailbox


def _give_back(engine: Engine, lease: Lease) -> None:
    with session_scope(engine) as session:
        release_lease(session, lease.mailbox_id, lease.owner)


def _when_database_answers(write: Callable[[], _Written]) -> _Written:
    """Run `write`, again while the database does not answer, for DATABASE_WAIT_SECONDS at most."""
    deadline = time.monotonic() + DATABASE_WAIT_SECONDS
    while True:
        try:
            with database_outages():
                return write()
        except DatabaseUnavailableError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(_DATABASE_POLL_SECONDS)


def _start_run(
    session: Session,
    mailbox_id: int,
    run_id: int | None,
    folders_only: bool,
    trigger: SyncTrigger,
) -> SyncRun:
    runs = open_sync_runs(session, mailbox_id, including=run_id)
    if any(run.status == SyncRunStatus.RUNNING for run in runs):  # left by a worker that died
        fail_interrupted_sync_runs(session, mailbox_id, utcnow())
    if run_id is not None:
        run = next((run for run in runs if run.id == run_id), None)
    else:  # a scheduled job: it fills in a run the API queued meanwhile, if any
        queued = (
            run
            for run in runs
            if run.status == SyncRunStatus.QUEUED and run.folders_only == folders_only
        )
        run = next(queued, None)
    if run is None:
        run = SyncRun(mailbox_id=mailbox_id, folders_only=folders_only, trigger=trigger)
        session.add(run)
    run.status = SyncRunStatus.RUNNING
    run.started_at = utcnow()
    session.flush()
    return run


class _Run:
    """One execution of the algorithm, from login to the recorded outcome."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        claim: _Claim,
        progress: ProgressCallback | None,
        only_folders: frozenset[str] | None = None,
    ) -> None:
        self.engine = engine
        self.only_folders = only_folders  # None: every enabled folder
        self.claim = claim
        self.lease = claim.lease
        self.settings = settings
        self.run = claim.run
        self.progress = progress
        self.counts = SyncCounts()
        # Emails no folder holds are deleted at the end of a complete run (None: all of
        # them); see `_orphans_to_delete`.
        self.orphans_to_delete: set[int] | None = None
        self.deadline = Deadline(settings.sync_time_budget_seconds)

    def execute(self) -> SyncResult:
        try:
            with database_outages():
                return self._attempt()
        except LeaseLostError as exc:  # stalled past the lease: the new holder owns the mailbox
            return self._lost(exc)
        except DatabaseUnavailableError as exc:
            return self._database_lost(exc)

    def _attempt(self) -> SyncResult:
        mailbox = self.claim.mailbox  # read in the lease's transaction
        try:
            secrets = SecretBox.from_settings(self.settings)
            with (
                database_outages(),
                connect_mailbox(
                    self.engine, mailbox, self.settings, secrets, login_options(self.settings)
                ) as connection,
            ):
                complete = self._synchronize(mailbox, connection)
        except (AuthenticationFailed, InvalidGrantError) as exc:
            return self._failed(Failure(exc.code, str(exc), "credentials"))
        except (ProviderHostBlockedError, PlaintextRefusedError) as exc:  # settings must change
            return self._failed(Failure(exc.code, str(exc), "permanent"))
        except (NetworkError, ProviderUnavailableError, FolderDivergedError) as exc:
            return self._failed(Failure(exc.code, str(exc), "transient"))
        except (ImapError, SecretError, OAuthError) as exc:
            return self._failed(Failure(exc.code, str(exc), "permanent"))
        except ValidationError as exc:  # stored settings no longer pass ImapConfig's checks
            return self._failed(Failure("invalid_settings", _first_error(exc), "permanent"))
        except (LeaseLostError, DatabaseUnavailableError):
            raise
        except Exception:
            self._failed(Failure("internal_error", "unexpected error; see the logs", "permanent"))
            raise
        return self._succeeded(complete)

    def _synchronize(self, mailbox: Mailbox, connection: ImapConnection) -> bool:
        listing = FolderManager(connection).listing()
        folders = self.claim.folders
        # One per session: it ENABLEs CONDSTORE once, which must precede any SELECT.
        mail = EmailManager(
            connection,
            batch_size=self.settings.sync_batch_size,
            max_message_bytes=self.settings.sync_max_message_bytes,
        )
        if not is_reconciled(folders, listing):
            with session_scope(self.engine) as session:
                self.lease.hold(session)
                status_of = FolderManager(connection).status
                changes = reconcile_folders(
                    session, mailbox, listing, status_of, partial(remote_identities, mail)
                )
            self.counts.folders_added = changes.added
            self.counts.folders_removed = changes.removed
            folders = changes.listed
        if self.run.folders_only:
            return True
        syncer = FolderSyncer(
            engine=self.engine,
            mailbox=mailbox,
            mail=mail,
            deadline=self.deadline,
            window_start=_window_start(mailbox, self.settings),
            batch_size=self.settings.sync_batch_size,
            lease=self.lease,
            counts=self.counts,
            progress=self.progress,
        )
        diverged: list[str] = []
        enabled = _folders_to_sync(folders, listing)
        for folder in enabled:
            if self.only_folders is not None and folder.full_name not in self.only_folders:
                continue
            try:
                done = syncer.sync(folder, listing.statuses.get(folder.full_name))
            except FolderNotFound:
                log.info("sync.folder_vanished", extra={"folder_id": folder.id})
                continue
            except FolderDivergedError as exc:  # the other folders still sync
                log.warning("sync.folder_diverged", extra={"folder_id": folder.id})
                diverged.append(str(exc))
                continue
            if not done:
                return False
        if diverged:
            raise FolderDivergedError("; ".join(diverged))
        if self.only_folders is None:
            self.orphans_to_delete = self._orphans_to_delete(syncer, connection)
        else:
            self.orphans_to_delete = self._orphans_left_everywhere(syncer, connection, enabled)
        return True

    def _orphans_left_everywhere(
        self, syncer: FolderSyncer, connection: ImapConnection, enabled: list[Folder]
    ) -> set[int] | None:
        """Choose the orphans a run of some folders deletes: all, or none (the watcher's runs).

        Mail it saw leave a folder is gone from the server when no enabled folder got a
        new UID since it was synced (this run's SELECT, else the folder's checkpoint):
        it cannot have moved. Then `email.deleted` goes out in seconds rather than at the
        next complete run; otherwise that run decides.
        """
        if not syncer.unlinked:
            return set()
        expected = {
            folder.full_name: syncer.seen_uidnext.get(folder.full_name, folder.uidnext)
            for folder in enabled
        }
        return set() if _any_folder_grew(connection, syncer.mail, expected) else None

    def _orphans_to_delete(
        self, syncer: FolderSyncer, connection: ImapConnection
    ) -> set[int] | None:
        """Choose the orphans a complete run deletes (None: every one, clearing the mark).

        A run that removed no link has at most the orphans it began with (fewer if it
        relinked some): none when the mailbox was not marked `orphans_possible`, and
        then deleting them costs no query. When a message this run saw leave a folder
        may have moved into one it had already passed (a folder grew since), only those
        orphaned before the run go, the mark stays, and the next run relinks the rest
        or deletes them.
        """
        if syncer.unlinked and _any_folder_grew(connection, syncer.mail, syncer.seen_uidnext):
            return self.claim.orphans
        if syncer.unlinked or self.claim.mailbox.orphans_possible:
            return None
        return set()

    def _succeeded(self, complete: bool) -> SyncResult:
        now = utcnow()
        with session_scope(self.engine) as session:
            mailbox = self._release(session)
            if mailbox.status is MailboxStatus.AUTH_FAILED:
                mailbox.status = MailboxStatus.ACTIVE
                record_event(session, "mailbox.credentials_restored", mailbox, {})
            note_success(session, mailbox)
            mailbox.last_error = None
            if self.run.folders_only and mailbox.consecutive_failures:
                mailbox.next_sync_at = now  # the server answers again: mail need not wait
            mailbox.consecutive_failures = 0
            if not self.run.folders_only and self.only_folders is None:
                mailbox.last_synced_at = now
                interval = timedelta(minutes=self.settings.sync_interval_minutes)
                mailbox.next_sync_at = now if not complete else now + interval
            if complete and not self.run.folders_only:
                deleted = delete_orphans(session, _id(mailbox), among=self.orphans_to_delete)
                for batch in chunked(deleted, self.settings.sync_batch_size):
                    record_event(session, "email.deleted", mailbox, {"email_ids": list(batch)})
                if self.orphans_to_delete is None:
                    mailbox.orphans_possible = False
            run = self._finish(session, SyncRunStatus.SUCCEEDED, now)
            record_event(
                session,
                "mailbox.synced",
                mailbox,
                {"run_id": run.id, "complete": complete, **asdict(self.counts)},
            )
        self.claim.released = True
        log.info("sync.done", extra={"mailbox_id": run.mailbox_id, **asdict(self.counts)})
        return SyncResult(_id(run), SyncRunStatus.SUCCEEDED, self.counts, complete)

    def _failed(self, failure: Failure) -> SyncResult:
        now = utcnow()
        with session_scope(self.engine) as session:
            mailbox = self._release(session)
            mailbox.consecutive_failures += 1
            mailbox.last_error = f"{failure.code}: {failure.message}"
            mailbox.next_sync_at = now + self._backoff(mailbox.consecutive_failures, failure.kind)
            if failure.kind == "credentials" and mailbox.status is MailboxStatus.ACTIVE:
                mailbox.status = MailboxStatus.AUTH_FAILED
                record_event(
                    session,
                    "mailbox.credentials_invalid",
                    mailbox,
                    {
                        "error_code": failure.code,
                        "message": failure.message,
                        "reconnect_url": reconnect_url(self.settings, mailbox.id),
                    },
                )
            elif failure.kind == "permanent":
                record_event(session, "mailbox.sync_failed", mailbox, {"error_code": failure.code})
            if failure.kind != "credentials":
                note_failure(
                    session, mailbox, self.settings, now, code=failure.code, message=failure.message
                )
            run = self._finish(session, SyncRunStatus.FAILED, now, failure)
        self.claim.released = True
        log.warning("sync.failed", extra={"mailbox_id": run.mailbox_id, "error_code": failure.code})
        return SyncResult(_id(run), SyncRunStatus.FAILED, self.counts, False, failure.code)

    def _release(self, session: Session) -> Mailbox:
        """Give the lease back first in the run's last transaction, and read the mailbox.

        The UPDATE proves the run still holds the lease and, like `Lease.hold`, locks the
        row until the commit, so nothing this transaction writes can follow a new holder.
        """
        mailbox = release_lease(session, self.lease.mailbox_id, self.lease.owner)
        if mailbox is None:
            raise LeaseLostError(
                f"mailbox {self.lease.mailbox_id} was taken over by another worker"
            )
        return mailbox

    def _lost(self, error: LeaseLostError) -> SyncResult:
        """Close this run's record and touch nothing else: the mailbox is another's now."""
        failure = Failure(error.code, str(error), "transient")
        with session_scope(self.engine) as session:
            run = self._finish(session, SyncRunStatus.FAILED, utcnow(), failure)
        log.warning("sync.lease_lost", extra={"mailbox_id": run.mailbox_id})
        return SyncResult(_id(run), SyncRunStatus.FAILED, self.counts, False, error.code)

    def _database_lost(self, error: DatabaseUnavailableError) -> SyncResult:
        """Record the failure once the database answers again; raise if it stays away."""
        log.warning("sync.database_unavailable", extra={"mailbox_id": self.run.mailbox_id})
        failure = Failure(error.code, str(error), "transient")
        try:
            return _when_database_answers(lambda: self._failed(failure))
        except LeaseLostError as exc:  # it stayed away past the lease, and another took it
            return self._lost(exc)

    def _backoff(self, failures: int, kind: FailureKind) -> timedelta:
        """Retry transient failures soon, doubling up to the interval; the others slowly."""
        interval = self.settings.sync_interval_minutes * 60.0
        if kind == "transient":
            backoff = Backoff(first=_NETWORK_RETRY_BASE_SECONDS, cap=interval)
        else:
            backoff = Backoff(first=interval, cap=_SLOW_RETRY_CAP_SECONDS)
        return timedelta(seconds=backoff.delay(failures))

    def _finish(
        self,
        session: Session,
        status: SyncRunStatus,
        now: datetime,
        failure: Failure | None = None,
    ) -> SyncRun:
        run = session.merge(self.run, load=False)  # the row as the run wrote it: no SELECT
        run.status = status
        run.finished_at = now
        run.new = self.counts.new
        run.flags_changed = self.counts.flags_changed
        run.expunged = self.counts.expunged
        run.folders_added = self.counts.folders_added
        run.folders_removed = self.counts.folders_removed
        run.bytes_fetched = self.counts.bytes
        if failure is not None:
            run.error_code = failure.code
            run.error = failure.message
        return run


def _any_folder_grew(
    connection: ImapConnection, mail: EmailManager, seen_uidnext: dict[str, int | None]
) -> bool:
    """Say whether a folder got new UIDs since the run looked at it (STATUS; one per folder).

    The folder the run left selected is left first: STATUS of it may be stale.
    """
    try:
        mail.unselect_folder()
    except ImapError:  # it may still be selected: its STATUS proves nothing
        return True
    folders = FolderManager(connection)
    for full_name, seen in seen_uidnext.items():
        try:
            now = folders.status(full_name).uidnext
        except ImapError:  # renamed or deleted meanwhile: it may hold anything
            return True
        if seen is None or now != seen:
            return True
    return False


def _folders_to_sync(folders: list[Folder], listing: FolderListing) -> list[Folder]:
    """Enabled folders that exist and can be selected; inbox, then sent, then by name."""
    selectable = {f.full_name for f in listing.folders if f.selectable}
    chosen = [
        f
        for f in folders
        if f.sync_enabled and f.outdated_since is None and f.full_name in selectable
    ]

    def order(folder: Folder) -> tuple[int, str]:
        rank = _FIRST_FOLDERS.index(folder.type) if folder.type in _FIRST_FOLDERS else 2
        return rank, folder.full_name.casefold()

    return sorted(chosen, key=order)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"


def _window_start(mailbox: Mailbox, settings: Settings) -> date:
    """The first day a first sync reaches back to: the mailbox's own, else the window setting."""
    if mailbox.sync_start is not None:
        return mailbox.sync_start
    return utcnow().date() - timedelta(days=settings.sync_window_days)


def _id(row: Mailbox | SyncRun) -> int:
    assert row.id is not None
    return row.id
