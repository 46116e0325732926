"""Watch one mailbox and say which of its folders changed; never touch its mail.

    connect -> NOTIFY offered? --yes--> SELECT INBOX, NOTIFY SET (INBOX + the other folders)
               |                        -> wait in IDLE: each event names its folder
               +--no, IDLE offered--> SELECT INBOX, wait in IDLE; every poll_seconds
               |                        re-issue IDLE, STATUS the other folders, compare
               +--neither----------> STATUS every folder every poll_seconds and compare
    watching -> every folder's state (STATUS; INBOX's from SELECT) against
        `checkpoint()`, the sync's last one: folders it is behind -> on_change
        (mail that arrived while nothing watched does not wait for the schedule)
    a change -> on_change(folders)   (the caller queues one incremental sync, coalesced)
    NetworkError / ProtocolError -> reconnect after a jittered backoff, then
        on_change(every folder): what changed while disconnected is unknown
    AuthenticationFailed / BlockedHost / TlsFailed -> raised: watching stops until
        the credentials or settings change (the sync path tells the owner)

The caller stops a watch by cancelling its task. Only the folders given are
watched; which folders those are (the enabled ones) is the caller's business.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from app.backoff import Backoff
from app.imap.aio_client import DEFAULT_IDLE_RENEW_SECONDS, AsyncConnection
from app.imap.changes import (
    Event,
    FolderChanged,
    MailboxStatus,
    NotificationsOverflowed,
    SelectedMailbox,
)
from app.imap.errors import AuthenticationFailed, BlockedHost, ImapError, TlsFailed

log = logging.getLogger(__name__)

INBOX = "INBOX"
# Failures that a retry cannot mend: they wait for new credentials or settings.
PERMANENT_FAILURES = (AuthenticationFailed, BlockedHost, TlsFailed)

# How a session watches: NOTIFY, IDLE on INBOX (others polled), or STATUS polling only.
WatchMode = Literal["notify", "idle", "poll"]
Connect = Callable[[], Awaitable[AsyncConnection]]
OnChange = Callable[[frozenset[str]], Awaitable[None]]
OnWatching = Callable[[WatchMode], Awaitable[None]]
# The state each folder had at the end of its last sync (absent: never synced).
Checkpoint = Callable[[], Awaitable[Mapping[str, MailboxStatus]]]


@dataclass(frozen=True, slots=True)
class WatchTiming:
    """How often a watch polls, renews IDLE and retries; tests shorten all of them."""

    poll_seconds: float = 60.0
    idle_renew_seconds: float = DEFAULT_IDLE_RENEW_SECONDS
    reconnect: Backoff = field(default_factory=lambda: Backoff(first=5.0, cap=300.0))


async def watch_mailbox(
    connect: Connect,
    folders: Sequence[str],
    on_change: OnChange,
    timing: WatchTiming | None = None,
    *,
    use_notify: bool = True,
    on_watching: OnWatching | None = None,
    checkpoint: Checkpoint | None = None,
) -> None:
    """Watch `folders` until cancelled; raise the permanent failure that ends watching.

    `connect` opens a fresh authenticated session (and refreshes an OAuth token
    first where needed). `use_notify=False` skips NOTIFY even where offered.
    `on_watching` hears each time a session is watching, and how: from then on
    no change is missed. `checkpoint` reads the sync's last state of each
    folder: a session that begins reports the folders the server is ahead of.
    """
    timing = timing or WatchTiming()
    watched = frozenset(folders)
    failures = 0
    while True:
        try:
            connection = await connect()
        except PERMANENT_FAILURES:
            raise
        except ImapError as exc:
            failures += 1
            await _wait_before_retry(timing, failures, exc)
            continue
        try:
            if failures:  # reconnected: changes made meanwhile were not seen
                await on_change(watched)
            failures = 0
            await _watch_session(
                connection,
                watched,
                on_change,
                timing,
                use_notify=use_notify,
                on_watching=on_watching,
                checkpoint=checkpoint,
            )
        except PERMANENT_FAILURES:
            raise
        except ImapError as exc:
            failures += 1
            await _wait_before_retry(timing, failures, exc)
        finally:
            await connection.abort()


async def _wait_before_retry(timing: WatchTiming, failures: int, error: ImapError) -> None:
    """Sleep the backoff's delay with +-25 % jitter, so a restarted server is not stormed."""
    delay = timing.reconnect.delay(failures) * random.uniform(0.75, 1.25)  # noqa: S311
    log.info("watch.reconnect_wait", extra={"error_code": error.code, "seconds": round(delay, 1)})
    await asyncio.sleep(delay)


