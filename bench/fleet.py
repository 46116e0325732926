"""The cron-path rows (--scale, --load): many Dovecot users with mail, registered, synced.

    FleetRows.scale(N)  N users of 5 messages
                        -> STATUS of every mailbox (reference, bench.peers)
                        -> per backend: a new database with N mailboxes
                           -> first cycle, then no-change cycle (bench.scale)
    FleetRows.load(N)   N users of 105 messages
                        -> first cycle on a new database (reference, bench.scale)
                        -> first cycle on another one under the API clients (bench.load)

    seed_users          render the corpus once (bench.corpus) -> N users, one password
                        -> the same messages for each: one MULTIAPPEND per folder, over
                           SEED_CONNECTIONS plain IMAP connections at once
    register_mailboxes  one row per user, as the API would store it, not due until a
                        cycle marks it

This is the parent's side; every measured cycle runs in a child process.

Seeding by IMAP is the quickest clean way measured here: 200 users of 5
messages took 3.2 s over one connection, 1.7 s over four and the same over
eight (Dovecot's CPU is then the limit), while `doveadm save` costs a process
per user and message (16-27 ms each), and `doveadm import -F` (one process for
every user) creates the homes as root, which the IMAP processes cannot read.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from time import perf_counter

import redis

from app.config import Settings
from app.db import create_db_engine, session_scope
from app.security import SecretBox
from bench.api import HEALTHZ
from bench.corpus import FOLDERS, CorpusMessage, CorpusSpec, generate
from bench.job import Fleet, Job, Measurement, Server, user_names
from bench.load import MIX
from bench.table import FleetSection, Latency, LatencySection, Row, worker_peaks_kb
from tests.support.databases import ThrowawayDatabases
from tests.support.dovecot import Dovecot, MailUser
from tests.support.factories import account_mailbox, create_mailbox
from tests.support.redis_queue import TEST_REDIS_URL

SEED_CONNECTIONS = 4
FLEET_WORKERS = 2
# Every mailbox is on one host, so the per-host budget (default 4, shared by every worker)
# is what binds: 20 connections to the one Dovecot, each worker running 20 jobs (default 10).
FLEET_MAX_JOBS = 20
FLEET_CONNECTIONS_PER_HOST = 20
FLEET_TIMEOUT_SECONDS = 900.0  # a cycle still running then is cut off, its mailboxes unfinished
SCALE_MAILBOXES = 1_000
SCALE_MESSAGES = 5  # INBOX messages per mailbox (Sent gets a twentieth: none)
NO_CHANGE_TARGET_SECONDS = 60  # the first round's target, at 1,000 mailboxes
# The second round's: 10,000 mailboxes in under 5 minutes on PostgreSQL (`--scale 10000`).
LARGE_FLEET = 10_000
LARGE_FLEET_TARGET_SECONDS = 300
LOAD_MAILBOXES = 200
LOAD_MESSAGES = 100  # INBOX messages per mailbox, and 5 in Sent
LOAD_CLIENTS = 50
_NOT_DUE = timedelta(days=365)  # registered mailboxes wait for the cycle that marks them due


@dataclass(frozen=True, slots=True)
class SeededUsers:
    """Users that hold the same mail: `<prefix>-00000`... with one password."""

    prefix: str
    count: int
    password: str
    messages_per_user: int
    bytes_per_user: int
    seconds: float

    @property
    def names(self) -> list[str]:
        return user_names(self.prefix, self.count)


def seed_users(dovecot: Dovecot, prefix: str, count: int, spec: CorpusSpec) -> SeededUsers:
    """Create `count` users and store the spec's corpus in each one's INBOX and Sent."""
    started = perf_counter()
    corpus = list(generate(spec))
    password = secrets.token_urlsafe(12)
    users = [dovecot.add_user(name, password) for name in user_names(prefix, count)]
    by_folder = {folder: [m for m in corpus if m.folder == folder] for folder in FOLDERS}
    with ThreadPoolExecutor(SEED_CONNECTIONS) as pool:
        for _ in pool.map(lambda user: _store(user, by_folder), users):
            pass
    return SeededUsers(
        prefix=prefix,
        count=count,
        password=password,
        messages_per_user=len(corpus),
        bytes_per_user=sum(len(message.raw) for message in corpus),
        seconds=perf_counter() - started,
    )


def _store(user: MailUser, by_folder: dict[str, list[CorpusMessage]]) -> None:
    client = user.client()
    try:
        for folder, messages in by_folder.items():
            if messages:
                client.multiappend(folder, [{"msg": m.raw, "date": m.date} for m in messages])
    finally:
        client.logout()


def register_mailboxes(
    database_url: str,
    secret_key: str,
    dovecot: Dovecot,
    users: SeededUsers,
    sync_start: date | None,
) -> None:
    """Store one mailbox per user, over implicit TLS, as the API would; none is due yet."""
    box = SecretBox([secret_key])
    password_enc = box.encrypt(users.password)
    not_due = datetime.now(UTC) + _NOT_DUE
    engine = create_db_engine(database_url)
    try:
        with session_scope(engine) as session:
            for n, name in enumerate(users.names):
                account = account_mailbox(MailUser(name, users.password, dovecot), password_enc)
                columns = {"owner_user_id": f"owner-{n % 50}", "owner_email": None}
                create_mailbox(
                    session, **(account | columns), sync_start=sync_start, next_sync_at=not_due
                )
    finally:
        engine.dispose()


def describe(users: SeededUsers) -> str:
    """Say what the fleet is, for a section title."""
    size = users.bytes_per_user / users.messages_per_user / 1e3 if users.messages_per_user else 0
    return (
        f"{users.count:,} mailboxes of {users.messages_per_user} messages ({size:.0f} KB average)"
    )


def queue_redis(redis_url: str | None) -> str:
    """Return the Redis the fleet's queue goes to: REDIS_URL, else the machine's default one.

    Raises redis.RedisError (or OSError) when it does not answer.
    """
    url = redis_url or TEST_REDIS_URL
    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        client.ping()
    finally:
        client.close()
    return url


def _setting(name: str, bench_value: int) -> int:
    """Return the service setting when the environment (or .env) sets it, else the bench's."""
    settings = Settings()
    value: int = getattr(settings, name)
    return value if name in settings.model_fields_set else bench_value


