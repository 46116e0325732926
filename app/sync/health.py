"""Say why a mailbox is (not) up to date, from what the service already records.

No state is stored for health: each answer is derived from the mailbox row
(status, `next_sync_at` and the backoff behind it, `consecutive_failures`, the
sync lease, the watch lease), its sync runs, its folders' first-sync marks and
the queue depth. The first rule that holds names the state:

    status disabled ..................................... disabled
    status auth_failed .................................. auth_failed
    failing runs (consecutive_failures, the latest run failed)
      the engine backed off to the sync interval or more  failing  (a failure that
                                                          needs someone: TLS, blocked host,
                                                          settings; or a transient one that
                                                          has outlasted the quick retries)
      it retries sooner ................................. retrying
    the latest run found no connection slot ............. behind
    due (or a queued run waiting) for longer than
      HEALTH_BEHIND_AFTER_SECONDS, no run holding it .... behind
    an enabled folder's first-sync window is incomplete,
      or it never synced ................................ backfilling
    a run holds it now .................................. syncing
    otherwise ........................................... healthy

Blockers say what stands in the way, each with its own since: `auth_failed`,
`tls_error`, `unreachable` (any network failure: refused, timed out, dropped,
server unavailable), another failure's own error code, `backoff` (the next
attempt waits), `waiting_for_connection_slot`, `lease_held_elsewhere` (a live
lease and no run recorded running: a holder on another machine, or one that
died), `queue_backlog` (overdue while jobs wait in the queue) and
`not_picked_up` (overdue, the queue empty: no worker's cron is running).

The connection budget's contract: a sync that found no free connection slot
for its IMAP host or account within its bounded wait records its run as
`failed` with error code `waiting_for_connection_slot` and, as `error`, one
sentence naming the host and the slots in use ("Waiting for a connection slot
to imap.example.com: 8 of 8 in use by other mailboxes"). Health shows that
sentence as the summary and the blocker's detail, and counts the mailbox
`behind`, not failing: the mailbox itself is fine.

Lag is the time since the newest succeeded run of any kind (each saw the
server); a mailbox that never synced lags since it was registered. The watch
state comes from the watch lease alone: `watching` (a watcher holds a live
lease), `reconnecting` (its lease ran out: the watcher stopped; another takes
it over), `polling` (no watcher holds it: the schedule keeps it current),
`off` (`watch` off, or the mailbox is not active).

A first sync's progress per folder is estimated from what is stored: the
stored count stretched over the window by the oldest date reached (mail
assumed spread evenly over time), and never more than one message per UID
left below the folder's low mark.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal, get_args

from sqlmodel import Session

from app.config import Settings
from app.db.models import MailboxStatus, SyncRunStatus
from app.db.repositories.mailbox_health import (
    FolderBackfill,
    MailboxRecord,
    RecentFailure,
    failing_since,
    first_run_started_at,
    folder_backfills,
    mailbox_records,
    recent_failures,
)
from app.imap.errors import ConnectionLost, NetworkError, ServerUnavailable, TimedOut, Unreachable

HealthState = Literal[
    "healthy", "syncing", "backfilling", "behind", "retrying", "auth_failed", "failing", "disabled"
]
HEALTH_STATES: tuple[HealthState, ...] = get_args(HealthState)
WatchState = Literal["watching", "polling", "off", "reconnecting"]

WAITING_FOR_CONNECTION_SLOT = "waiting_for_connection_slot"
_NETWORK_CODES = frozenset(
    error.code for error in (NetworkError, Unreachable, TimedOut, ConnectionLost, ServerUnavailable)
)
# The engine's backoff and the scheduler's times are written in one statement: a second
# of slack keeps a rounding database clock from flipping `failing` into `retrying`.
_SLACK = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class Blocker:
    code: str
    detail: str
    since: datetime | None


@dataclass(frozen=True, slots=True)
class FolderProgress:
    folder_id: int
    full_name: str
    complete: bool
    stored: int
    estimated_total: int | None


@dataclass(frozen=True, slots=True)
class Backfill:
    complete: bool
    oldest_date_reached: date | None
    window_start: date | None
    folders: list[FolderProgress]

    def percent(self) -> int | None:
        """The share of the window stored, when every folder's total can be estimated."""
        totals = [folder.estimated_total for folder in self.folders]
        if not totals or any(total is None for total in totals):
            return None
        expected = sum(total for total in totals if total is not None)
        stored = sum(folder.stored for folder in self.folders)
        return 100 if expected == 0 else min(99, int(100 * stored / expected))


@dataclass(frozen=True, slots=True)
class WatchHealth:
    state: WatchState
    since: datetime | None


