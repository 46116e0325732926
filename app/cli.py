"""The `imap-bridge` command: one entry point for operators and for `make`.

    imap-bridge migrate                              create or upgrade the schema
    imap-bridge worker                               arq worker: cron + sync jobs
    imap-bridge sync                                 every due mailbox, now, in this process
    imap-bridge sync --mailbox ID [--folders-only]   one mailbox, due or not

`sync` is the manual twin of the worker's cron and needs no Redis: it runs
the same engine in this process, continuing a mailbox whose time budget ran
out until it is complete. On a terminal one line per mailbox shows the folder
and how much of it is stored; a summary line always ends the output, and the
exit status is 1 when a mailbox failed, does not exist, or (asked for by id)
is being synced by another worker.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from arq import Worker
from sqlalchemy.engine import Engine

from app.config import Settings, get_settings
from app.db import create_db_engine, session_scope
from app.db.migrate import upgrade_database
from app.db.models import SyncRun, SyncRunStatus, SyncTrigger, utcnow
from app.db.repositories.mailboxes import due_mailbox_ids
from app.sync.errors import MailboxNotFoundError
from app.sync.folder_sync import SyncProgress
from app.sync.service import sync_mailbox
from app.worker import worker_settings

Command = Callable[[argparse.Namespace], int]

_EXIT_FAILED = 1
_EXIT_INTERRUPTED = 130


def _migrate(_args: argparse.Namespace) -> int:
    """Bring the database schema up to date (idempotent)."""
    upgrade_database(get_settings().database_url)
    print("database is up to date")
    return 0


def _worker(_args: argparse.Namespace) -> int:
    """Run the arq worker until SIGINT or SIGTERM (embedded Redis when REDIS_URL is unset)."""
    Worker(**worker_settings(get_settings())).run()
    return 0


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

    migrate = commands.add_parser("migrate", help="create or upgrade the database schema")
    migrate.set_defaults(handler=_migrate, log_level=logging.INFO)

    worker = commands.add_parser(
        "worker", help="run the arq worker: a cron every minute queues the due mailboxes"
    )
    worker.set_defaults(handler=_worker, log_level=logging.INFO)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "sync" and args.folders_only and args.mailbox is None:
        parser.error("--folders-only needs --mailbox")
    logging.basicConfig(level=logging.DEBUG if args.verbose else args.log_level)
    handler: Command = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
