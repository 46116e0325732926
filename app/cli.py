"""The `imap-bridge` command: one entry point for operators and for `make`.

    imap-bridge run [--host H] [--port P]            API + worker + watcher in one process
    imap-bridge serve [--host H] [--port P]          the API alone (uvicorn)
    imap-bridge worker                               arq worker: cron + sync jobs, niced
    imap-bridge watch                                the watcher: IDLE/NOTIFY, queues syncs
    imap-bridge migrate                              create or upgrade the schema
    imap-bridge sync                                 every due mailbox, now, in this process
    imap-bridge sync --mailbox ID [--folders-only]   one mailbox, due or not
    imap-bridge apikey create --name N [--scope S]   a new API key, printed once (`status`:
                                                     the read-only key of the status page)
    imap-bridge apikey list                          the keys, never their secret part
    imap-bridge apikey revoke ID                     refuse a key from now on
    imap-bridge openapi [--output PATH]              the OpenAPI document, as checked in
    imap-bridge rotate-keys                          re-encrypt stored secrets under the newest key

`sync` is the manual twin of the worker's cron and needs no Redis: it runs
the same engine in this process, continuing a mailbox whose time budget ran
out until it is complete. On a terminal one line per mailbox shows the folder
and how much of it is stored; a summary line always ends the output, and the
exit status is 1 when a mailbox failed, does not exist, or (asked for by id)
is being synced by another worker.

`apikey create` prints the key alone on stdout (`KEY=$(imap-bridge apikey
create --name crm)`); only its SHA-256 is stored, so it cannot be shown again.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from fastapi import FastAPI
    from sqlalchemy.engine import Engine
    from sqlmodel import Session

    from app.config import Settings
    from app.sync.folder_sync import SyncProgress

# Each command imports what it needs when it runs: `--help` and the light commands
# do not pay for the web framework, the ORM or the sync engine (see bench "start-up").

Command = Callable[[argparse.Namespace], int]

_EXIT_FAILED = 1
_EXIT_INTERRUPTED = 130
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
_KEY_NAME_MAX_LENGTH = 100  # ApiKey.name


class _NoSchemaError(Exception):
    """The database has no tables yet."""


def _migrate(_args: argparse.Namespace) -> int:
    """Bring the database schema up to date (idempotent)."""
    from app.config import get_settings
    from app.db.migrate import upgrade_database

    upgrade_database(get_settings().database_url)
    print("database is up to date")
    return 0


def _worker(_args: argparse.Namespace) -> int:
    """Run the arq worker until SIGINT or SIGTERM, through Redis outages (app.worker)."""
    import asyncio

    from app.config import get_settings
    from app.process_priority import lower_cpu_priority
    from app.supervised_worker import SupervisedWorker
    from app.worker import worker_settings

    settings = get_settings()
    lower_cpu_priority(settings.worker_niceness)
    worker = SupervisedWorker(worker_settings(settings))  # may start the embedded Redis
    asyncio.run(worker.run_until_signalled())
    return 0


def _watch(_args: argparse.Namespace) -> int:
    """Watch this process's share of the mailboxes until SIGINT or SIGTERM (app.watch)."""
    import asyncio

    from app.config import get_settings
    from app.watch.supervisor import watch_supervisor

    async def watch() -> None:
        async with watch_supervisor(get_settings()) as supervisor:  # may start the embedded Redis
            await supervisor.run_until_signalled()

    asyncio.run(watch())
    return 0


def _run(args: argparse.Namespace) -> int:
    """Run the API and one worker in this process until SIGINT or SIGTERM."""
    from app.config import get_settings
    from app.service_runner import run_service

    return run_service(get_settings(), args.host, args.port, sys.stdout)


def _serve(args: argparse.Namespace) -> int:
    """Serve the API with uvicorn until SIGINT or SIGTERM (workers run separately)."""
    import uvicorn

    uvicorn.run(
        "app.main:create_app", factory=True, host=args.host, port=args.port, log_config=None
    )
    return 0


def openapi_json(app: FastAPI) -> str:
    """Render the app's OpenAPI document as checked in: sorted keys, indented, newline-ended."""
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _openapi(args: argparse.Namespace) -> int:
    """Write the OpenAPI document (stdout without --output).

    The document does not depend on where the service runs, so the app is built
    with settings that create nothing: an in-memory database, a throwaway key.
    """
    from cryptography.fernet import Fernet
    from pydantic import SecretStr

    from app.config import Settings
    from app.main import create_app

    offline = Settings(
        database_url="sqlite://", secret_keys=[SecretStr(Fernet.generate_key().decode())]
    )
    document = openapi_json(create_app(offline))
    if args.output is None:
        sys.stdout.write(document)
        return 0
    output: Path = args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(document, encoding="utf-8")
    print(f"wrote {output}")
    return 0