Measure = Callable[[Job], Measurement | str]  # a failure gives the last line of its error


@dataclass(slots=True)
class FleetRows:
    """Seed the fleets, register them and measure their cycles, each in a child process."""

    dovecot: Dovecot
    secret_key: str
    work: Path
    measure: Measure
    say: Callable[[str], None]
    redis_url: str
    queue_name: str
    sync_start: date  # older than any message, so a first sync takes all mail
    seed: int
    workers: int = FLEET_WORKERS
    max_jobs: int = field(default_factory=lambda: _setting("sync_max_jobs", FLEET_MAX_JOBS))
    connections_per_host: int = field(
        default_factory=lambda: _setting(
            "imap_max_connections_per_host", FLEET_CONNECTIONS_PER_HOST
        )
    )
    timeout_seconds: float = FLEET_TIMEOUT_SECONDS
    logs: Path | None = None  # where each row's service logs are kept, in a folder per row

    def fleet(self, users: SeededUsers, clients: int = 0, queue: str = "") -> Fleet:
        """Describe the workers; each row has a queue of its own (`queue_name-<queue>`).

        A job that a stopped worker left behind then cannot run in the next row.
        """
        return Fleet(
            redis_url=self.redis_url,
            queue_name=f"{self.queue_name}-{queue}" if queue else self.queue_name,
            workers=self.workers,
            max_jobs=self.max_jobs,
            connections_per_host=self.connections_per_host,
            mailboxes=users.count,
            user_prefix=users.prefix,
            timeout_seconds=self.timeout_seconds,
            clients=clients,
        )

    def seed_users(self, kind: str, count: int, messages: int) -> SeededUsers:
        """Create the users of one fleet; a random part keeps their names new on any Dovecot."""
        spec = CorpusSpec(messages=messages, seed=self.seed)
        self.say(f"creating {count:,} Dovecot users of {spec.total} messages each")
        users = seed_users(self.dovecot, f"{kind}{secrets.token_hex(3)}", count, spec)
        self.say(f"users created and filled in {users.seconds:.1f} s")
        return users

    def job(
        self,
        operation: str,
        users: SeededUsers,
        scratch: str,
        database_url: str | None = None,
        clients: int = 0,
    ) -> Job:
        directory = self.work / scratch
        directory.mkdir(parents=True)
        server = Server(
            self.dovecot.host,
            self.dovecot.tls_port,
            str(self.dovecot.ca_file),
            users.prefix,
            users.password,
        )
        return Job(
            operation,
            server,
            FOLDERS,
            database_url=database_url,
            secret_key=self.secret_key,
            scratch_dir=str(directory),
            fleet=self.fleet(users, clients, queue=scratch),
        )

    def registered(self, databases: ThrowawayDatabases, users: SeededUsers) -> str:
        """Return a new database holding one mailbox per user."""
        url = databases.create_migrated()
        register_mailboxes(url, self.secret_key, self.dovecot, users, self.sync_start)
        return url

    def run(
        self, section: FleetSection, title: str, job: Job, note: str = ""
    ) -> Measurement | None:
        self.say(f"measuring: {title}")
        outcome = self.measure(job)
        if self.logs is not None and job.scratch_dir is not None:
            for log in Path(job.scratch_dir).glob("*.log"):
                kept = self.logs / log.parent.name
                kept.mkdir(parents=True, exist_ok=True)
                shutil.copy(log, kept / log.name)
        if isinstance(outcome, str):
            self.say(f"FAILED: {title}: {outcome}")
            section.rows.append(Row(title, len(job.folders), None, outcome, outcome="failed"))
            return None
        section.rows.append(Row(title, len(job.folders), outcome, note or cycle_note(outcome)))
        return outcome

    def scale(self, count: int, backends: Sequence[tuple[str, ThrowawayDatabases]]) -> FleetSection:
        """The STATUS reference, then a first and a no-change cycle on each backend."""
        users = self.seed_users("scale", count, SCALE_MESSAGES)
        fleet = self.fleet(users)
        section = FleetSection(
            f"Cron path, {describe(users)}: {fleet.workers} workers,"
            f" SYNC_MAX_JOBS {fleet.max_jobs},"
            f" IMAP_MAX_CONNECTIONS_PER_HOST {fleet.connections_per_host}"
        )
        at_once = fleet.connections_per_host
        self.run(
            section,
            f"imapclient STATUS per folder, {at_once} at once (reference)",
            self.job("bench.peers:check_every_mailbox", users, "scale-reference"),
            note="log in, STATUS INBOX and Sent, log out, for every mailbox",
        )
        for backend, databases in backends:
            url = self.registered(databases, users)
            name = backend.lower()
            first = self.job("bench.scale:cron_cycle", users, f"scale-{name}-first", url)
            if self.run(section, f"first cycle, {backend}", first) is None:
                continue
            again = self.job("bench.scale:cron_cycle", users, f"scale-{name}-no-change", url)
            measured = self.run(section, f"no-change cycle, {backend}", again)
            if measured is not None:
                limit = no_change_target_seconds(count)
                verdict = "met" if measured.seconds < limit else "missed"
                row = section.rows[-1]
                per_mailbox = measured.seconds / count * 1000
                section.rows[-1] = replace(
                    row,
                    note=f"{row.note}; {per_mailbox:.1f} ms wall a mailbox;"
                    f" target under {limit} s at {count:,}: {verdict}",
                )
        return section

    def load(
        self, count: int, backend: str, databases: ThrowawayDatabases
    ) -> list[FleetSection | LatencySection]:
        """A first cycle alone (reference), then one under the API clients, on new databases."""
        users = self.seed_users("load", count, LOAD_MESSAGES)
        fleet = self.fleet(users, LOAD_CLIENTS)
        syncs = FleetSection(
            f"First sync of {describe(users)}, {backend}, {fleet.workers} workers,"
            f" SYNC_MAX_JOBS {fleet.max_jobs},"
            f" IMAP_MAX_CONNECTIONS_PER_HOST {fleet.connections_per_host}"
        )
        api = LatencySection(
            f"API during that first sync: {LOAD_CLIENTS} clients without pause, each request"
            f" drawn from {', '.join(f'{e.name} {e.weight} %' for e in MIX)}"
        )
        alone = self.job(
            "bench.scale:cron_cycle", users, "load-reference", self.registered(databases, users)
        )
        self.run(syncs, "first cycle, no API load (reference)", alone)
        loaded = self.job(
            "bench.load:api_during_first_syncs",
            users,
            "load",
            self.registered(databases, users),
            clients=LOAD_CLIENTS,
        )
        measured = self.run(syncs, f"first cycle, {LOAD_CLIENTS} API clients", loaded)
        if measured is None:
            api.failure = "failed: see the sync row"
            return [syncs, api]
        figures = measured.figures
        seconds = figures["load s"]
        api.rows = [
            Latency.of(f"GET {HEALTHZ} (reference)", "healthz", figures, seconds),
            *(Latency.of(f"{e.name}: GET {e.template}", e.name, figures, seconds) for e in MIX),
        ]
        failures = ", ".join(
            f"{key.removeprefix(_FAILURE)} {int(count)}"
            for key, count in figures.items()
            if key.startswith(_FAILURE)
        )
        requests = figures["api requests"] + figures["healthz requests"]
        api.note = (
            f"{int(requests):,} requests,"
            f" {int(figures['api errors'])} errors{f' ({failures})' if failures else ''},"
            f" {figures['api bytes'] / 1e6:.1f} MB of JSON in {seconds:.1f} s;"
            f" the API used {figures['api CPU s']:.1f} CPU s"
            f" ({figures['api CPU s'] / max(requests, 1) * 1000:.0f} ms a request);"
            f" peak RSS: API (uvicorn) {figures['api peak RSS kB'] / 1024:.0f} MB,"
            f" workers {_workers_rss(figures)} MB,"
            f" load generator {figures['load generator peak RSS kB'] / 1024:.0f} MB"
        )
        return [syncs, api]


