"""Sync mailboxes in a process of their own, so a test can kill the process or race two.

    python -m tests.sync.sync_driver [--rounds N] [--wait-for-go] MAILBOX_ID...
    python -m tests.sync.sync_driver --lease-only [--wait-for-go] MAILBOX_ID...

Settings come from the environment, as the service reads them (DATABASE_URL, SECRET_KEYS,
IMAP_ALLOW_PRIVATE_HOSTS, IMAP_CA_FILE, SYNC_BATCH_SIZE...). Every sync attempt prints one
JSON line `{"mailbox_id", "run_id", "status", "complete"}`, `run_id` null when another
worker held the lease; `--lease-only` asks for the lease only, prints `{"mailbox_id",
"won"}` and keeps it. `--wait-for-go` prints `{"ready": true}` once the imports are done
and starts on a line on stdin: a test can then start several processes at one instant,
or start the interpreter ahead of the moment it needs the sync.

The test side of the protocol lives here too (`Drivers`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import Engine

from app.config import Settings
from app.db import create_db_engine, session_scope
from app.db.models import utcnow
from app.db.repositories.mailboxes import acquire_lease
from app.sync.service import sync_mailbox, worker_identity

REPO_ROOT = Path(__file__).resolve().parents[2]
_READY = {"ready": True}


def sync_rounds(
    engine: Engine, settings: Settings, mailbox_ids: Sequence[int], rounds: int
) -> None:
    """Try every mailbox `rounds` times, in order, reporting each attempt as it ends."""
    for _ in range(rounds):
        for mailbox_id in mailbox_ids:
            result = sync_mailbox(engine, mailbox_id, settings)
            report = {
                "mailbox_id": mailbox_id,
                "run_id": result.run_id if result else None,
                "status": str(result.status) if result else None,
                "complete": result.complete if result else None,
            }
            print(json.dumps(report), flush=True)


def take_lease(engine: Engine, settings: Settings, mailbox_id: int) -> None:
    """Ask for the lease once, as `sync_mailbox` does, and report whether it was granted."""
    duration = timedelta(seconds=settings.sync_lease_seconds)
    with session_scope(engine) as session:
        won = acquire_lease(session, mailbox_id, worker_identity(), utcnow(), duration)
    print(json.dumps({"mailbox_id": mailbox_id, "won": won}), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sync.sync_driver")
    parser.add_argument("mailbox_ids", type=int, nargs="+", metavar="MAILBOX_ID")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--lease-only", action="store_true")
    parser.add_argument("--wait-for-go", action="store_true")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.wait_for_go:
        print(json.dumps(_READY), flush=True)
        if not sys.stdin.readline():
            return 0  # stdin closed: the test did not need this process after all
    engine = create_db_engine(settings.database_url)
    try:
        if args.lease_only:
            for mailbox_id in args.mailbox_ids:
                take_lease(engine, settings, mailbox_id)
        else:
            sync_rounds(engine, settings, args.mailbox_ids, args.rounds)
    finally:
        engine.dispose()
    return 0


# -- the test side ------------------------------------------------------------------------


def driver_environment(settings: Settings) -> dict[str, str]:
    """Return this process's environment with `settings` spelled as the service reads them."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            env.pop(name.upper(), None)
        else:
            env[name.upper()] = _spelled(value)
    return env


def _spelled(value: object) -> str:
    """Write a setting's value as its environment variable holds it (lists comma-separated)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list):
        return ",".join(_spelled(item) for item in value)
    return str(value)


def _launch(settings: Settings, arguments: Sequence[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.sync.sync_driver", *arguments],
        cwd=REPO_ROOT,
        env=driver_environment(settings),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_until_ready(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line or json.loads(line) != _READY:
        out, err = process.communicate()
        raise AssertionError(f"the driver did not start: {line}{out}{err}")


def _give_go(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.write("go\n")
    process.stdin.flush()


def _stop(processes: Sequence[subprocess.Popen[str]]) -> None:
    """Kill whichever still run and reap them all, so no process outlives its test."""
    for process in processes:
        if process.poll() is None:
            process.kill()
    for process in processes:
        process.communicate(timeout=30)


def reports(output: str) -> list[dict[str, Any]]:
    """Parse the JSON lines a driver printed, leaving out its ready line."""
    lines = (json.loads(line) for line in output.splitlines())
    return [line for line in lines if line != _READY]


class Drivers:
    """Driver processes launched up front, each waiting with its imports done for a go-ahead.

    An interpreter takes about a second to import the service: the test prepares mail
    meanwhile, then sets the drivers off all at one instant (`go`) or one after another
    (`start_next`). Leaving the `with` block kills whatever still runs.
    """

    def __init__(self, settings: Settings, argument_lists: Sequence[Sequence[str]]) -> None:
        self.processes: list[subprocess.Popen[str]] = []
        self._started = 0
        try:
            for arguments in argument_lists:
                self.processes.append(_launch(settings, ["--wait-for-go", *arguments]))
        except BaseException:
            _stop(self.processes)
            raise

    def go(self) -> None:
        for process in self.processes:
            _wait_until_ready(process)
        for process in self.processes:
            _give_go(process)
        self._started = len(self.processes)

    def start_next(self) -> subprocess.Popen[str]:
        process = self.processes[self._started]
        self._started += 1
        _wait_until_ready(process)
        _give_go(process)
        return process

    def outputs(self, timeout: float) -> list[str]:
        """Wait for every driver to end well and return what each printed."""
        outputs = []
        for process in self.processes:
            out, err = process.communicate(timeout=timeout)
            assert process.returncode == 0, err
            outputs.append(out)
        return outputs

    def __enter__(self) -> Drivers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        _stop(self.processes)


if __name__ == "__main__":
    sys.exit(main())