@contextmanager
def _migrated_session() -> Iterator[Session]:
    """Yield a session on the configured database, refusing one that was never migrated."""
    from app.config import get_settings
    from app.db import create_db_engine, session_scope
    from app.db.migrate import is_migrated

    engine = create_db_engine(get_settings().database_url)
    try:
        if not is_migrated(engine):
            raise _NoSchemaError
        with session_scope(engine) as session:
            yield session
    finally:
        engine.dispose()


def _rotate_keys(_args: argparse.Namespace) -> int:
    """Re-encrypt every stored secret under the newest of `SECRET_KEYS`, in one transaction."""
    from app.config import get_settings
    from app.db.repositories.secrets import rotate_secrets
    from app.security import SecretBox, SecretDecryptionError

    settings = get_settings()
    try:
        with _migrated_session() as session:
            counts = rotate_secrets(session, SecretBox.from_settings(settings))
    except SecretDecryptionError:
        print(
            "imap-bridge: a stored secret opens with none of SECRET_KEYS; nothing was changed",
            file=sys.stderr,
        )
        return _EXIT_FAILED
    for column, count in counts.items():
        print(f"{column}: {count} re-encrypted")
    print("every secret now uses the first key of SECRET_KEYS; older keys can be removed")
    return 0


def _apikey_create(args: argparse.Namespace) -> int:
    """Print a new key alone on stdout, the facts about it on stderr."""
    from app.db.models import ApiKeyScope
    from app.db.repositories.api_keys import create_api_key

    with _migrated_session() as session:
        row, key = create_api_key(session, args.name, ApiKeyScope(args.scope))
    print(key)
    print(
        f'created {row.scope.value} API key {row.id} "{row.name}" (prefix {row.prefix});'
        " it is not stored and cannot be shown again",
        file=sys.stderr,
    )
    return 0


def _apikey_list(_args: argparse.Namespace) -> int:
    """Print one line per key; the secret part of a key is never stored, so never shown."""
    from app.db.repositories.api_keys import list_api_keys

    with _migrated_session() as session:
        rows = list_api_keys(session)
    if not rows:
        print("no API keys; make one with: imap-bridge apikey create --name NAME")
        return 0
    table = [("ID", "NAME", "PREFIX", "SCOPE", "CREATED (UTC)", "LAST USED", "REVOKED")]
    table += [
        (
            str(row.id),
            row.name,
            row.prefix,
            row.scope.value,
            _minute(row.created_at),
            _minute(row.last_used_at) if row.last_used_at else "never",
            _minute(row.revoked_at) if row.revoked_at else "-",
        )
        for row in rows
    ]
    widths = [max(len(line[column]) for line in table) for column in range(len(table[0]))]
    for line in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
    return 0


def _apikey_revoke(args: argparse.Namespace) -> int:
    """Revoke a key by id; requests with it get 401 from now on."""
    from app.db.models import utcnow
    from app.db.repositories.api_keys import get_api_key

    with _migrated_session() as session:
        row = get_api_key(session, args.id)
        if row is None:
            print(f"imap-bridge: API key {args.id} does not exist", file=sys.stderr)
            return _EXIT_FAILED
        revoked_before = row.revoked_at
        if revoked_before is None:
            row.revoked_at = utcnow()
    if revoked_before is not None:
        print(f'API key {row.id} "{row.name}" was already revoked on {_minute(revoked_before)} UTC')
    else:
        print(f'revoked API key {row.id} "{row.name}"')
    return 0


