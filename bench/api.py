"""The REST API under load while a sync writes to the same database.

    this child: API key into the database -> uvicorn (app.main:create_app) on loopback
                -> a first sync of another mailbox starts (python -m bench.child)
                -> 20 clients page through every email of the synced mailbox at once,
                   one more client asks GET /healthz in a loop meanwhile
                -> latencies per endpoint; the sync is stopped if it is still running

Server, sync and load generator are three processes, so none of them takes the
others' interpreter lock. The figures are client-side latencies (request sent
to response read, httpx async), so they include the load generator's own
scheduling on a busy machine, for both endpoints alike.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

import httpx

from app.db import create_db_engine, session_scope
from app.db.repositories.api_keys import create_api_key
from bench.child import vm_hwm_kb
from bench.job import Job, Measurement

CLIENTS = 20
PAGE_SIZE = 100
SYNC_JOB_FILE = "sync-job.json"  # in the job's scratch_dir: the sync that runs meanwhile
HEALTHZ = "/healthz"
_SERVER_START_SECONDS = 30.0
_PROJECT_ROOT = Path(__file__).resolve().parents[1]


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
            f"{endpoint} p99 ms": _percentile(ordered, 0.99) * 1000 if ordered else 0.0,
        }


def _percentile(ordered: list[float], share: float) -> float:
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
    assert job.database_url is not None
    assert job.secret_key is not None
    env = {
        **os.environ,
        "DATABASE_URL": job.database_url,
        "SECRET_KEYS": job.secret_key,
        "IMAP_ALLOW_PRIVATE_HOSTS": "true",
        "IMAP_CA_FILE": job.server.ca_file,
    }
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


async def _page_through(client: httpx.AsyncClient, path: str, seen: Latencies) -> None:
    """Read every page of the list, following next_cursor."""
    cursor: str | None = None
    while True:
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
        if not cursor:
            return


async def _probe(client: httpx.AsyncClient, stop: asyncio.Event, seen: Latencies) -> None:
    while not stop.is_set():
        started = perf_counter()
        response = await client.get(HEALTHZ)
        seen.seconds.append(perf_counter() - started)
        if response.status_code != 200:
            seen.errors += 1


async def _load(base_url: str, key: str, mailbox_id: int) -> tuple[Latencies, Latencies]:
    """Run the list clients and the health probe together; return both endpoints' latencies."""
    listing, health = Latencies(), Latencies()
    limits = httpx.Limits(max_connections=CLIENTS + 1)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=60
    ) as client:
        stop = asyncio.Event()
        probe = asyncio.create_task(_probe(client, stop, health))
        path = f"/v1/mailboxes/{mailbox_id}/emails"
        await asyncio.gather(*(_page_through(client, path, listing) for _ in range(CLIENTS)))
        stop.set()
        await probe
    return listing, health


def list_during_sync(job: Job) -> Measurement:
    """Measure list and health latencies while another mailbox's first sync runs."""
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
    try:
        wait_until_up(base_url, server, log)
        sync = subprocess.Popen(
            [sys.executable, "-m", "bench.child", str(scratch / SYNC_JOB_FILE), os.devnull],
            cwd=_PROJECT_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started = perf_counter()
        listing, health = asyncio.run(_load(base_url, key, job.mailbox_id))
        seconds = perf_counter() - started
        sync_running = sync.poll() is None
        server_peak_kb = vm_hwm_kb(Path(f"/proc/{server.pid}/status"))
    finally:
        for process in (sync, server):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait()
    return Measurement(
        seconds,
        listing.items,
        listing.bytes,
        peak_rss_kb=server_peak_kb,
        figures={
            **listing.figures("list"),
            **health.figures("healthz"),
            "sync running at the end": float(sync_running),
        },
    )
