"""The REST API under load while two workers run the first sync of many mailboxes.

    this child: an API key from `imap-bridge apikey create` (the operator's way)
                -> `imap-bridge serve` (uvicorn) and the fleet's `imap-bridge worker`s
                -> the fleet's `clients` httpx clients, one request after another with no
                   pause, each drawing an endpoint from MIX; one more asks GET /healthz
                -> meanwhile the cron cycle of bench.scale: every mailbox due, queued,
                   synced for the first time
                -> clients stop when the cycle is over; latencies per endpoint, errors,
                   peak RSS of the API, each worker and this load generator

Mailbox ids come from the database; email ids from the lists the clients got,
so `GET /v1/emails/{id}` asks for mail that exists (a client that knows none yet
lists instead). Latencies are client-side, as in bench.api. Every answer but
200 is an error, and so is a request that got no answer.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from time import perf_counter

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from app.config import Settings
from app.db import create_db_engine, session_scope
from app.db.models import Mailbox
from bench.api import HEALTHZ, Latencies, free_port, stop_process, wait_until_up
from bench.child import peak_rss_kb, vm_hwm_kb
from bench.job import Job, Measurement
from bench.scale import (
    SERVICE_COMMAND,
    CycleOutcome,
    cpu_seconds,
    cycle_measurement,
    fleet_environment,
    fleet_of,
    run_cycle,
    running_workers,
    service_settings,
)

PAGE_SIZE = 50
_KNOWN_EMAILS = 2_000  # email ids the clients remember, the latest listed
_CLIENT_SEED = 8
# Below uvicorn's keep-alive timeout (5 s, httpx's default expiry too): a client never sends
# on a connection the server is closing at that moment, which would fail the request.
_KEEPALIVE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One kind of request of the mix: its name in the figures and how often it is drawn."""

    name: str
    weight: int
    template: str  # {mailbox}: a mailbox id, {email}: an email id some list returned
    paged: bool = False

    def path(self, rng: random.Random, mailbox_ids: list[int], email_ids: list[int]) -> str | None:
        """Return a path to ask, or None for an email while no list returned one yet."""
        if "{email}" in self.template and not email_ids:
            return None
        return self.template.format(
            mailbox=rng.choice(mailbox_ids), email=rng.choice(email_ids) if email_ids else 0
        )


MIX = (
    Endpoint("list mailboxes", 15, "/v1/mailboxes", paged=True),
    Endpoint("list emails", 35, "/v1/mailboxes/{mailbox}/emails", paged=True),
    Endpoint("get email", 25, "/v1/emails/{email}"),
    Endpoint("list folders", 15, "/v1/mailboxes/{mailbox}/folders"),
    Endpoint("sync runs", 10, "/v1/mailboxes/{mailbox}/sync-runs", paged=True),
)
LISTING = MIX[1]
ENDPOINT_NAMES = tuple(endpoint.name for endpoint in MIX)


@dataclass(slots=True)
class Traffic:
    """Latencies per endpoint, and the email ids the lists returned so far."""

    by_endpoint: dict[str, Latencies] = field(
        default_factory=lambda: {name: Latencies() for name in ENDPOINT_NAMES}
    )
    health: Latencies = field(default_factory=Latencies)
    email_ids: list[int] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)  # "HTTP 500", "ReadError"...

    async def get(
        self, client: httpx.AsyncClient, path: str, params: dict[str, int], seen: Latencies
    ) -> httpx.Response | None:
        """Send one request and time it; count it as failed unless it was answered 200."""
        started = perf_counter()
        try:
            response = await client.get(path, params=params)
        except httpx.TransportError as exc:
            seen.errors += 1
            self.failures[type(exc).__name__] += 1
            return None
        seen.seconds.append(perf_counter() - started)
        seen.bytes += len(response.content)
        if response.status_code != 200:
            seen.errors += 1
            self.failures[f"HTTP {response.status_code}"] += 1
            return None
        return response

    def remember(self, page: dict[str, list[dict[str, int]]]) -> None:
        self.email_ids.extend(item["id"] for item in page["items"])
        del self.email_ids[:-_KNOWN_EMAILS]