@dataclass(frozen=True, slots=True)
class MailboxHealth:
    mailbox_id: int
    state: HealthState
    summary: str
    since: datetime | None
    next_attempt_at: datetime | None
    last_success_at: datetime | None
    lag_seconds: int
    blockers: list[Blocker]
    backfill: Backfill
    watch: WatchHealth


@dataclass(frozen=True, slots=True)
class LaggingMailbox:
    mailbox_id: int
    email_address: str
    state: HealthState
    lag_seconds: int
    last_success_at: datetime | None


@dataclass(frozen=True, slots=True)
class FleetHealth:
    counts: dict[HealthState, int]
    worst_lags: list[LaggingMailbox]
    recent_failures: list[RecentFailure]
    queue_depth: int | None
    max_lag_seconds: int


def classify(record: MailboxRecord, now: datetime, settings: Settings) -> HealthState:
    """Name the mailbox's state by the first rule that holds (see the module docstring)."""
    if record.status is not MailboxStatus.ACTIVE:
        return "disabled" if record.status is MailboxStatus.DISABLED else "auth_failed"
    if _failing_runs(record):
        interval = timedelta(minutes=settings.sync_interval_minutes)
        return "failing" if _backoff(record) + _SLACK >= interval else "retrying"
    if _behind(record, now, settings):
        return "behind"
    if record.backfill_pending or record.last_success_at is None:
        return "backfilling"
    return "syncing" if _run_holds_it(record, now) else "healthy"


def mailbox_health(
    session: Session,
    mailbox_id: int,
    settings: Settings,
    *,
    queue_depth: int | None,
    now: datetime,
) -> MailboxHealth | None:
    """Derive one mailbox's health; None when it does not exist."""
    records = mailbox_records(session, mailbox_id)
    if not records:
        return None
    record = records[0]
    state = classify(record, now, settings)
    folders = folder_backfills(session, mailbox_id)
    backfill = _backfill(folders, now.date())
    blockers = _blockers(session, record, state, now, queue_depth)
    first_sync = not any(folder.ever_complete for folder in folders)
    since = _since(session, record, state, now, first_sync=first_sync)
    next_attempt_at = None if state == "disabled" else _due_at(record)
    return MailboxHealth(
        mailbox_id=mailbox_id,
        state=state,
        summary=_SENTENCES[state](
            _Findings(record, since, next_attempt_at, blockers, backfill, now)
        ),
        since=since,
        next_attempt_at=next_attempt_at,
        last_success_at=record.last_success_at,
        lag_seconds=_lag_seconds(record, now),
        blockers=blockers,
        backfill=backfill,
        watch=_watch(record, now),
    )


def fleet_health(
    session: Session,
    settings: Settings,
    *,
    queue_depth: int | None,
    now: datetime,
    worst: int = 10,
    failures: int = 10,
) -> FleetHealth:
    """Count the mailboxes per state and list the furthest behind and the newest failures."""
    counts: dict[HealthState, int] = dict.fromkeys(HEALTH_STATES, 0)
    lagging: list[LaggingMailbox] = []
    for record in mailbox_records(session):
        state = classify(record, now, settings)
        counts[state] += 1
        if state != "disabled":
            lagging.append(
                LaggingMailbox(
                    record.mailbox_id,
                    record.email_address,
                    state,
                    _lag_seconds(record, now),
                    record.last_success_at,
                )
            )
    lagging.sort(key=lambda mailbox: (-mailbox.lag_seconds, mailbox.mailbox_id))
    return FleetHealth(
        counts=counts,
        worst_lags=lagging[:worst],
        recent_failures=recent_failures(session, failures),
        queue_depth=queue_depth,
        max_lag_seconds=lagging[0].lag_seconds if lagging else 0,
    )


# -- the facts behind the rules -------------------------------------------------------------


def _failing_runs(record: MailboxRecord) -> bool:
    return (
        record.consecutive_failures > 0
        and record.latest_status is SyncRunStatus.FAILED
        and record.latest_error_code != WAITING_FOR_CONNECTION_SLOT
    )


def _backoff(record: MailboxRecord) -> timedelta:
    """How long the engine chose to wait after the latest failure (it set both at once)."""
    if record.next_sync_at is None or record.latest_finished_at is None:
        return timedelta(0)
    return record.next_sync_at - record.latest_finished_at


def _behind(record: MailboxRecord, now: datetime, settings: Settings) -> bool:
    """The latest run found no connection slot, or it is overdue with no run holding it."""
    if record.latest_error_code == WAITING_FOR_CONNECTION_SLOT:
        return True
    overdue = _overdue_since(record, now)
    grace = timedelta(seconds=settings.health_behind_after_seconds)
    return overdue is not None and now - overdue > grace


