"""`python -m bench`: build the mailbox, measure every row in its own process, print the table.

start a private Dovecot (tests.support.dovecot) -> generate + MULTIAPPEND the corpus
-> warm-up fetch of every folder (no row pays for cold caches)
-> peers:  imaplib full fetch (reference), imapclient full fetch, mbsync pull,
           imapclient QRESYNC EXAMINE per folder (no-change reference), imapclient STATUS
           per folder, mbsync no-change rerun
-> ours:   first sync of all mail on SQLite, then its no-change resyncs;
           first sync with the one-year window on SQLite;
           first sync of all mail on PostgreSQL, then its no-change resyncs
-> 100 new messages and 1,000 flag changes: mbsync rerun (reference), ours resync per backend
-> API: 20 clients list the SQLite copy, first with no sync running, then while another
   mailbox's first sync runs
-> [--memory] a bigger mailbox's first sync, its peak RSS beside the first one's
-> [--profile] one more first sync under pyinstrument (not a row)
-> per server of the test matrix (Dovecot, legacy Dovecot, Cyrus, Courier; bench.servers):
   a corpus of --server-messages over plain IMAP, imaplib's fetch (reference) and our first
   sync, imapclient STATUS (reference) and our no-change resync ([--no-servers] skips them,
   [--servers-only] runs them alone)
-> [--scale] the cron path over 1,000 mailboxes on two `imap-bridge worker`s (bench.fleet):
             STATUS of every mailbox (reference), then per backend a first and a no-change cycle
-> [--crash] SIGKILL a worker mid-sync: seconds until new mail is announced (bench.crash)
-> [--realtime] 1,000 watched mailboxes per backend (bench.realtime): APPEND and flag change
   -> signed webhook, the warm-up, the idle cost, the cron's no-change cycle with and without
   the watcher ([--realtime-only]: this section alone)
-> [--load]  the API under 50 clients while two workers first-sync 200 mailboxes
   ([--fleet-only]: these two alone, without the bench mailbox and its rows)
-> table on stdout and in bench/results/latest.txt
-> stop Dovecot, drop the databases, delete every temporary directory (always)
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import redis
from cryptography.fernet import Fernet
from sqlalchemy import make_url

from app.config import Settings
from app.db import create_db_engine, session_scope
from app.imap import Security
from app.security import SecretBox
from bench import api, peers
from bench.corpus import (
    DEFAULT_SEED,
    FOLDERS,
    Changes,
    CorpusSpec,
    LoadedCorpus,
    apply_changes,
    load,
)
from bench.crash import crash_row
from bench.fleet import (
    FLEET_CONNECTIONS_PER_HOST,
    FLEET_MAX_JOBS,
    FLEET_TIMEOUT_SECONDS,
    FLEET_WORKERS,
    LOAD_CLIENTS,
    LOAD_MAILBOXES,
    LOAD_MESSAGES,
    SCALE_MAILBOXES,
    SCALE_MESSAGES,
    FleetRows,
    queue_redis,
    register_mailboxes,
    seed_users,
)
from bench.job import Fleet, Job, Measurement, Server, median_run
from bench.mbsync import MBSYNC
from bench.realtime import PUSHES, REALTIME_MAILBOXES, REALTIME_MESSAGES, realtime_section
from bench.servers import SERVER_MESSAGES, ServerRows, matrix_servers
from bench.startup import STARTUP_REPEAT
from bench.table import (
    FleetSection,
    Latency,
    LatencySection,
    Ratio,
    Row,
    Section,
    TargetSection,
    render,
)
from tests.support.databases import (
    POSTGRES_ADMIN_URL,
    PostgresDatabases,
    SQLiteDatabases,
    ThrowawayDatabases,
)
from tests.support.dovecot import DOVECOT_BIN, Dovecot, MailUser, start_dovecot
from tests.support.factories import create_mailbox, id_of
from tests.support.redis_queue import delete_queue

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
FLEET_LOGS = RESULTS_DIR / "cron-path-logs"  # the workers' and the API's, one folder per row
REALTIME_LOGS = RESULTS_DIR / "realtime-logs"  # `imap-bridge run`'s, one folder per backend
# Dovecot sessions beyond the watched ones: the worker's syncs and the bench's own clients.
_SPARE_SESSIONS = 100
FETCHED_FOLDERS = ("INBOX",)  # the peers' full fetch, as in the issue
CHECK_REPEAT = 5
FETCH_REPEAT = 3  # full fetches are medians too: one run of the reference moves by 15 % here
CHANGES = Changes(new_messages=100, flag_changes=1_000)
MEMORY_MESSAGES = 50_000
_ERROR_LINES = 15
_COMMANDS_NOTED = ("bench.ours:", "bench.mbsync:")  # rows whose commands the notes list


class RowFailed(Exception):
    """A measuring child exited with an error; the message is the end of its stderr."""

    @property
    def last_line(self) -> str:
        """The error's last line, for the table; the whole message goes to the progress log."""
        return (str(self).splitlines() or ["no error output"])[-1]


