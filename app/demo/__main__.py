"""`python -m app.demo [--port P] [--arrival-seconds S]`: what `make demo` runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from app.demo.runner import run_demo

DEFAULT_PORT = 8000
DEFAULT_ARRIVAL_SECONDS = 20.0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options and run the demo until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="make demo",
        description="Run a private IMAP server with a demo mailbox and the service syncing it.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"the API's port on 127.0.0.1 (default {DEFAULT_PORT}; 0: any free one)",
    )
    parser.add_argument(
        "--arrival-seconds",
        type=float,
        default=DEFAULT_ARRIVAL_SECONDS,
        help=f"seconds between new messages in INBOX (default {DEFAULT_ARRIVAL_SECONDS:g})",
    )
    args = parser.parse_args(argv)
    if args.arrival_seconds <= 0:
        parser.error("--arrival-seconds must be above 0")
    return run_demo(args.port, args.arrival_seconds, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