def _due_at(record: MailboxRecord) -> datetime:
    """When the schedule wants the mailbox synced; never scheduled: since it was registered."""
    return record.next_sync_at or record.created_at


def _run_holds_it(record: MailboxRecord, now: datetime) -> bool:
    return (
        record.running_since is not None
        and record.lease_expires_at is not None
        and record.lease_expires_at > now
    )


def _overdue_since(record: MailboxRecord, now: datetime) -> datetime | None:
    """When the mailbox became due with no run holding it; None when it is not due."""
    if _run_holds_it(record, now):
        return None
    due = [moment for moment in (record.queued_since, _due_at(record)) if moment is not None]
    passed = [moment for moment in due if moment <= now]
    return min(passed) if passed else None


def _lag_seconds(record: MailboxRecord, now: datetime) -> int:
    seen = record.last_success_at or record.created_at
    return max(0, int((now - seen).total_seconds()))


def _lease_held_elsewhere(record: MailboxRecord, now: datetime) -> bool:
    return (
        record.lease_owner is not None
        and record.lease_expires_at is not None
        and record.lease_expires_at > now
        and record.running_since is None
    )


def _failure_code(error_code: str | None) -> str:
    """The blocker a failed run stands for: network failures are all `unreachable`."""
    if error_code in _NETWORK_CODES:
        return "unreachable"
    if error_code == "invalid_grant":
        return "auth_failed"
    return error_code or "sync_failed"


def _blockers(
    session: Session,
    record: MailboxRecord,
    state: HealthState,
    now: datetime,
    queue_depth: int | None,
) -> list[Blocker]:
    blockers: list[Blocker] = []
    failing = state in ("auth_failed", "failing", "retrying") and (
        record.latest_status is SyncRunStatus.FAILED
    )
    code = record.latest_error_code
    if state == "auth_failed" or (failing and code is not None):
        since = failing_since(session, record.mailbox_id, code)
        blocker = "auth_failed" if state == "auth_failed" else _failure_code(code)
        blockers.append(Blocker(blocker, record.latest_error or "the login was refused", since))
    if failing and record.next_sync_at is not None and record.next_sync_at > now:
        detail = (
            f"next attempt at {_moment(record.next_sync_at)}, after"
            f" {_attempts(record.consecutive_failures)}"
        )
        blockers.append(Blocker("backoff", detail, record.latest_finished_at))
    if code == WAITING_FOR_CONNECTION_SLOT:
        since = failing_since(session, record.mailbox_id, code)
        blockers.append(Blocker(code, record.latest_error or "no connection slot was free", since))
    if _lease_held_elsewhere(record, now):
        assert record.lease_expires_at is not None
        detail = f"{record.lease_owner} holds the mailbox until {_moment(record.lease_expires_at)}"
        blockers.append(Blocker("lease_held_elsewhere", detail, None))
    overdue = _overdue_since(record, now)
    if state == "behind" and code != WAITING_FOR_CONNECTION_SLOT and overdue is not None:
        if queue_depth:
            detail = f"{queue_depth} {'job is' if queue_depth == 1 else 'jobs are'} waiting"
            blockers.append(Blocker("queue_backlog", f"{detail} in the queue", overdue))
        elif not _lease_held_elsewhere(record, now):
            detail = "due but not started, and no job is queued: is a worker running?"
            blockers.append(Blocker("not_picked_up", detail, overdue))
    return blockers


def _since(
    session: Session, record: MailboxRecord, state: HealthState, now: datetime, *, first_sync: bool
) -> datetime | None:
    """When the state began, as far as the records tell."""
    if state in ("auth_failed", "failing", "retrying"):
        return failing_since(session, record.mailbox_id)
    if state == "behind" and record.latest_error_code == WAITING_FOR_CONNECTION_SLOT:
        return failing_since(session, record.mailbox_id, WAITING_FOR_CONNECTION_SLOT)
    if state == "backfilling":  # the first sync: since it began; a folder added later: unknown
        return first_run_started_at(session, record.mailbox_id) if first_sync else None
    began: dict[HealthState, datetime | None] = {
        "disabled": record.updated_at,
        "behind": _overdue_since(record, now),
        "syncing": record.running_since,
    }
    return began.get(state, record.last_success_at)


def _watch(record: MailboxRecord, now: datetime) -> WatchHealth:
    if not record.watch or record.status is not MailboxStatus.ACTIVE:
        return WatchHealth("off", None)
    if record.watch_owner is None or record.watch_expires_at is None:
        return WatchHealth("polling", None)
    if record.watch_expires_at >= now:
        return WatchHealth("watching", None)
    return WatchHealth("reconnecting", record.watch_expires_at)


