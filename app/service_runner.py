"""Run the whole service in one process: `imap-bridge run`, which is what `make run` starts.

    listen on --host:--port ............. refused (port taken): say so, exit 1
    migrate the database ................ SQLite under ./var/ unless DATABASE_URL
    no live API key? .................... create "default" and print it (first run only)
    find the queue's Redis .............. REDIS_URL, else start the embedded one (app.job_queue)
    one asyncio loop
      uvicorn Server.serve() ............ the API
      SupervisedWorker.run() ............ one arq worker: the cron and the sync jobs; a new
                                          one polls after a Redis outage (app.worker)
      WatchSupervisor.run() ............. the watcher, unless WATCH_ENABLED is false: new
                                          mail is synced within seconds (app.watch); its
                                          connections open at WATCH_CONNECT_RATE, so a
                                          warm-up leaves the loop to the API
    the API listens ..................... print its URL and the docs URL
    SIGINT or SIGTERM ................... stop both:
      the API ........................... stops accepting, finishes open requests
      the watcher ....................... closes its connections, gives its leases back
      the worker ........................ cancels its jobs (arq queues them again) and
                                          closes its pool; a sync thread stops at its time
                                          budget, and the process waits for it
      every Redis client is closed ...... the embedded Redis shuts down at exit (snapshot
                                          saved), unless another process still uses it
      exit 0 (a second signal stops waiting for open HTTP connections)
    either half ends on its own ......... stop the other, say why, exit 1

One process running both in one loop, rather than two child processes: the
sync engine already runs in threads, so the API stays responsive while a sync
runs; one signal handler stops both halves in a known order with nothing to
supervise (no orphaned child when the parent is killed, no half-running
service when one child dies); and the process that starts the embedded Redis
is the one whose exit stops it. The price is one GIL for both: a large first
sync makes API answers slower, which is fine on one machine. Production runs
`imap-bridge serve` and `imap-bridge worker` as separate processes instead.

uvicorn and arq each install SIGINT/SIGTERM handlers of their own; here
neither does (`capture_signals` is a no-op; the supervisor starts arq's
Workers with `handle_signals=False`), so a signal stops both, and uvicorn does
not raise it again once it has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Iterator
from ipaddress import ip_address
from typing import TextIO

import uvicorn
from sqlalchemy import make_url

from app.config import Settings
from app.db import create_db_engine, session_scope
from app.db.migrate import upgrade_database
from app.db.repositories.api_keys import create_api_key, has_live_api_key
from app.job_queue import embedded_redis_socket
from app.main import create_app
from app.supervised_worker import SupervisedWorker
from app.watch.supervisor import WatchSupervisor, watch_supervisor
from app.worker import WorkerSettings, worker_settings

DEFAULT_KEY_NAME = "default"
# Seconds open HTTP requests (an SSE stream never ends by itself) get to finish at shutdown.
GRACEFUL_SHUTDOWN_SECONDS = 10
_STARTUP_POLL_SECONDS = 0.05


class ServiceStartError(Exception):
    """The service could not start; the message says why and what to do."""


class _ApiServer(uvicorn.Server):
    """uvicorn without signal handlers of its own: the runner's stop the API and worker together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def run_service(settings: Settings, host: str, port: int, out: TextIO) -> int:
    """Prepare the database, a key and the queue, then serve until SIGINT or SIGTERM.

    Until the loop handles signals, SIGTERM interrupts like Ctrl-C, so an early
    stop still runs the exit handlers that stop the embedded Redis.
    """
    previous_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        listener = _listen(host, port)
        upgrade_database(settings.database_url)
        _say(out, f"database is up to date: {_shown_url(settings.database_url)}")
        _ensure_api_key(settings, out)
        worker_options = worker_settings(settings)  # starts the embedded Redis if it is used
        return asyncio.run(_serve_and_work(settings, listener, worker_options, out))
    except ServiceStartError as exc:
        _say(sys.stderr, f"imap-bridge: {exc}")
        return 1
    except KeyboardInterrupt:
        _say(out, "stopped before the service was up")
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)


async def _serve_and_work(
    settings: Settings, listener: socket.socket, worker_options: WorkerSettings, out: TextIO
) -> int:
    """Run the API, the worker and the watcher side by side until a signal or one ends."""
    if not settings.watch_enabled:
        return await _serve_work_and_watch(settings, listener, worker_options, out, None)
    async with watch_supervisor(settings) as watcher:
        return await _serve_work_and_watch(settings, listener, worker_options, out, watcher)