_FAILURE = "api failure "  # figures "api failure ReadError", "api failure HTTP 500"...


def _workers_rss(figures: dict[str, float]) -> str:
    peaks = worker_peaks_kb(figures)
    return " / ".join(f"{kb / 1024:.0f}" for kb in peaks)


def no_change_target_seconds(mailboxes: int) -> int:
    """The no-change cycle's target: the second round's from 10,000 mailboxes, else the first's."""
    return LARGE_FLEET_TARGET_SECONDS if mailboxes >= LARGE_FLEET else NO_CHANGE_TARGET_SECONDS


def cycle_note(measurement: Measurement) -> str:
    """Say what the table has no columns for: runs, failures, the queueing, the workers."""
    figures = measurement.figures
    return (
        f"{int(figures['runs']):,} runs, {int(figures['failed runs'])} failed,"
        f" {int(figures['unfinished'])} unfinished, {int(figures['log errors'])} ERROR log"
        f" lines, {int(figures['workers exited'])} workers exited;"
        f" {int(figures['queued']):,} jobs queued in {figures['enqueue s']:.2f} s;"
        f" workers used {figures['worker CPU s']:.1f} CPU s"
        f" ({figures['worker CPU s'] / max(figures['mailboxes'], 1) * 1000:.0f} ms a mailbox)"
    )