def _minute(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def _key_name(text: str) -> str:
    name = text.strip()
    if not name or len(name) > _KEY_NAME_MAX_LENGTH:
        raise argparse.ArgumentTypeError(f"a name of 1 to {_KEY_NAME_MAX_LENGTH} characters")
    return name


@dataclass
class _Tally:
    """What a `sync` command did, for its summary line and exit status."""

    synced: int = 0
    failed: int = 0
    busy: int = 0
    messages: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        seconds = time.monotonic() - self.started
        line = (
            f"synced {_plural(self.synced, 'mailbox', 'mailboxes')}:"
            f" {_plural(self.messages, 'message', 'messages')},"
            f" {self.bytes / 1_000_000:,.1f} MB in {seconds:,.1f} s"
        )
        notes = [f"{n} {what}" for n, what in ((self.failed, "failed"), (self.busy, "busy")) if n]
        return f"{line} ({', '.join(notes)})" if notes else line


class _ProgressLine:
    """One line per mailbox, rewritten in place on a terminal, final everywhere."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._live = out.isatty()

    def show(self, mailbox_id: int, progress: SyncProgress) -> None:
        if not self._live:
            return
        width = shutil.get_terminal_size().columns - 1
        text = f"mailbox {mailbox_id}: {progress.folder} {progress.stored:,}/{progress.total:,}"
        self._out.write(f"\r\x1b[2K{text[:width]}")
        self._out.flush()

    def finish(self, text: str) -> None:
        self._clear()
        self._out.write(f"{text}\n")
        self._out.flush()

    def fail(self, text: str) -> None:
        """End the mailbox's line with an error, on stderr."""
        self._clear()
        self._out.flush()
        print(f"imap-bridge: {text}", file=sys.stderr)

    def _clear(self) -> None:
        if self._live:
            self._out.write("\r\x1b[2K")


def _sync(args: argparse.Namespace) -> int:
    """Sync the due mailboxes (or the one asked for) in this process, without Redis."""
    from app.config import get_settings
    from app.db import create_db_engine, session_scope
    from app.db.models import utcnow
    from app.db.repositories.mailboxes import due_mailbox_ids

    settings = get_settings()
    engine = create_db_engine(settings.database_url)
    tally = _Tally()
    line = _ProgressLine(sys.stdout)
    try:
        if args.mailbox is None:
            with session_scope(engine) as session:
                mailbox_ids = due_mailbox_ids(session, utcnow())
        else:
            mailbox_ids = [args.mailbox]
        for mailbox_id in mailbox_ids:
            _sync_until_complete(
                engine, settings, mailbox_id, folders_only=args.folders_only, tally=tally, line=line
            )
    except KeyboardInterrupt:
        line.finish("interrupted: every folder stops at its last stored batch")
        return _EXIT_INTERRUPTED
    finally:
        engine.dispose()
        print(tally.summary())
    explicit_busy = args.mailbox is not None and tally.busy > 0
    return _EXIT_FAILED if tally.failed or explicit_busy else 0


def _sync_until_complete(
    engine: Engine,
    settings: Settings,
    mailbox_id: int,
    *,
    folders_only: bool,
    tally: _Tally,
    line: _ProgressLine,
) -> None:
    """Run the engine on one mailbox until a run completes (each run is bounded by the budget)."""
    from app.db.models import SyncRunStatus, SyncTrigger
    from app.sync.errors import MailboxNotFoundError
    from app.sync.service import sync_mailbox

    messages = size = 0
    started = time.monotonic()
    while True:
        try:
            result = sync_mailbox(
                engine,
                mailbox_id,
                settings,
                folders_only=folders_only,
                trigger=SyncTrigger.CLI,
                progress=lambda progress: line.show(mailbox_id, progress),
            )
        except MailboxNotFoundError:
            tally.failed += 1
            line.fail(f"mailbox {mailbox_id} does not exist")
            return
        if result is None:
            tally.busy += 1
            line.finish(f"mailbox {mailbox_id}: skipped, another worker is syncing it")
            return
        messages += result.counts.new
        size += result.counts.bytes
        tally.messages += result.counts.new
        tally.bytes += result.counts.bytes
        if result.status is SyncRunStatus.FAILED:
            tally.failed += 1
            reason = _run_error(engine, result.run_id) or result.error_code
            line.fail(f"mailbox {mailbox_id} failed: {reason}")
            return
        if result.complete:
            break
    tally.synced += 1
    seconds = time.monotonic() - started
    line.finish(
        f"mailbox {mailbox_id}: {_plural(messages, 'new message', 'new messages')},"
        f" {size / 1_000_000:,.1f} MB in {seconds:,.1f} s"
    )


def _run_error(engine: Engine, run_id: int) -> str | None:
    from app.db import session_scope
    from app.db.models import SyncRun

    with session_scope(engine) as session:
        run = session.get(SyncRun, run_id)
        return run.error if run is not None else None


def _plural(count: int, one: str, many: str) -> str:
    return f"{count:,} {one if count == 1 else many}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imap-bridge", description="Keep a local SQL copy of IMAP mailboxes."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="migrate, make a first API key, then run the API and one worker in this process",
    )
    _add_listen_arguments(run)
    run.set_defaults(handler=_run, log_level=logging.INFO)

    serve = commands.add_parser("serve", help="run the API alone (uvicorn)")
    _add_listen_arguments(serve)
    serve.set_defaults(handler=_serve, log_level=logging.INFO)

    migrate = commands.add_parser("migrate", help="create or upgrade the database schema")
    migrate.set_defaults(handler=_migrate, log_level=logging.INFO)

    worker = commands.add_parser(
        "worker", help="run the arq worker: a cron every minute queues the due mailboxes"
    )
    worker.set_defaults(handler=_worker, log_level=logging.INFO)
    watch = commands.add_parser(
        "watch",
        help="hold a connection per mailbox (IDLE/NOTIFY) and queue a sync when mail changes",
    )
    watch.set_defaults(handler=_watch, log_level=logging.INFO)

    sync = commands.add_parser(
        "sync", help="sync the due mailboxes now, in this process (no Redis needed)"
    )
    sync.add_argument(
        "--mailbox", type=int, metavar="ID", help="sync this mailbox only, even if it is not due"
    )
    sync.add_argument(
        "--folders-only", action="store_true", help="refresh the folder list only, no mail"
    )
    # Progress and results are the output; engine logs would break the progress line.
    sync.set_defaults(handler=_sync, log_level=logging.WARNING)

    apikey = commands.add_parser("apikey", help="make, list and revoke API keys")
    apikey_commands = apikey.add_subparsers(dest="apikey_command", required=True)
    create = apikey_commands.add_parser("create", help="make a key and print it (only this once)")
    create.add_argument("--name", required=True, type=_key_name, help="what the key is for")
    create.add_argument(
        "--scope",
        choices=["full", "status"],  # ApiKeyScope's values; the ORM is not imported for --help
        default="full",
        help="full: every route (the CRM backend's key); status: the health routes alone,"
        " read-only (the status page's key, the one meant for a browser)",
    )
    create.set_defaults(handler=_apikey_create, log_level=logging.WARNING)
    listing = apikey_commands.add_parser("list", help="list the keys (never the keys themselves)")
    listing.set_defaults(handler=_apikey_list, log_level=logging.WARNING)
    revoke = apikey_commands.add_parser("revoke", help="refuse a key from now on")
    revoke.add_argument("id", type=int, metavar="ID", help="the key's id (see apikey list)")
    revoke.set_defaults(handler=_apikey_revoke, log_level=logging.WARNING)

    rotate = commands.add_parser(
        "rotate-keys", help="re-encrypt every stored secret under the newest SECRET_KEYS key"
    )
    rotate.set_defaults(handler=_rotate_keys, log_level=logging.WARNING)

    openapi = commands.add_parser("openapi", help="write the OpenAPI document (JSON)")
    openapi.add_argument(
        "--output", type=Path, metavar="PATH", help="write to this file instead of stdout"
    )
    openapi.set_defaults(handler=_openapi, log_level=logging.WARNING)
    return parser


def _add_listen_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address (default {DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)"
    )


def _configure_logging(args: argparse.Namespace) -> None:
    """Log at DEBUG with -v, else at LOG_LEVEL, else at the command's own level."""
    from app.config import LogSettings
    from app.logs import configure_logging

    settings = LogSettings()
    level = (
        args.log_level
        if settings.log_level is None
        else logging.getLevelNamesMapping()[settings.log_level]
    )
    configure_logging(logging.DEBUG if args.verbose else level, settings.log_format)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "sync" and args.folders_only and args.mailbox is None:
        parser.error("--folders-only needs --mailbox")
    _configure_logging(args)
    # After parsing, so that `--help` and a usage error do not import the ORM.
    from app.sync.errors import DatabaseUnavailableError, database_outages

    handler: Command = args.handler
    try:
        with database_outages():
            return handler(args)
    except _NoSchemaError:
        print(
            "imap-bridge: the database has no tables yet; run: imap-bridge migrate", file=sys.stderr
        )
        return _EXIT_FAILED
    except DatabaseUnavailableError as exc:
        print(f"imap-bridge: {exc}", file=sys.stderr)
        return _EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