async def _watch_session(
    connection: AsyncConnection,
    folders: frozenset[str],
    on_change: OnChange,
    timing: WatchTiming,
    *,
    use_notify: bool,
    on_watching: OnWatching | None,
    checkpoint: Checkpoint | None,
) -> None:
    """Run one session's watch until it fails; see the module docstring for the three ways."""
    mode: WatchMode
    await connection.enable_change_tracking()
    idle_on_inbox = INBOX in folders and connection.has("IDLE")
    selected: SelectedMailbox | None = None
    if use_notify and connection.has("NOTIFY") and connection.has("IDLE"):
        if INBOX in folders:
            selected = await connection.select(INBOX, readonly=True)
        await connection.notify(sorted(folders - {INBOX}))
        mode, polled = "notify", frozenset[str]()
    elif idle_on_inbox:
        selected = await connection.select(INBOX, readonly=True)
        mode, polled = "idle", folders - {INBOX}
    else:
        mode, polled = "poll", folders
    # Cyrus without `idled` and Courier without IMAP_ENHANCEDIDLE look at the mailbox only
    # every 60 s while idling (imapidlepoll, IMAP_IDLE_TIMEOUT), but at once when IDLE
    # begins: re-issuing IDLE every poll interval bounds INBOX's delay by that interval, as
    # the STATUS polls of the other folders already do whenever there are any.
    renew_after = timing.idle_renew_seconds
    if mode == "idle":
        renew_after = min(renew_after, timing.poll_seconds)
    # Read once the watch is set up, so what arrives from here on is an event or a later poll.
    last_seen = {folder: await connection.status(folder) for folder in polled}
    if on_watching is not None:
        await on_watching(mode)
    await _report_behind(
        connection, folders, checkpoint, on_change, known=last_seen, selected=selected
    )
    while True:
        if connection.has("IDLE") and (idle_on_inbox or not polled):
            changed = await _changes_within(connection, folders, timing, renew_after)
        else:
            await asyncio.sleep(timing.poll_seconds)
            changed = _changed_folders(await connection.noop(), folders)
        for folder in polled:
            status = await connection.status(folder)
            if status != last_seen[folder]:
                changed |= {folder}
            last_seen[folder] = status
        if changed:
            await on_change(frozenset(changed))


async def _changes_within(
    connection: AsyncConnection, folders: frozenset[str], timing: WatchTiming, renew_after: float
) -> set[str]:
    """Wait in IDLE up to one poll interval for a change; then take what else is queued."""
    event = await connection.next_event(timing.poll_seconds, renew_after=renew_after)
    if event is None:
        return set()
    events = [event]
    while (more := await connection.next_event(0)) is not None:
        events.append(more)
    return _changed_folders(events, folders)


async def _report_behind(
    connection: AsyncConnection,
    folders: frozenset[str],
    checkpoint: Checkpoint | None,
    on_change: OnChange,
    *,
    known: Mapping[str, MailboxStatus],
    selected: SelectedMailbox | None,
) -> None:
    """Report the folders whose state is not their checkpoint.

    `known` holds the states just polled, `selected` INBOX's; the others are asked for.
    """
    if checkpoint is None:
        return
    seen = dict(known)
    if selected is not None:
        seen[INBOX] = _status_of(selected)
    for folder in sorted(folders - seen.keys()):
        seen[folder] = await connection.status(folder)
    behind = _folders_behind(await checkpoint(), seen)
    if behind:
        await on_change(behind)


def _status_of(selected: SelectedMailbox) -> MailboxStatus:
    return MailboxStatus(
        messages=selected.exists,
        uidnext=selected.uidnext,
        uidvalidity=selected.uidvalidity,
        highestmodseq=selected.highestmodseq,
    )


def _folders_behind(
    checkpoint: Mapping[str, MailboxStatus], seen: Mapping[str, MailboxStatus]
) -> frozenset[str]:
    """Name the folders whose state on the server is not the one their last sync left.

    A folder never synced is behind. HIGHESTMODSEQ (flag changes) is compared
    where the server reports it; without it only arrivals and expunges show.
    """
    behind: set[str] = set()
    for folder, now in seen.items():
        then = checkpoint.get(folder)
        if then is None or _moved(then, now):
            behind.add(folder)
    return frozenset(behind)


def _moved(then: MailboxStatus, now: MailboxStatus) -> bool:
    counters = (now.uidvalidity, now.uidnext, now.messages)
    if counters != (then.uidvalidity, then.uidnext, then.messages):
        return True
    return now.highestmodseq is not None and now.highestmodseq != then.highestmodseq


def _changed_folders(events: Sequence[Event], folders: frozenset[str]) -> set[str]:
    """Name the watched folders the events touch; an overflow touches them all."""
    changed: set[str] = set()
    for event in events:
        if isinstance(event, NotificationsOverflowed):
            return set(folders)
        if isinstance(event, FolderChanged) and event.status == MailboxStatus():
            continue  # nothing said about it
        if event.folder in folders:
            changed.add(event.folder)
    return changed