def _create_api_key(environment: dict[str, str]) -> str:
    """Make the clients' key with the CLI; it prints the key alone on stdout."""
    completed = subprocess.run(
        [SERVICE_COMMAND, "apikey", "create", "--name", "bench-load"],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return completed.stdout.strip()


def _mailbox_ids(engine: Engine) -> list[int]:
    with session_scope(engine) as session:
        ids = session.exec(select(Mailbox.id).order_by(col(Mailbox.id)))
        return [mailbox_id for mailbox_id in ids if mailbox_id is not None]


async def _client(
    client: httpx.AsyncClient,
    rng: random.Random,
    mailbox_ids: list[int],
    traffic: Traffic,
    stop: asyncio.Event,
) -> None:
    """Send one request after another until `stop`, each endpoint drawn by its weight."""
    weights = [endpoint.weight for endpoint in MIX]
    while not stop.is_set():
        endpoint = rng.choices(MIX, weights)[0]
        path = endpoint.path(rng, mailbox_ids, traffic.email_ids)
        if path is None:
            endpoint = LISTING
            path = LISTING.path(rng, mailbox_ids, traffic.email_ids)
            assert path is not None
        params = {"limit": PAGE_SIZE} if endpoint.paged else {}
        response = await traffic.get(client, path, params, traffic.by_endpoint[endpoint.name])
        if response is not None and endpoint is LISTING:
            traffic.remember(response.json())


async def _health_probe(client: httpx.AsyncClient, traffic: Traffic, stop: asyncio.Event) -> None:
    """Ask GET /healthz in a loop: what any request costs under the same load."""
    while not stop.is_set():
        await traffic.get(client, HEALTHZ, {}, traffic.health)


async def _clients_during_cycle(
    base_url: str,
    key: str,
    mailbox_ids: list[int],
    clients: int,
    cycle: Callable[[], Awaitable[CycleOutcome]],
) -> tuple[Traffic, CycleOutcome, float]:
    """Run the clients and the health probe from the cycle's start to its end."""
    traffic = Traffic()
    limits = httpx.Limits(max_connections=clients + 1, keepalive_expiry=_KEEPALIVE_SECONDS)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=60
    ) as client:
        stop = asyncio.Event()
        started = perf_counter()
        load = [
            asyncio.create_task(
                _client(client, random.Random(_CLIENT_SEED + n), mailbox_ids, traffic, stop)
            )
            for n in range(clients)
        ]
        load.append(asyncio.create_task(_health_probe(client, traffic, stop)))
        try:
            outcome = await cycle()
        finally:
            stop.set()
            await asyncio.gather(*load)
    return traffic, outcome, perf_counter() - started


def api_during_first_syncs(job: Job) -> Measurement:
    """Measure the API under the fleet's clients while the workers sync every mailbox."""
    assert job.scratch_dir is not None
    fleet = fleet_of(job)
    scratch = Path(job.scratch_dir)
    environment = fleet_environment(job)
    settings: Settings = service_settings(job)
    engine = create_db_engine(settings.database_url)
    key = _create_api_key(environment)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = scratch / "api.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [SERVICE_COMMAND, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=environment,
            stdout=output,
            stderr=output,
        )
    try:
        wait_until_up(base_url, server, log)
        mailbox_ids = _mailbox_ids(engine)
        api_cpu_at_start = cpu_seconds(server.pid)
        with running_workers(job, scratch) as workers:
            traffic, outcome, load_seconds = asyncio.run(
                _clients_during_cycle(
                    base_url,
                    key,
                    mailbox_ids,
                    fleet.clients,
                    partial(run_cycle, settings, engine, fleet.timeout_seconds),
                )
            )
        api_peak_kb = vm_hwm_kb(Path(f"/proc/{server.pid}/status"))
        api_cpu = cpu_seconds(server.pid) - api_cpu_at_start
    finally:
        stop_process(server)
        engine.dispose()
    measurement = cycle_measurement(outcome, workers)
    figures = measurement.figures
    for name, seen in traffic.by_endpoint.items():
        figures.update(seen.figures(name))
    figures.update(traffic.health.figures("healthz"))
    requests = sum(len(seen.seconds) + seen.errors for seen in traffic.by_endpoint.values())
    api_errors = sum(seen.errors for seen in traffic.by_endpoint.values()) + traffic.health.errors
    figures.update(
        {
            "api requests": requests,
            "api errors": api_errors,
            **{f"api failure {kind}": count for kind, count in traffic.failures.items()},
            "api bytes": sum(seen.bytes for seen in traffic.by_endpoint.values()),
            "load s": load_seconds,
            "api peak RSS kB": api_peak_kb,
            "api CPU s": api_cpu,
            "load generator peak RSS kB": peak_rss_kb(),
        }
    )
    return measurement