async def _serve_work_and_watch(
    settings: Settings,
    listener: socket.socket,
    worker_options: WorkerSettings,
    out: TextIO,
    watcher: WatchSupervisor | None,
) -> int:
    loop = asyncio.get_running_loop()
    host, port = listener.getsockname()[:2]
    server = _ApiServer(
        uvicorn.Config(
            create_app(settings),
            host=host,
            port=port,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            log_config=None,  # its lines go through the process's one handler (app.logs)
        )
    )
    worker = SupervisedWorker(worker_options)
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            server.force_exit = True
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    api = asyncio.create_task(server.serve(sockets=[listener]))
    work = asyncio.create_task(worker.run())
    watch = asyncio.create_task(watcher.run() if watcher else stop.wait())
    stopping = asyncio.create_task(stop.wait())
    while not (server.started or api.done() or stop.is_set()):
        await asyncio.sleep(_STARTUP_POLL_SECONDS)
    if server.started:
        _announce(out, _base_url(host, port), settings)
    await asyncio.wait({api, work, watch, stopping}, return_when=asyncio.FIRST_COMPLETED)

    failure = None if stop.is_set() else _why_it_ended(api, work, watch)
    running_jobs = worker.running_jobs
    if running_jobs:
        _say(
            out,
            f"waiting for {running_jobs} running job(s) to finish"
            f" (a sync stops at its time budget, {settings.sync_time_budget_seconds:.0f} s)",
        )
    server.should_exit = True
    stopping.cancel()
    if watcher is not None:
        watcher.stop()
    await worker.close()  # cancels the jobs first: arq queues them again
    await asyncio.gather(api, work, watch, stopping, return_exceptions=True)
    if failure is not None:
        _say(sys.stderr, f"imap-bridge: {failure}; stopped")
        return 1
    _say(out, "stopped")
    return 0


def _why_it_ended(
    api: asyncio.Task[None], work: asyncio.Task[None], watch: asyncio.Task[object]
) -> str:
    part, task = next(
        (part, task)
        for part, task in (("the API", api), ("the worker", work), ("the watcher", watch))
        if task.done()
    )
    error = task.exception() if not task.cancelled() else None
    return f"{part} stopped" + (f": {type(error).__name__}: {error}" if error else "")


def _listen(host: str, port: int) -> socket.socket:
    """Bind the API's socket first, so a taken port fails before anything else starts."""
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        return socket.create_server(address[:2], family=family)
    except OSError as exc:
        # create_server's error repeats the address; the errno's own text is enough.
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or exc
        raise ServiceStartError(
            f"cannot listen on {host}:{port} ({reason}); choose another --host or --port"
        ) from exc


def _ensure_api_key(settings: Settings, out: TextIO) -> None:
    """Create and print the "default" key when no live key exists; otherwise say how to add one."""
    engine = create_db_engine(settings.database_url)
    try:
        with session_scope(engine) as session:
            exists = has_live_api_key(session)
            key = None if exists else create_api_key(session, DEFAULT_KEY_NAME)[1]
    finally:
        engine.dispose()
    if key is None:
        _say(out, "an API key exists; make another with: imap-bridge apikey create --name NAME")
        return
    _say(
        out,
        f'created the API key "{DEFAULT_KEY_NAME}"; it is shown only this once, keep it:\n\n'
        f"    {key}\n\n"
        "send it on every /v1 request as the header  Authorization: Bearer <key>",
    )


def _announce(out: TextIO, base_url: str, settings: Settings) -> None:
    queue = "REDIS_URL" if settings.redis_url else f"the embedded Redis ({embedded_redis_socket()})"
    _say(
        out,
        f"API       {base_url}\n"
        f"API docs  {base_url}/docs\n"
        f"worker    one arq worker on {queue}\n"
        f"watcher   {'new mail syncs within seconds' if settings.watch_enabled else 'off'}\n"
        "press Ctrl-C to stop",
    )


def _base_url(host: str, port: int) -> str:
    """Return a URL that reaches the socket from this machine (loopback for a wildcard address)."""
    address = ip_address(host)
    if address.is_unspecified:
        address = ip_address("::1" if address.version == 6 else "127.0.0.1")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{shown}:{port}"


def _shown_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _say(out: TextIO, text: str) -> None:
    """Print at once: the output is often a pipe (`make run | tee`), and read while running."""
    print(text, file=out, flush=True)
