"""The REST API under load while a sync writes to the same database.

    this child: API key into the database -> uvicorn (app.main:create_app) on loopback
                -> 10 s of the same load with no sync running (the baseline)
                -> 3 rounds of:
                   a first sync of another mailbox starts (python -m bench.child)
                   -> until it ends, 20 clients page through the synced mailbox's mail
                      and GET /healthz is asked every 20 ms
                -> latencies per endpoint, the rounds pooled

Server, sync and load generator are three processes, so none of them takes the
others' interpreter lock. The figures are client-side latencies (request sent
to response read, httpx async), so they include the load generator's own
scheduling on a busy machine, for both endpoints alike.

The baseline shows what the sync adds. It also shows that the list's ratio to
/healthz is mostly queueing, not the sync: 20 clients that each wait for their
answer before asking again keep 20 list requests in the server, so each waits
for the others' work, while a health probe is one short request.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from time import perf_counter

import httpx

from app.db import create_db_engine, session_scope
from app.db.repositories.api_keys import create_api_key
from bench.child import vm_hwm_kb
from bench.job import Job, Measurement, service_environment

CLIENTS = 20
PROBE_INTERVAL = 0.02  # seconds between two GET /healthz, answered or not
PAGE_SIZE = 100
# Rounds of the load, each during a first sync of another mailbox; their latencies are
# pooled, since one round's p99 rests on a handful of requests.
ROUNDS = 3
IDLE_SECONDS = 10.0
HEALTHZ = "/healthz"
_SERVER_START_SECONDS = 30.0
_PROJECT_ROOT = Path(__file__).resolve().parents[1]


def sync_job_file(round_number: int) -> str:
    """Name, in the job's scratch_dir, of the sync that runs during round `round_number`."""
    return f"sync-job-{round_number}.json"


@dataclass(slots=True)
class Latencies:
    """Each request's latency in seconds, and the requests that failed."""

    seconds: list[float] = field(default_factory=list)
    errors: int = 0
    items: int = 0
    bytes: int = 0

    def figures(self, endpoint: str) -> dict[str, float]:
        ordered = sorted(self.seconds)
        return {
            f"{endpoint} requests": len(ordered),
            f"{endpoint} errors": self.errors,
            f"{endpoint} p50 ms": statistics.median(ordered) * 1000 if ordered else 0.0,
            f"{endpoint} p99 ms": percentile(ordered, 0.99) * 1000 if ordered else 0.0,
        }


def percentile(ordered: list[float], share: float) -> float:
    """Return the nearest-rank percentile of sorted values."""
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _insert_api_key(database_url: str) -> str:
    engine = create_db_engine(database_url)
    try:
        with session_scope(engine) as session:
            _, key = create_api_key(session, "bench")
        return key
    finally:
        engine.dispose()


