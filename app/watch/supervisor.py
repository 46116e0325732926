"""The watcher process: hold one watch per leased mailbox and queue a sync for each change.

    every WATCH_REFRESH_SECONDS (in a thread, one transaction):
      renew this process's watch leases (the heartbeat)
      take free or expired ones, up to WATCH_MAX_CONNECTIONS in all
      read the leased mailboxes (active, `watch` on) and their enabled folders
      give back the leases on mailboxes no longer watchable
    then, per mailbox:
      gone, disabled, auth_failed, `watch` off, lease lost ..... stop its watch
      settings, credentials or enabled folders changed ......... restart its watch
      OAuth token expires within 5 minutes ..................... restart: the new
                                                                 session refreshes it
      new .................................................... start its watch
    a watch holds a slot of the connection budget (app.connection_budget: the host's
      WATCH_MAX_CONNECTIONS_PER_HOST, the account's IMAP_MAX_CONNECTIONS_PER_ACCOUNT) from
      its start to its end, reconnects included; none free, or Redis away: start again
      after a minute
    a watch (app.watch.mailbox_watch), its connections paced at WATCH_CONNECT_RATE:
      folders changed ............ enqueue_watched_sync: one queued, one running
      BlockedHost, TlsFailed ..... stop until the settings change
      AuthenticationFailed, invalid_grant
                       ............ stop; queue one sync, which records the failure
                                    (auth_failed: unwatched until new credentials) and
                                    tells the owner (the watcher tells nobody); if that
                                    sync logged in after all, watch again in an hour
      anything else ended it ..... start again after a minute
    SIGINT / SIGTERM .............. cancel the watches, give the leases back

Leases live on the `mailbox` row (`watch_owner`, `watch_expires_at`), so any
number of watcher processes on any machines split the mailboxes, and a killed
one's mailboxes are taken by the others once its leases run out
(WATCH_LEASE_SECONDS), or at once by a watcher on its machine that can tell its
process is gone (app.sync.holder). The watcher never writes mail: the sync engine does,
and the outbox announces it. A watch that begins compares each folder's state
with the one its last sync left and queues a sync of the folders behind it, so
mail that arrived while nothing watched does not wait for the schedule, and a
restarted watcher queues nothing for mailboxes that did not change; after a
reconnect it queues one of every folder (app.watch.mailbox_watch).

The watcher's database reads (and the OAuth refreshes before its logins) run
in threads of its own: inside `imap-bridge run` the worker's pool is busy with
syncs, and a watch start must not wait for them, nor a slow token endpoint hold
up the worker's look-ups.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from arq import ArqRedis
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from app.connection_budget import ConnectionBudgetError, Pool, connection_budget
from app.db import create_db_engine, session_scope
from app.db.models import AuthType, Mailbox, SyncTrigger, utcnow
from app.db.repositories.folders import mailbox_folders
from app.db.repositories.mailboxes import get_mailbox
from app.db.repositories.watch_leases import (
    HeldMailbox,
    claim_watch_leases,
    enabled_folder_names,
    held_watch_mailboxes,
    live_watch_holders,
    release_watch_leases,
    renew_watch_leases,
)
from app.imap.aio_client import AsyncConnection
from app.imap.aio_connect import connect_async
from app.imap.changes import MailboxStatus
from app.imap.errors import AuthenticationFailed
from app.job_queue import (
    REDIS_ERRORS,
    REDIS_RETRY,
    create_queue,
    enqueue_sync,
    enqueue_watched_sync,
    until_redis_answers,
)
from app.oauth.errors import InvalidGrantError, OAuthError, ProviderHostBlockedError
from app.security import SecretBox, SecretError
from app.sync.connection_check import refuse_plaintext
from app.sync.credentials import imap_config, login_options
from app.sync.errors import MailboxNotFoundError, PlaintextRefusedError
from app.sync.holder import holder_is_gone, worker_identity
from app.sync.token_refresh import REFRESH_MARGIN, refresh_if_expiring
from app.watch.mailbox_watch import PERMANENT_FAILURES, WatchMode, WatchTiming, watch_mailbox

log = logging.getLogger(__name__)

# Failures only new settings or credentials mend: the watch waits for them.
_STOPPING_FAILURES = (
    *PERMANENT_FAILURES,
    InvalidGrantError,
    ProviderHostBlockedError,
    PlaintextRefusedError,
)
# A watch that ended for any other reason starts again after this long.
_RESTART_AFTER_SECONDS = 60.0
_REFUSED_LOGIN_RETRY_SECONDS = 3600.0
# Threads for the watcher's database reads and token refreshes (see the module docstring).
_THREADS = 4
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class WatchTarget:
    """A leased mailbox as the watch needs it; a change of `key` restarts its watch."""

    mailbox_id: int
    host: str
    username: str
    folders: tuple[str, ...]
    key: tuple[object, ...]  # connection settings, credentials and enabled folders
    token_expires_at: datetime | None

    @classmethod
    def of(cls, mailbox: HeldMailbox, folders: list[str]) -> WatchTarget:
        credential = (
            mailbox.refresh_token_enc
            if mailbox.auth_type is AuthType.OAUTH
            else mailbox.password_enc
        )
        key = (
            mailbox.host,
            mailbox.port,
            mailbox.security,
            mailbox.username,
            mailbox.tls_verify,
            mailbox.auth_type,
            credential,
            tuple(folders),
        )
        oauth = mailbox.auth_type is AuthType.OAUTH and mailbox.refresh_token_enc is not None
        expires_at = mailbox.token_expires_at if oauth else None
        return cls(mailbox.id, mailbox.host, mailbox.username, tuple(folders), key, expires_at)


@dataclass(slots=True)
class _Watch:
    target: WatchTarget
    task: asyncio.Task[None]


@dataclass(frozen=True, slots=True)
class _Stopped:
    """A mailbox not to watch again before `until`, or before its settings change."""

    key: tuple[object, ...]
    until: float


class ConnectPacer:
    """Let connections start at most `per_second` per second, in the order they ask."""

    def __init__(self, per_second: float) -> None:
        self._interval = 1.0 / per_second
        self._next = 0.0

    async def wait(self) -> None:
        now = asyncio.get_running_loop().time()
        slot = max(now, self._next)
        self._next = slot + self._interval
        await asyncio.sleep(slot - now)


class WatchSupervisor:
    """Watch this process's share of the mailboxes until `stop()` (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        owner: str | None = None,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._queue: ArqRedis | None = None  # opened by run(), once Redis answers
        self.owner = owner or worker_identity()
        self._secrets = SecretBox.from_settings(settings)
        self._pacer = ConnectPacer(settings.watch_connect_rate)
        self._timing = WatchTiming(
            poll_seconds=settings.watch_poll_seconds,
            idle_renew_seconds=settings.watch_idle_renew_seconds,
        )
        self._watches: dict[int, _Watch] = {}
        self._stopped: dict[int, _Stopped] = {}
        # The expiring token each mailbox's watch was restarted for: once per token, so a
        # provider that hands out short-lived tokens does not cause a restart every refresh.
        self._restarted_for: dict[int, datetime] = {}
        self._stopping = asyncio.Event()
        self._threads = ThreadPoolExecutor(_THREADS, thread_name_prefix="imap-bridge-watch")

    async def _in_thread(self, call: Callable[..., _T], *args: object) -> _T:
        """Run a blocking call in the watcher's own threads."""
        return await asyncio.get_running_loop().run_in_executor(self._threads, call, *args)

    @property
    def watched(self) -> frozenset[int]:
        """The mailboxes with a running watch."""
        return frozenset(i for i, watch in self._watches.items() if not watch.task.done())

    async def run(self) -> None:
        """Re-read the mailboxes every WATCH_REFRESH_SECONDS and keep their watches in step.

        Nothing is watched until Redis answers: a change could not be queued.
        """
        try:
            self._queue = await self._open_queue()
            while not self._stopping.is_set():
                try:
                    targets = await self._in_thread(self._read_targets)
                except SQLAlchemyError as exc:  # the watches go on; their leases may lapse
                    log.warning("watch.database_unavailable", extra={"error": type(exc).__name__})
                else:
                    self._apply(targets)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stopping.wait(), self._settings.watch_refresh_seconds
                    )
        finally:
            await self._close()

    async def _open_queue(self) -> ArqRedis | None:
        """Connect to the queue, again (1 s doubling to 10 s) while Redis does not answer."""
        attempt = 0
        while not self._stopping.is_set():
            try:
                return await create_queue(self._settings)
            except REDIS_ERRORS as exc:
                attempt += 1
                delay = REDIS_RETRY.delay(attempt)
                log.warning(
                    "watch.redis_unavailable",
                    extra={"error": type(exc).__name__, "retry_in": delay},
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
        return None

    @property
    def _queue_pool(self) -> ArqRedis:
        assert self._queue is not None, "run() opens the queue before any watch starts"
        return self._queue

    def stop(self) -> None:
        """Stop watching: `run()` cancels the watches and gives the leases back."""
        self._stopping.set()

    async def run_until_signalled(self) -> None:
        """Run until SIGINT or SIGTERM: the `imap-bridge watch` command."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop)
        await self.run()

    def _read_targets(self) -> dict[int, WatchTarget]:
        """Renew and take leases, then read what this process watches (one transaction)."""
        now = utcnow()
        duration = timedelta(seconds=self._settings.watch_lease_seconds)
        with session_scope(self._engine) as session:
            renew_watch_leases(session, self.owner, now, duration)
            held = held_watch_mailboxes(session, self.owner, now)
            limit = self._settings.watch_max_connections - len(held)
            if limit > 0:
                holders = live_watch_holders(session, now) - {self.owner}
                dead = [holder for holder in holders if holder_is_gone(holder)]
                claim_watch_leases(session, self.owner, now, duration, limit, dead_holders=dead)
                held = held_watch_mailboxes(session, self.owner, now)
            ids = [mailbox.id for mailbox in held]
            release_watch_leases(session, self.owner, now)
            folders = enabled_folder_names(session, ids)
            return {i: WatchTarget.of(m, folders[i]) for i, m in zip(ids, held, strict=True)}

    def _apply(self, targets: Mapping[int, WatchTarget]) -> None:
        """Stop, restart and start watches so that they match `targets`."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for mailbox_id, watch in list(self._watches.items()):
            target = targets.get(mailbox_id)
            if target is None or target.key != watch.target.key or watch.task.done():
                self._end(mailbox_id)
            elif self._token_expiring(target) and (
                self._restarted_for.get(mailbox_id) != target.token_expires_at
            ):
                assert target.token_expires_at is not None
                self._restarted_for[mailbox_id] = target.token_expires_at
                log.info("watch.token_refresh", extra={"mailbox_id": mailbox_id})
                self._end(mailbox_id)
        for mailbox_id, target in targets.items():
            stopped = self._stopped.get(mailbox_id)
            if mailbox_id in self._watches or (
                stopped is not None and stopped.key == target.key and stopped.until > now
            ):
                continue
            self._stopped.pop(mailbox_id, None)
            task = asyncio.create_task(self._watch(target), name=f"watch-{mailbox_id}")
            self._watches[mailbox_id] = _Watch(target, task)
        for forgotten in (self._stopped, self._restarted_for):
            for mailbox_id in set(forgotten) - set(targets):
                del forgotten[mailbox_id]

    def _end(self, mailbox_id: int) -> None:
        watch = self._watches.pop(mailbox_id)
        watch.task.cancel()
        log.info("watch.stopped", extra={"mailbox_id": mailbox_id})

    @staticmethod
    def _token_expiring(target: WatchTarget) -> bool:
        expires = target.token_expires_at
        return expires is not None and expires <= utcnow() + REFRESH_MARGIN

    async def _watch(self, target: WatchTarget) -> None:
        """Watch one mailbox until cancelled, or until a failure stops it (module docstring)."""
        mailbox_id = target.mailbox_id

        async def connect() -> AsyncConnection:
            await self._pacer.wait()
            return await self._connect(mailbox_id)

        async def on_change(folders: frozenset[str]) -> None:
            await until_redis_answers(
                lambda: enqueue_watched_sync(self._queue_pool, mailbox_id, folders),
                "watch.waits_for_redis",
                {"mailbox_id": mailbox_id},
            )

        async def on_watching(mode: WatchMode) -> None:
            log.info("watch.watching", extra={"mailbox_id": mailbox_id, "mode": mode})

        async def checkpoint() -> dict[str, MailboxStatus]:
            return await self._in_thread(self._checkpoint, mailbox_id)

        try:
            budget = connection_budget(self._settings)  # once run() found Redis: see its doc
            async with budget.slot_async(Pool.WATCH, target.host, target.username):
                await watch_mailbox(
                    connect,
                    target.folders,
                    on_change,
                    self._timing,
                    on_watching=on_watching,
                    checkpoint=checkpoint,
                )
        except ConnectionBudgetError as exc:  # the host's watch slots are taken, or Redis away
            log.info(
                "watch.no_connection_slot", extra={"mailbox_id": mailbox_id, "error_code": exc.code}
            )
            self._pause(target)
        except _STOPPING_FAILURES as exc:
            log.warning("watch.failed", extra={"mailbox_id": mailbox_id, "error_code": exc.code})
            refused = isinstance(exc, (AuthenticationFailed, InvalidGrantError))
            # A refused login is retried after an hour anyway: the queued sync marks the
            # mailbox auth_failed (unwatched until new credentials), unless it logged in.
            until = asyncio.get_running_loop().time() + _REFUSED_LOGIN_RETRY_SECONDS
            self._stopped[mailbox_id] = _Stopped(target.key, until if refused else math.inf)
            if refused:
                # The sync path records the failure and tells the owner, once.
                await until_redis_answers(
                    lambda: enqueue_sync(self._queue_pool, mailbox_id, trigger=SyncTrigger.WATCH),
                    "watch.waits_for_redis",
                    {"mailbox_id": mailbox_id},
                )
        except MailboxNotFoundError:
            pass  # deleted: the next refresh forgets it
        except (OAuthError, SecretError) as exc:  # the provider is away, or a key is missing
            log.warning(
                "watch.login_unavailable", extra={"mailbox_id": mailbox_id, "error_code": exc.code}
            )
            self._pause(target)
        except Exception:
            log.exception("watch.crashed", extra={"mailbox_id": mailbox_id})
            self._pause(target)

    def _pause(self, target: WatchTarget) -> None:
        """Start this watch again after a minute, sooner if its settings change."""
        until = asyncio.get_running_loop().time() + _RESTART_AFTER_SECONDS
        self._stopped[target.mailbox_id] = _Stopped(target.key, until)

    async def _connect(self, mailbox_id: int) -> AsyncConnection:
        """Open a session with the stored credentials, refreshing an expiring OAuth token first."""
        mailbox = await self._in_thread(self._reread, mailbox_id)
        options = login_options(self._settings)
        refuse_plaintext(mailbox.security, options)
        return await connect_async(imap_config(mailbox, self._secrets), options.connect)

    def _checkpoint(self, mailbox_id: int) -> dict[str, MailboxStatus]:
        """Each synced folder's state as its last sync left it."""
        with session_scope(self._engine) as session:
            folders = mailbox_folders(session, mailbox_id)
        return {
            folder.full_name: MailboxStatus(
                messages=folder.message_count,
                uidnext=folder.uidnext,
                uidvalidity=folder.uidvalidity,
                highestmodseq=folder.highestmodseq,
            )
            for folder in folders
            if folder.uidnext is not None
        }

    def _reread(self, mailbox_id: int) -> Mailbox:
        with session_scope(self._engine) as session:
            mailbox = get_mailbox(session, mailbox_id)
        if mailbox is None:
            raise MailboxNotFoundError(f"mailbox {mailbox_id} was deleted")
        return refresh_if_expiring(
            self._engine,
            mailbox,
            self._secrets,
            allow_private_hosts=self._settings.oauth_allow_private_hosts,
        )

    async def _close(self) -> None:
        """Cancel the watches and give the leases back, so other watchers take them at once."""
        tasks = [watch.task for watch in self._watches.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._watches.clear()
        try:
            await self._in_thread(self._release_all)
        except SQLAlchemyError as exc:  # they run out by themselves
            log.warning("watch.leases_not_released", extra={"error": type(exc).__name__})
        if self._queue is not None:
            await self._queue.aclose()
        self._threads.shutdown(wait=False)

    def _release_all(self) -> None:
        with session_scope(self._engine) as session:
            release_watch_leases(session, self.owner)


@contextlib.asynccontextmanager
async def watch_supervisor(settings: Settings) -> AsyncIterator[WatchSupervisor]:
    """Give a supervisor its own database engine; dispose of it at the end."""
    engine = create_db_engine(settings.database_url)
    try:
        yield WatchSupervisor(settings, engine)
    finally:
        engine.dispose()