def _backfill(folders: list[FolderBackfill], today: date) -> Backfill:
    progress = [
        FolderProgress(
            folder.folder_id,
            folder.full_name,
            folder.complete,
            folder.stored,
            _estimated_total(folder, today),
        )
        for folder in folders
    ]
    pending = [folder for folder in folders if not folder.complete]
    reached = [
        folder.oldest_received.date()
        for folder in (pending or folders)
        if folder.oldest_received is not None
    ]
    windows = [folder.window_start for folder in folders if folder.window_start is not None]
    return Backfill(
        complete=bool(folders) and not pending,
        oldest_date_reached=min(reached) if reached else None,
        window_start=min(windows) if windows else None,
        folders=progress,
    )


def _estimated_total(folder: FolderBackfill, today: date) -> int | None:
    """Estimate the messages of the folder's window (see the module docstring)."""
    if folder.complete:
        return folder.stored
    if not folder.started or folder.stored == 0:
        return None
    at_most = folder.stored + max((folder.low_uid or 1) - 1, 0)
    if folder.window_start is None or folder.oldest_received is None:
        return at_most
    window_days = (today - folder.window_start).days
    covered_days = (today - folder.oldest_received.date()).days
    if covered_days <= 0 or window_days <= covered_days:
        return at_most
    return min(at_most, round(folder.stored * window_days / covered_days))


# -- the sentence ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Findings:
    """What a mailbox's sentence is made of."""

    record: MailboxRecord
    since: datetime | None
    next_attempt_at: datetime | None
    blockers: list[Blocker]
    backfill: Backfill
    now: datetime

    @property
    def error(self) -> str:
        return self.record.latest_error or "the last sync failed"

    @property
    def next_attempt(self) -> str:
        if self.next_attempt_at is None:
            return "no attempt is planned"
        if self.next_attempt_at <= self.now:
            return "next attempt due now"
        return f"next attempt in {_duration(self.next_attempt_at - self.now)}"

    @property
    def last_sync(self) -> str:
        return f"the last sync ended {_ago(self.record.last_success_at, self.now)}"


def _failed_sentence(findings: _Findings, verb: str) -> str:
    attempts = _attempts(findings.record.consecutive_failures)
    return (
        f"{verb} since {_moment(findings.since)}: {findings.error} ({attempts});"
        f" {findings.next_attempt}."
    )


def _behind_sentence(findings: _Findings) -> str:
    if findings.record.latest_error_code == WAITING_FOR_CONNECTION_SLOT:
        return f"{findings.error.rstrip('.')}; {findings.next_attempt}."
    why = "; ".join(blocker.detail for blocker in findings.blockers) or "it has not started"
    return f"Behind: due since {_moment(findings.since)}; {why}."


def _backfill_sentence(findings: _Findings) -> str:
    if _run_holds_it(findings.record, findings.now):
        then = "running now"
    else:
        then = findings.next_attempt.replace("attempt", "run")
    return f"{_first_sync(findings.backfill)}; {then}."


# One plain sentence per state, which a support person can read out.
_SENTENCES: dict[HealthState, Callable[[_Findings], str]] = {
    "disabled": lambda _: "Disabled: it is not synced until it is enabled again.",
    "auth_failed": lambda f: (
        f"The server refuses the credentials ({f.error}); syncing waits for new"
        f" credentials or a reconnect, {f.next_attempt}."
    ),
    "failing": lambda f: _failed_sentence(f, "Failing"),
    "retrying": lambda f: _failed_sentence(f, "Retrying"),
    "behind": _behind_sentence,
    "backfilling": _backfill_sentence,
    "syncing": lambda f: f"Syncing now; {f.last_sync}.",
    "healthy": lambda f: f"Up to date: {f.last_sync}; {f.next_attempt}.",
}


def _first_sync(backfill: Backfill) -> str:
    stored = sum(folder.stored for folder in backfill.folders)
    if stored == 0:
        return "First sync not started yet" if not backfill.folders else "First sync started"
    percent = backfill.percent()
    oldest = backfill.oldest_date_reached
    reached = "" if oldest is None else f", back to {oldest.isoformat()}"
    if percent is None:
        return f"First sync: {stored} messages stored so far{reached}"
    return f"First sync {percent} % done{reached}"


def _ago(moment: datetime | None, now: datetime) -> str:
    return "never" if moment is None else f"{_duration(now - moment)} ago"


def _attempts(count: int) -> str:
    return f"{count} failed attempt{'' if count == 1 else 's'}"


def _moment(moment: datetime | None) -> str:
    return "an unknown time" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


def _duration(span: timedelta) -> str:
    """Seconds under two minutes, then minutes, hours, days: as a person says it."""
    seconds = max(0, int(span.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"