def _start_server(job: Job, port: int, log: Path) -> subprocess.Popen[bytes]:
    """Start uvicorn with the service's settings from the environment, as in production."""
    env = service_environment(job)
    command = [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app"]
    options = ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with log.open("wb") as output:
        return subprocess.Popen(
            [*command, *options], cwd=_PROJECT_ROOT, env=env, stdout=output, stderr=output
        )


def wait_until_up(base_url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"uvicorn exited {server.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(base_url + HEALTHZ, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"uvicorn did not answer within {_SERVER_START_SECONDS} s")


async def _page_through(
    client: httpx.AsyncClient, path: str, seen: Latencies, stop: asyncio.Event
) -> None:
    """Read the list page after page, following next_cursor, until `stop`.

    After the last page it starts over from the first.
    """
    cursor: str | None = None
    while not stop.is_set():
        params: dict[str, str | int] = {"limit": PAGE_SIZE}
        if cursor:
            params["cursor"] = cursor
        started = perf_counter()
        response = await client.get(path, params=params)
        seen.seconds.append(perf_counter() - started)
        if response.status_code != 200:
            seen.errors += 1
            return
        page = response.json()
        seen.items += len(page["items"])
        seen.bytes += len(response.content)
        cursor = page["next_cursor"]


async def probe_health(client: httpx.AsyncClient, stop: asyncio.Event, seen: Latencies) -> None:
    """Ask GET /healthz every PROBE_INTERVAL, however long the answers take.

    A probe that waits for each answer before asking again asks rarely while
    the server is slow and often while it is quick, so its p99 would mostly
    describe the quick moments (coordinated omission).
    """
    asked: list[asyncio.Task[None]] = []
    while not stop.is_set():
        asked.append(asyncio.create_task(_ask_health(client, seen)))
        await asyncio.sleep(PROBE_INTERVAL)
    await asyncio.gather(*asked)


async def _ask_health(client: httpx.AsyncClient, seen: Latencies) -> None:
    started = perf_counter()
    response = await client.get(HEALTHZ)
    seen.seconds.append(perf_counter() - started)
    if response.status_code != 200:
        seen.errors += 1


async def _until_exit(process: subprocess.Popen[bytes], stop: asyncio.Event) -> None:
    while process.poll() is None:
        await asyncio.sleep(0.05)
    stop.set()


async def _for_seconds(seconds: float, stop: asyncio.Event) -> None:
    await asyncio.sleep(seconds)
    stop.set()


async def _load(
    base_url: str,
    key: str,
    mailbox_id: int,
    until: Callable[[asyncio.Event], Awaitable[None]],
    seen: tuple[Latencies, Latencies],
) -> None:
    """Run the list clients and the health probe until `until` sets stop; add their latencies."""
    listing, health = seen
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            limits=httpx.Limits(max_connections=CLIENTS),
            timeout=60,
        ) as clients,
        httpx.AsyncClient(base_url=base_url, timeout=60) as prober,
    ):
        stop = asyncio.Event()
        path = f"/v1/mailboxes/{mailbox_id}/emails"
        await asyncio.gather(
            until(stop),
            probe_health(prober, stop, health),
            *(_page_through(clients, path, listing, stop) for _ in range(CLIENTS)),
        )


def list_during_sync(job: Job) -> Measurement:
    """Measure list and health latencies with no sync running, then while other mailboxes sync."""
    assert job.database_url is not None
    assert job.mailbox_id is not None
    assert job.scratch_dir is not None
    scratch = Path(job.scratch_dir)
    key = _insert_api_key(job.database_url)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = scratch / "uvicorn.log"
    server = _start_server(job, port, log)
    sync: subprocess.Popen[bytes] | None = None
    listing, health = Latencies(), Latencies()
    idle_listing, idle_health = Latencies(), Latencies()
    seconds = 0.0
    try:
        wait_until_up(base_url, server, log)
        idle = partial(_for_seconds, IDLE_SECONDS)
        asyncio.run(_load(base_url, key, job.mailbox_id, idle, (idle_listing, idle_health)))
        for round_number in range(ROUNDS):
            sync_job = str(scratch / sync_job_file(round_number))
            sync = subprocess.Popen(
                [sys.executable, "-m", "bench.child", sync_job, os.devnull],
                cwd=_PROJECT_ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            started = perf_counter()
            until_synced = partial(_until_exit, sync)
            asyncio.run(_load(base_url, key, job.mailbox_id, until_synced, (listing, health)))
            seconds += perf_counter() - started
            if sync.returncode != 0:
                raise RuntimeError(f"the sync of round {round_number} exited {sync.returncode}")
        server_peak_kb = vm_hwm_kb(Path(f"/proc/{server.pid}/status"))
    finally:
        for process in (sync, server):
            if process is not None:
                stop_process(process)
    return Measurement(
        seconds,
        listing.items,
        listing.bytes,
        peak_rss_kb=server_peak_kb,
        figures={
            **listing.figures("list"),
            **health.figures("healthz"),
            **idle_listing.figures("idle list"),
            **idle_health.figures("idle healthz"),
            "idle seconds": IDLE_SECONDS,
        },
    )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate `process` unless it has exited, and wait for it."""
    if process.poll() is None:
        process.terminate()
        process.wait()
