"""The `imap-bridge` command: one entry point for operators and for `make`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from app.config import get_settings
from app.db.migrate import upgrade_database

Command = Callable[[argparse.Namespace], int]


def _migrate(_args: argparse.Namespace) -> int:
    """Bring the database schema up to date (idempotent)."""
    upgrade_database(get_settings().database_url)
    print("database is up to date")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imap-bridge", description="Keep a local SQL copy of IMAP mailboxes."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    commands = parser.add_subparsers(dest="command", required=True)
    migrate = commands.add_parser("migrate", help="create or upgrade the database schema")
    migrate.set_defaults(handler=_migrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO)
    handler: Command = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