@dataclass(frozen=True, slots=True)
class Target:
    """Everything a job needs besides its operation: the server and the secret key."""

    server: Server
    secret_key: str
    work: Path

    def measure(self, job: Job) -> Measurement:
        """Run `job` in a child process and return what it measured."""
        job_file, result_file = self.work / "job.json", self.work / "result.json"
        job_file.write_text(job.to_json())
        result_file.unlink(missing_ok=True)
        completed = subprocess.run(
            [sys.executable, "-m", "bench.child", str(job_file), str(result_file)],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            raise RowFailed("\n".join(completed.stderr.strip().splitlines()[-_ERROR_LINES:]))
        return Measurement.from_json(result_file.read_text())

    def try_measure(self, job: Job) -> Measurement | str:
        """Run `job` in a child process; when it fails, return the last line of its error."""
        try:
            return self.measure(job)
        except RowFailed as exc:
            return exc.last_line

    def register_mailbox(
        self, database_url: str, sync_start: date | None, owner: str = "bench"
    ) -> int:
        """Add the bench user as a mailbox of `owner`, as the API would, and return its id."""
        server = self.server
        engine = create_db_engine(database_url)
        try:
            with session_scope(engine) as session:
                mailbox = create_mailbox(
                    session,
                    owner_user_id=owner,
                    email_address=f"{server.username}@example.com",
                    host=server.host,
                    port=server.port,
                    security=Security.NONE if server.plain else Security.SSL,
                    username=server.username,
                    password_enc=SecretBox([self.secret_key]).encrypt(server.password),
                    sync_start=sync_start,
                )
                return id_of(mailbox)
        finally:
            engine.dispose()

    def sync_job(self, database_url: str, mailbox_id: int) -> Job:
        return Job(
            operation="bench.ours:sync_with_ours",
            server=self.server,
            folders=FOLDERS,
            database_url=database_url,
            mailbox_id=mailbox_id,
            secret_key=self.secret_key,
        )


class Progress:
    """Say what the bench is doing on stderr; the table alone goes to stdout."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--messages", type=int, default=10_000, help="INBOX size; Sent gets a twentieth"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="corpus random seed")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL rows")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile one first sync (bench/results/profile-first-sync.txt and .html)",
    )
    parser.add_argument(
        "--memory",
        nargs="?",
        type=int,
        const=MEMORY_MESSAGES,
        metavar="MESSAGES",
        help="also measure the peak RSS of a first sync of a second mailbox of MESSAGES INBOX"
        f" messages (default {MEMORY_MESSAGES:,}: about 5 minutes more)",
    )
    parser.add_argument(
        "--scale",
        nargs="?",
        type=int,
        const=SCALE_MAILBOXES,
        metavar="MAILBOXES",
        help="also run the cron path over MAILBOXES Dovecot users of"
        f" {SCALE_MESSAGES} messages on {FLEET_WORKERS} workers: a first and a no-change cycle"
        f" on PostgreSQL and SQLite (default {SCALE_MAILBOXES:,}: about 4 minutes more)",
    )
    parser.add_argument(
        "--load",
        nargs="?",
        type=int,
        const=LOAD_MAILBOXES,
        metavar="MAILBOXES",
        help=f"also run the API under {LOAD_CLIENTS} clients while {FLEET_WORKERS} workers"
        f" first-sync MAILBOXES mailboxes of {LOAD_MESSAGES + LOAD_MESSAGES // 20} messages on"
        f" PostgreSQL (default {LOAD_MAILBOXES}: about 2.5 minutes more)",
    )
    parser.add_argument(
        "--server-messages",
        type=int,
        default=SERVER_MESSAGES,
        help="INBOX size of the per-server rows (Sent gets a twentieth)",
    )
    parser.add_argument(
        "--no-servers",
        action="store_true",
        help="skip the per-server rows (Dovecot, legacy Dovecot, Cyrus, Courier over plain IMAP)",
    )
    parser.add_argument(
        "--servers-only",
        action="store_true",
        help="run only the per-server rows (needs `make servers`)",
    )
    parser.add_argument(
        "--crash",
        action="store_true",
        help="also SIGKILL `imap-bridge worker` mid-sync and time the mailbox's way back, per"
        " backend (about a minute more)",
    )
    parser.add_argument(
        "--realtime",
        nargs="?",
        type=int,
        const=REALTIME_MAILBOXES,
        metavar="MAILBOXES",
        help=f"also watch MAILBOXES mailboxes (default {REALTIME_MAILBOXES:,}) with one"
        f" `imap-bridge run` per backend: {PUSHES} appends and flag changes -> signed webhook,"
        " warm-up, idle cost, the cron's no-change cycle with and without the watcher"
        " (about 7 minutes a backend)",
    )
    parser.add_argument(
        "--realtime-only",
        action="store_true",
        help="run only the --realtime section (1,000 mailboxes unless --realtime says)",
    )
    parser.add_argument(
        "--fleet-only",
        action="store_true",
        help="run only the --scale and --load rows, without the single-mailbox corpus and rows",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.messages < 20:
        raise SystemExit("--messages must be at least 20")
    if any(count is not None and count < 1 for count in (args.scale, args.load)):
        raise SystemExit("--scale and --load need at least 1 mailbox")
    if args.fleet_only and not (args.scale or args.load):
        raise SystemExit("--fleet-only needs --scale or --load")
    if args.servers_only and (args.fleet_only or args.no_servers):
        raise SystemExit("--servers-only goes with neither --fleet-only nor --no-servers")
    if args.server_messages < 20:
        raise SystemExit("--server-messages must be at least 20")
    if args.realtime_only and (args.fleet_only or args.servers_only):
        raise SystemExit("--realtime-only goes with neither --fleet-only nor --servers-only")
    realtime = args.realtime or (REALTIME_MAILBOXES if args.realtime_only else None)
    if realtime is not None and realtime < PUSHES:
        raise SystemExit(f"--realtime needs at least {PUSHES} mailboxes")
    progress = Progress()
    load_before = os.getloadavg()[0]
    spec = CorpusSpec(messages=args.messages, seed=args.seed)
    with ExitStack() as cleanup:
        dovecot = _start_dovecot(cleanup, sessions=realtime + _SPARE_SESSIONS if realtime else 0)
        work = Path(tempfile.mkdtemp(prefix="bench-"))
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        postgres = None if args.no_postgres else _postgres(cleanup, progress)
        setup = Setup(dovecot, work, Fernet.generate_key().decode(), postgres, progress)
        alone = args.fleet_only or args.servers_only or args.realtime_only
        single = None if alone else _single_mailbox_rows(args, spec, setup)
        fleet = None if args.servers_only else _fleet_sections(args, setup, cleanup)
        run_servers = not (args.no_servers or args.fleet_only or args.realtime_only)
        servers = _server_sections(args, setup, cleanup) if run_servers else []
        crash = _crash_section(setup, cleanup) if args.crash else None
        watched = _realtime_sections(realtime, args.seed, setup, cleanup) if realtime else []
    loads = (load_before, os.getloadavg()[0])
    sections: list[Section | LatencySection | FleetSection | TargetSection] = []
    only = (
        "per-server rows only"
        if args.servers_only
        else "real time only"
        if args.realtime_only
        else "cron path only"
    )
    header = (
        _short_header(only, "plain IMAP" if args.servers_only else "implicit TLS", dovecot, loads)
        if single is None
        else _header(spec, single[1], loads)
    )
    if single is not None:
        sections += single[0].sections
    sections += servers
    if fleet is not None:
        header.append(fleet[0])
        sections += fleet[1]
    if crash is not None:
        sections.append(crash)
    sections += watched
    table = render(header, sections)
    print(table, end="")
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "latest.txt").write_text(table)
    progress.say(f"table written to {RESULTS_DIR / 'latest.txt'}")
    failed = any(
        section.failure.startswith("failed")
        if isinstance(section, (LatencySection, TargetSection))
        else any(row.outcome == "failed" for row in section.rows)
        for section in sections
    )
    return 1 if failed else 0


@dataclass(frozen=True, slots=True)
class Setup:
    """What all rows of a run share: the server, the scratch directory, the key, PostgreSQL."""

    dovecot: Dovecot
    work: Path
    secret_key: str
    postgres: PostgresDatabases | str | None  # a string says why there is none
    progress: Progress


def _single_mailbox_rows(
    args: argparse.Namespace, spec: CorpusSpec, setup: Setup
) -> tuple[Rows, LoadedCorpus]:
    """Measure every row about the one bench mailbox (all but the cron path's)."""
    dovecot, work, secret_key = setup.dovecot, setup.work, setup.secret_key
    postgres, progress = setup.postgres, setup.progress
    user = dovecot.add_user("bench")
    progress.say(f"generating and storing {spec.total:,} messages")
    corpus = load(spec, user)
    progress.say(f"stored {corpus.megabytes:.1f} MB in {corpus.seconds:.1f} s")
    target = Target(
        Server(dovecot.host, dovecot.tls_port, str(dovecot.ca_file), user.name, user.password),
        secret_key,
        work,
    )
    peers.fetch_with_imaplib(Job("bench.peers:fetch_with_imaplib", target.server, FOLDERS))
    _install_mbsync(progress)
    progress.say("caches warmed")
    rows = Rows(target, spec, SQLiteDatabases(work / "sqlite"), progress)
    rows.peers()
    rows.ours("SQLite", rows.sqlite)
    rows.ours_in_window()
    if isinstance(postgres, str):
        rows.skip("PostgreSQL", postgres)
    elif postgres is not None:
        rows.ours("PostgreSQL", postgres)
    rows.startups()
    rows.after_changes(user)
    rows.api_during_sync()
    if args.memory:
        bigger = replace(spec, messages=args.memory)
        rows.memory(_bigger_mailbox(dovecot, target, bigger, progress))
    if args.profile:
        RESULTS_DIR.mkdir(exist_ok=True)
        rows.profile(RESULTS_DIR / "profile-first-sync")
    return rows, corpus


def _server_sections(args: argparse.Namespace, setup: Setup, cleanup: ExitStack) -> list[Section]:
    """Measure the per-server rows on a corpus of --server-messages."""
    spec = CorpusSpec(messages=args.server_messages, seed=args.seed)
    rows = server_rows(spec, setup.secret_key, setup.work, setup.progress.say)
    return rows.sections(matrix_servers(cleanup))


def server_rows(
    spec: CorpusSpec, secret_key: str, work: Path, say: Callable[[str], None]
) -> ServerRows:
    """The per-server rows as the bench runs them: each first sync on a new SQLite database."""
    all_mail = spec.start.date() - timedelta(days=1)

    def new_sync_job(server: Server, databases: ThrowawayDatabases) -> Job:
        target = Target(server, secret_key, work)
        url = databases.create_migrated()
        return target.sync_job(url, target.register_mailbox(url, all_mail))

    runner = Target(Server("", 0, "", "", ""), secret_key, work)  # only its child runner is used
    return ServerRows(
        spec=spec,
        measure=runner.try_measure,
        new_sync_job=new_sync_job,
        databases=SQLiteDatabases(work / "servers-sqlite"),
        say=say,
    )


def _fleet_sections(
    args: argparse.Namespace, setup: Setup, cleanup: ExitStack
) -> tuple[str, list[FleetSection | LatencySection]] | None:
    """Measure the cron-path rows (--scale, --load); return a header line and their sections."""
    dovecot, work, postgres, progress = setup.dovecot, setup.work, setup.postgres, setup.progress
    if not (args.scale or args.load):
        return None
    try:
        redis_url = queue_redis(Settings().redis_url)
    except (redis.RedisError, OSError) as exc:
        progress.say(f"cron-path rows skipped: Redis does not answer: {exc}")
        skipped = Row("all rows", 0, None, f"Redis does not answer: {exc}", outcome="skipped")
        return "cron path: skipped", [FleetSection("Cron path", rows=[skipped])]
    queue_name = f"bench-{secrets.token_hex(6)}"
    cleanup.callback(delete_queue, redis_url, queue_name)
    # Only the child runner of this target is used: every fleet job names its own users.
    server = Server(dovecot.host, dovecot.tls_port, str(dovecot.ca_file), "", "")
    runner = Target(server, setup.secret_key, work)
    fleet = FleetRows(
        dovecot=dovecot,
        secret_key=setup.secret_key,
        work=work,
        measure=runner.try_measure,
        say=progress.say,
        redis_url=redis_url,
        queue_name=queue_name,
        sync_start=CorpusSpec(seed=args.seed).start.date() - timedelta(days=1),
        seed=args.seed,
        logs=FLEET_LOGS,
    )
    shutil.rmtree(FLEET_LOGS, ignore_errors=True)  # the logs of the previous run
    sections: list[FleetSection | LatencySection] = []
    if args.scale:
        backends: list[tuple[str, ThrowawayDatabases]] = [
            ("SQLite", SQLiteDatabases(work / "fleet-sqlite"))
        ]
        if isinstance(postgres, PostgresDatabases):
            backends.insert(0, ("PostgreSQL", postgres))
        sections.append(fleet.scale(args.scale, backends))
    if args.load and isinstance(postgres, PostgresDatabases):
        sections += fleet.load(args.load, "PostgreSQL", postgres)
    elif args.load:
        reason = postgres if isinstance(postgres, str) else "skipped: --no-postgres"
        sections.append(LatencySection("API during a first sync of many mailboxes", failure=reason))
    header = (
        f"cron path: {fleet.workers} `imap-bridge worker` processes on {redis_url}"
        f" (queues {queue_name}-<row>); each cycle starts when the bench calls enqueue_due_syncs,"
        " the function of the workers' every-minute cron"
    )
    return header, sections


def _crash_section(setup: Setup, cleanup: ExitStack) -> FleetSection:
    """Measure the crash rows (bench.crash), SQLite and, when it answers, PostgreSQL."""
    section = FleetSection(
        "Back after a crash: SIGKILL of `imap-bridge worker` mid-sync -> email.received",
        reference=False,
    )
    try:
        redis_url = queue_redis(Settings().redis_url)
    except (redis.RedisError, OSError) as exc:
        section.rows.append(Row("all rows", 0, None, f"Redis does not answer: {exc}", "skipped"))
        return section
    backends: list[tuple[str, ThrowawayDatabases]] = [
        ("SQLite", SQLiteDatabases(setup.work / "crash-sqlite"))
    ]
    if isinstance(setup.postgres, PostgresDatabases):
        backends.append(("PostgreSQL", setup.postgres))
    for title, databases in backends:
        setup.progress.say(f"crash row on {title}")
        queue_name = f"bench-crash-{secrets.token_hex(6)}"
        cleanup.callback(delete_queue, redis_url, queue_name)
        work = setup.work / f"crash-{title.lower()}"
        queue = (redis_url, queue_name)
        section.rows.append(
            crash_row(title, databases, setup.dovecot, setup.secret_key, queue=queue, work=work)
        )
    return section


def _realtime_sections(
    mailboxes: int, seed: int, setup: Setup, cleanup: ExitStack
) -> list[TargetSection]:
    """Measure the real-time section (bench.realtime) on PostgreSQL, when it answers, and SQLite."""
    title = f"Real time, {mailboxes:,} watched mailboxes, one `imap-bridge run`"
    try:
        redis_url = queue_redis(Settings().redis_url)
    except (redis.RedisError, OSError) as exc:
        return [TargetSection(title, failure=f"skipped: Redis does not answer: {exc}")]
    dovecot, progress = setup.dovecot, setup.progress
    spec = CorpusSpec(messages=REALTIME_MESSAGES, seed=seed)
    progress.say(f"creating {mailboxes:,} Dovecot users of {spec.total} messages each")
    users = seed_users(dovecot, f"rt{secrets.token_hex(3)}", mailboxes, spec)
    progress.say(f"users created and filled in {users.seconds:.1f} s")
    backends: list[tuple[str, ThrowawayDatabases]] = [
        ("SQLite", SQLiteDatabases(setup.work / "realtime-sqlite"))
    ]
    if isinstance(setup.postgres, PostgresDatabases):
        backends.insert(0, ("PostgreSQL", setup.postgres))
    server = Server(dovecot.host, dovecot.tls_port, str(dovecot.ca_file), "", users.password)
    runner = Target(server, setup.secret_key, setup.work)
    shutil.rmtree(REALTIME_LOGS, ignore_errors=True)  # the logs of the previous run
    sections = []
    for backend, databases in backends:
        url = databases.create_migrated()
        register_mailboxes(
            url, setup.secret_key, dovecot, users, sync_start=spec.start.date() - timedelta(days=1)
        )
        queue_name = f"bench-rt-{secrets.token_hex(6)}"
        cleanup.callback(delete_queue, redis_url, queue_name)
        scratch = setup.work / f"realtime-{backend.lower()}-service"
        scratch.mkdir()
        fleet = Fleet(
            redis_url=redis_url,
            queue_name=queue_name,
            workers=1,
            max_jobs=FLEET_MAX_JOBS,
            connections_per_host=FLEET_CONNECTIONS_PER_HOST,
            mailboxes=mailboxes,
            user_prefix=users.prefix,
            timeout_seconds=FLEET_TIMEOUT_SECONDS,
        )
        job = Job(
            "bench.realtime:realtime_row",
            server,
            FOLDERS,
            database_url=url,
            secret_key=setup.secret_key,
            scratch_dir=str(scratch),
            fleet=fleet,
        )
        progress.say(f"measuring: real time on {backend}")
        outcome = runner.try_measure(job)
        kept = REALTIME_LOGS / backend.lower()
        kept.mkdir(parents=True)
        for log in scratch.glob("*.log"):
            shutil.copy(log, kept / log.name)
        sections.append(
            realtime_section(
                f"{title} on {backend} (API, worker and watcher; SYNC_MAX_JOBS"
                f" {FLEET_MAX_JOBS}, SYNC_MAX_CONNECTIONS_PER_HOST {FLEET_CONNECTIONS_PER_HOST},"
                f" WATCH_CONNECT_RATE {Settings().watch_connect_rate:g}/s)",
                outcome,
            )
        )
    return sections


def _start_dovecot(cleanup: ExitStack, sessions: int = 0) -> Dovecot:
    """Start the bench's own Dovecot, its limits raised for `sessions` at once when given;
    `cleanup` stops it and removes its directory."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-dv"))  # short: unix sockets live there
    cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
    dovecot = start_dovecot(workdir, sessions=sessions)
    cleanup.callback(dovecot.stop)
    return dovecot


def _bigger_mailbox(
    dovecot: Dovecot, target: Target, spec: CorpusSpec, progress: Progress
) -> tuple[Target, CorpusSpec]:
    """Store a bigger corpus for a second Dovecot user; return a target reading it."""
    user = dovecot.add_user("bench-memory")
    progress.say(f"generating and storing {spec.total:,} messages for the memory row")
    corpus = load(spec, user)
    progress.say(f"stored {corpus.megabytes:.1f} MB in {corpus.seconds:.1f} s")
    server = replace(target.server, username=user.name, password=user.password)
    return replace(target, server=server), spec


def _install_mbsync(progress: Progress) -> None:
    """Install Debian's isync if mbsync is missing and we may; else its rows fail, saying why."""
    if shutil.which(MBSYNC) is not None:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        progress.say("mbsync is missing: install the Debian package isync for its rows")
        return
    progress.say("installing mbsync (apt-get install -y isync)")
    completed = subprocess.run(
        ["apt-get", "install", "-y", "isync"], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        progress.say(f"apt-get install isync failed: {completed.stderr.strip()[-500:]}")


def _postgres(cleanup: ExitStack, progress: Progress) -> PostgresDatabases | str:
    """Return a factory of throwaway PostgreSQL databases, or why there is none."""
    conninfo = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql")
    try:
        admin = psycopg.connect(
            conninfo.render_as_string(hide_password=False), autocommit=True, connect_timeout=5
        )
    except psycopg.OperationalError as exc:
        progress.say(f"PostgreSQL rows skipped: {exc}")
        return f"skipped: PostgreSQL not reachable at {POSTGRES_ADMIN_URL}"
    cleanup.callback(admin.close)
    databases = PostgresDatabases(admin, POSTGRES_ADMIN_URL)
    cleanup.callback(databases.drop_all)
    return databases


class Rows:
    """Measure the rows in order, each in its own process, into the two sections."""

    def __init__(
        self, target: Target, spec: CorpusSpec, sqlite: SQLiteDatabases, progress: Progress
    ) -> None:
        self.target = target
        self.sqlite = sqlite
        self.progress = progress
        self.all_mail = spec.start.date() - timedelta(days=1)  # a window older than any mail
        self.fetch = Section("Full fetch over TLS", Ratio.RATE)
        self.check = Section("No-change check over TLS", Ratio.TIME)
        self.changed = Section(
            f"Resync after {CHANGES.new_messages} new messages and"
            f" {CHANGES.flag_changes:,} flag changes in INBOX",
            Ratio.TIME,
        )
        self.mbsync: Job | None = None  # its Maildir, once a first pull filled it
        self.synced: dict[str, Job] = {}  # per backend, databases a first sync of all mail filled
        self.spec = spec
        clients = f"{api.CLIENTS} clients paging through its mail, {api.PAGE_SIZE} a page"
        self.api_idle = LatencySection(f"API on SQLite, no sync running, {clients} (baseline)")
        self.api = LatencySection(
            f"API on SQLite during a first sync of another mailbox, {clients},"
            f" {api.ROUNDS} syncs pooled"
        )
        self.sizes = Section("Peak memory of a first sync, SQLite, all mail", Ratio.MEMORY)
        self.startup = Section(
            f"Start-up, median of {STARTUP_REPEAT} fresh processes (CPU user+sys in the notes)",
            Ratio.TIME,
        )

    def measure(self, section: Section, title: str, job: Job) -> bool:
        measurement = self._run(section, title, job)
        if measurement is None:
            return False
        self._add_row(section, title, job, measurement)
        return True

    def measure_first_syncs(self, title: str, new_job: Callable[[], Job]) -> Job | None:
        """Run FETCH_REPEAT first syncs, each on a new database; keep the median one.

        Returns the job of the median run: its database is the one later rows resync.
        """
        runs: list[tuple[Measurement, Job]] = []
        for _ in range(FETCH_REPEAT):
            job = new_job()
            measurement = self._run(self.fetch, title, job)
            if measurement is None:
                return None
            runs.append((measurement, job))
        middle = median_run([measurement for measurement, _ in runs])
        job = next(job for measurement, job in runs if measurement is middle)
        self._add_row(self.fetch, title, job, middle)
        return job

    def _run(self, section: Section, title: str, job: Job) -> Measurement | None:
        """Measure `job`; when it fails, add the failed row and return None."""
        self.progress.say(f"measuring: {title}")
        try:
            return self.target.measure(job)
        except RowFailed as exc:
            self.progress.say(f"FAILED: {title}\n{exc}")
            section.rows.append(Row(title, len(job.folders), None, exc.last_line, outcome="failed"))
            return None

    def _add_row(self, section: Section, title: str, job: Job, measurement: Measurement) -> None:
        note = ""
        if section is self.changed and measurement.flags_changed:
            note = f"{measurement.messages} new, {measurement.flags_changed:,} flag changes seen; "
        # No-change rows name their commands: one round trip per folder is a target.
        resync = section is self.check or section is self.changed
        if job.operation.startswith(_COMMANDS_NOTED) and resync:
            note += (
                f"IMAP commands {' '.join(measurement.commands)}" if measurement.commands else ""
            )
        section.rows.append(Row(title, len(job.folders), measurement, note))

    def peers(self) -> None:
        server = self.target.server
        self.measure(
            self.fetch,
            f"imaplib UID FETCH x500, median of {FETCH_REPEAT} (reference)",
            Job("bench.peers:fetch_with_imaplib", server, FETCHED_FOLDERS, repeat=FETCH_REPEAT),
        )
        self.measure(
            self.fetch,
            f"imapclient fetch x500, median of {FETCH_REPEAT}",
            Job("bench.peers:fetch_with_imapclient", server, FETCHED_FOLDERS, repeat=FETCH_REPEAT),
        )
        mbsync = Job(
            "bench.mbsync:sync_with_mbsync",
            server,
            FOLDERS,
            scratch_dir=str(self.target.work / "mbsync"),
        )
        if self.measure(self.fetch, "mbsync pull into empty Maildir", mbsync):
            self.mbsync = mbsync
        self.measure(
            self.check,
            "imapclient QRESYNC EXAMINE per folder (reference)",
            Job("bench.peers:check_with_qresync", server, FOLDERS, repeat=CHECK_REPEAT),
        )
        self.measure(
            self.check,
            "imapclient STATUS per folder",
            Job("bench.peers:check_with_imapclient", server, FOLDERS, repeat=CHECK_REPEAT),
        )
        if self.mbsync is not None:
            self.measure(
                self.check,
                f"mbsync no-change rerun (median of {CHECK_REPEAT})",
                replace(mbsync, repeat=CHECK_REPEAT),
            )

    def ours(self, backend: str, databases: ThrowawayDatabases) -> None:
        """A first sync of all mail on a new database, then no-change resyncs of it."""
        job = self.measure_first_syncs(
            first_sync_title(backend), lambda: self.new_mailbox(databases, self.all_mail)
        )
        if job is not None:
            self.synced[backend] = job
            self.measure(
                self.check,
                f"ours no-change resync, {backend} (median of {CHECK_REPEAT})",
                replace(job, repeat=CHECK_REPEAT),
            )

    def ours_in_window(self) -> None:
        """A first sync with the default window (mail of the last year only)."""
        self.measure_first_syncs(
            f"ours first sync, SQLite, 1-year window, median of {FETCH_REPEAT}",
            lambda: self.new_mailbox(self.sqlite, None),
        )

    def startups(self) -> None:
        """Time the commands' start-up beside a bare interpreter; the last one syncs for real.

        The no-change `imap-bridge sync` runs on the SQLite copy the first sync filled;
        its target is `--help`'s time plus twice the QRESYNC check of the same folders.
        """
        server, repeat = self.target.server, STARTUP_REPEAT
        rows = [
            ("python -c pass (reference)", "bench.startup:bare_python", ""),
            ("imap-bridge --help", "bench.startup:cli_help", "target <= 0.3 s"),
            ('python -c "import app.imap"', "bench.startup:import_imap", "target <= 0.15 s"),
        ]
        for title, operation, target in rows:
            self._startup_row(title, Job(operation, server, (), repeat=repeat), target)
        synced = self.synced.get("SQLite")
        title = "imap-bridge sync --mailbox ID, no change, SQLite"
        if synced is None:
            self.startup.rows.append(Row(title, len(FOLDERS), None, outcome="skipped"))
            return
        help_seconds = _seconds_of(self.startup, "imap-bridge --help")
        qresync = _seconds_of(self.check, "imapclient QRESYNC EXAMINE per folder (reference)")
        target = (
            f"target <= --help + 2x QRESYNC = {help_seconds + 2 * qresync:.3f} s"
            if help_seconds is not None and qresync is not None
            else ""
        )
        job = replace(synced, operation="bench.startup:cli_sync", repeat=repeat)
        self._startup_row(title, job, target)

    def _startup_row(self, title: str, job: Job, target: str) -> None:
        measurement = self._run(self.startup, title, job)
        if measurement is None:
            return
        cpu = measurement.figures["cpu s"]
        reference = self.startup.rows[0].measurement if self.startup.rows else None
        versus = (
            f" ({cpu / reference.figures['cpu s']:.1f}x python -c pass)"
            if reference is not None and reference.figures.get("cpu s")
            else ""
        )
        note = f"CPU {cpu:.3f} s{versus}" + (f"; {target}" if target else "")
        self.startup.rows.append(Row(title, len(job.folders), measurement, note))

    def after_changes(self, user: MailUser) -> None:
        """Change the mailbox as another client would, then resync every copy of it once.

        mbsync's Maildir is the reference: it pulls the same new mail and flags.
        """
        self.progress.say(
            f"appending {CHANGES.new_messages} messages, toggling {CHANGES.flag_changes} flags"
        )
        apply_changes(user, CHANGES)
        reference = "mbsync rerun (reference)"
        if self.mbsync is None:
            self.changed.rows.append(
                Row(reference, len(FOLDERS), None, "mbsync did not pull", outcome="failed")
            )
        else:
            self.measure(self.changed, reference, self.mbsync)
        for backend, job in self.synced.items():
            self.measure(self.changed, f"ours resync, {backend}", job)

    def api_during_sync(self) -> None:
        """List the synced mailbox's mail through the API while another mailbox syncs."""
        listed = self.synced.get("SQLite")
        if listed is None:
            self.api.failure = self.api_idle.failure = "failed: no SQLite database was synced"
            return
        assert listed.database_url is not None
        scratch = self.target.work / "api"
        scratch.mkdir()
        for round_number in range(api.ROUNDS):
            syncing = self.target.register_mailbox(
                listed.database_url, self.all_mail, owner=f"other-{round_number}"
            )
            sync_job = self.target.sync_job(listed.database_url, syncing)
            (scratch / api.sync_job_file(round_number)).write_text(sync_job.to_json())
        job = replace(listed, operation="bench.api:list_during_sync", scratch_dir=str(scratch))
        self.progress.say(f"measuring: {self.api.title}")
        try:
            measurement = self.target.measure(job)
        except RowFailed as exc:
            self.progress.say(f"FAILED: {self.api.title}\n{exc}")
            self.api.failure = self.api_idle.failure = f"failed: {exc.last_line}"
            return
        figures = measurement.figures
        health, listing = f"GET {api.HEALTHZ} (reference)", "GET /v1/mailboxes/{id}/emails"
        idle_seconds = figures["idle seconds"]
        self.api_idle.rows = [
            Latency.of(health, "idle healthz", figures, idle_seconds),
            Latency.of(listing, "idle list", figures, idle_seconds),
        ]
        self.api.rows = [
            Latency.of(health, "healthz", figures, measurement.seconds),
            Latency.of(listing, "list", figures, measurement.seconds),
        ]
        self.api.note = (
            f"{measurement.messages:,} emails, {measurement.bytes / 1e6:.1f} MB of JSON listed"
            f" in {measurement.seconds:.1f} s, the time the {api.ROUNDS} syncs took; uvicorn"
            f" peak RSS {measurement.peak_rss_kb / 1024:.0f} MB"
        )

    def memory(self, bigger: tuple[Target, CorpusSpec]) -> None:
        """Compare the first sync's peak RSS on the bench mailbox with one on a bigger mailbox."""
        first_sync = next(
            (row for row in self.fetch.rows if row.title == first_sync_title("SQLite")),
            None,
        )
        reference = f"{self.spec.total:,} messages (reference)"
        self.sizes.rows.append(
            replace(first_sync, title=reference)
            if first_sync is not None
            else Row(reference, len(FOLDERS), None, outcome="failed")
        )
        target, spec = bigger
        url = self.sqlite.create_migrated()
        job = target.sync_job(url, target.register_mailbox(url, self.all_mail))
        self.measure(self.sizes, f"{spec.total:,} messages", job)

    def skip(self, backend: str, reason: str) -> None:
        for section, title in (
            (self.fetch, first_sync_title(backend)),
            (self.check, f"ours no-change resync, {backend}"),
            (self.changed, f"ours resync, {backend}"),
        ):
            section.rows.append(Row(title, len(FOLDERS), None, reason, outcome="skipped"))

    def profile(self, path: Path) -> None:
        """Profile one more first sync of all mail; its time is not a row."""
        job = self.new_mailbox(self.sqlite, self.all_mail)
        self.progress.say("profiling: ours first sync, SQLite, all mail")
        self.target.measure(
            replace(job, operation="bench.profiling:profile_sync", profile_path=str(path))
        )
        self.progress.say(f"profile written to {path}.txt and {path}.html")

    def new_mailbox(self, databases: ThrowawayDatabases, sync_start: date | None) -> Job:
        """Return a sync job for the bench user registered in a new, migrated database."""
        url = databases.create_migrated()
        return self.target.sync_job(url, self.target.register_mailbox(url, sync_start))

    @property
    def sections(self) -> list[Section | LatencySection]:
        memory = [self.sizes] if self.sizes.rows else []
        startup = [self.startup] if self.startup.rows else []
        return [self.fetch, self.check, self.changed, *startup, self.api_idle, self.api, *memory]


def _seconds_of(section: Section, title: str) -> float | None:
    """The wall time of a measured row of `section`, if it was measured."""
    row = next((row for row in section.rows if row.title.startswith(title)), None)
    return row.measurement.seconds if row is not None and row.measurement is not None else None


def first_sync_title(backend: str) -> str:
    return f"ours first sync, {backend}, all mail, median of {FETCH_REPEAT}"


def _header(spec: CorpusSpec, corpus: LoadedCorpus, load: tuple[float, float]) -> list[str]:
    counts = ", ".join(f"{folder} {count:,}" for folder, count in corpus.counts.items())
    return [
        f"imap-bridge benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"machine: {_machine()}, {_dovecot_version()} on loopback, implicit TLS;"
        f" load average {load[0]:.1f} before the run, {load[1]:.1f} after",
        f"corpus: seed {spec.seed}; {counts} messages, {corpus.megabytes:.1f} MB;"
        f" generated and stored (MULTIAPPEND) in {corpus.seconds:.1f} s",
        f"peers fetch {' + '.join(FETCHED_FOLDERS)}; ours syncs {' + '.join(FOLDERS)}"
        f" with {Settings().sync_batch_size} messages per batch (SYNC_BATCH_SIZE),"
        " time budget lifted; no-change rows are the median of"
        f" {CHECK_REPEAT} runs",
    ]


def _short_header(
    only: str, transport: str, dovecot: Dovecot, load: tuple[float, float]
) -> list[str]:
    return [
        f"imap-bridge benchmark ({only}), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"machine: {_machine()}, {_dovecot_version()} on {dovecot.host}, {transport};"
        f" load average {load[0]:.1f} before the run, {load[1]:.1f} after",
    ]


def _machine() -> str:
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def _dovecot_version() -> str:
    completed = subprocess.run(
        [DOVECOT_BIN, "--version"], capture_output=True, text=True, check=False
    )
    return f"Dovecot {completed.stdout.split()[0]}" if completed.stdout else "Dovecot"
