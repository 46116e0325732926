"""Synchronize one mailbox, one run at a time: the six steps of docs/architecture.md.

    take the lease ---- held by another live worker ----> return None
      |  (free, expired, or its holder crashed on this machine: app.sync.run_claim)
      |  renewed every third of SYNC_LEASE_SECONDS until the run ends (app.sync.heartbeat)
      | sync_run: running (the same transaction)
    refresh the OAuth token when it expires within 5 minutes (app.sync.token_refresh)
    a connection slot (app.connection_budget): none within IMAP_SLOT_WAIT_SECONDS,
      or Redis away ----------------------------------> run failed `waiting_for_connection_slot`
                                                         (`connection_budget_unavailable`),
                                                         retried with backoff, nobody is told
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
      a complete run deletes the emails left in no folder: `email.deleted`, app.sync.orphans)
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
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from functools import partial
from typing import Literal

from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.backoff import Backoff
from app.config import Settings
from app.connection_budget import ConnectionBudgetError
from app.db import session_scope
from app.db.models import (
    Mailbox,
    MailboxStatus,
    SyncRun,
    SyncRunStatus,
    SyncTrigger,
    persisted_id,
    utcnow,
)
from app.db.repositories.emails import delete_orphans
from app.db.repositories.events import record_event
from app.db.repositories.mailboxes import release_lease
from app.imap import EmailManager, FolderManager, ImapConnection
from app.imap.email_manager import chunked
from app.imap.errors import AuthenticationFailed, FolderNotFound, ImapError, NetworkError
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
    PlaintextRefusedError,
    database_outages,
)
from app.sync.folder_sync import Deadline, FolderSyncer, ProgressCallback, SyncCounts
from app.sync.folders import (
    folders_to_sync,
    is_reconciled,
    reconcile_folders,
    remote_identities,
)
from app.sync.heartbeat import LeaseHeartbeat
from app.sync.holder import worker_identity
from app.sync.lease import Lease
from app.sync.notices import note_failure, note_success, reconnect_url
from app.sync.orphans import orphans_after_complete_run, orphans_after_folders_run
from app.sync.run_claim import RunClaim, claimed, when_database_answers

log = logging.getLogger(__name__)

_NETWORK_RETRY_BASE_SECONDS = 60.0
_SLOW_RETRY_CAP_SECONDS = 24 * 3600.0
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
    with database_outages(), claimed(engine, lease, run_id, folders_only, trigger) as claim:
        if claim is None:
            return None
        with LeaseHeartbeat(engine, lease):
            return _Run(engine, settings, claim, progress, folders).execute()


class _Run:
    """One execution of the algorithm, from login to the recorded outcome."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        claim: RunClaim,
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
        # them); see app.sync.orphans.
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
        except (
            NetworkError,
            ProviderUnavailableError,
            FolderDivergedError,
            ConnectionBudgetError,  # no slot free in time, or Redis away: retried soon
        ) as exc:
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
        enabled = folders_to_sync(folders, listing)
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
            self.orphans_to_delete = orphans_after_complete_run(
                syncer,
                connection,
                orphans_before=self.claim.orphans,
                marked=self.claim.mailbox.orphans_possible,
            )
        else:
            self.orphans_to_delete = orphans_after_folders_run(syncer, connection, enabled)
        return True

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
                deleted = delete_orphans(
                    session, persisted_id(mailbox), among=self.orphans_to_delete
                )
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
        return SyncResult(persisted_id(run), SyncRunStatus.SUCCEEDED, self.counts, complete)

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
        return SyncResult(persisted_id(run), SyncRunStatus.FAILED, self.counts, False, failure.code)

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
        return SyncResult(persisted_id(run), SyncRunStatus.FAILED, self.counts, False, error.code)

    def _database_lost(self, error: DatabaseUnavailableError) -> SyncResult:
        """Record the failure once the database answers again; raise if it stays away."""
        log.warning("sync.database_unavailable", extra={"mailbox_id": self.run.mailbox_id})
        failure = Failure(error.code, str(error), "transient")
        try:
            return when_database_answers(lambda: self._failed(failure))
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


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"


def _window_start(mailbox: Mailbox, settings: Settings) -> date:
    """The first day a first sync reaches back to: the mailbox's own, else the window setting."""
    if mailbox.sync_start is not None:
        return mailbox.sync_start
    return utcnow().date() - timedelta(days=settings.sync_window_days)
