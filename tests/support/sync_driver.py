"""Sync mailboxes in a process of their own, so a test can kill the process or race two.

    python -m tests.support.sync_driver [--rounds N] [--wait-for-go] [--freeze-on-signal] \
        MAILBOX_ID...
    python -m tests.support.sync_driver --lease-only [--wait-for-go] MAILBOX_ID...

Settings come from the environment, as the service reads them (DATABASE_URL, SECRET_KEYS,
IMAP_ALLOW_PRIVATE_HOSTS, IMAP_CA_FILE, SYNC_BATCH_SIZE...). Every sync attempt prints one
JSON line `{"mailbox_id", "run_id", "status", "complete"}`, `run_id` null when another
worker held the lease; `--lease-only` asks for the lease only, prints `{"mailbox_id",
"won"}` and keeps it. `--wait-for-go` prints `{"ready": true}` once the imports are done
and starts on a line on stdin: a test can then start several processes at one instant,
or start the interpreter ahead of the moment it needs the sync. `--freeze-on-signal`
makes SIGUSR1 print `{"stack": [...], "threads": [[...], ...]}` (the main thread's frames,
then each other thread's, such as the sync's batch writer, outermost first, as
`path:function`) and stop the process (SIGSTOP) right there: a test about to SIGKILL it
learns exactly what the kill interrupts (`freeze_and_kill`).

The test side of the protocol lives here too (`Drivers`, `DriverSeries`, `freeze_and_kill`).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import SecretStr
from sqlalchemy import Engine

from app.config import Settings
from app.db import create_db_engine, session_scope
from app.db.models import utcnow
from app.db.repositories.mailboxes import acquire_lease
from app.sync.holder import worker_identity
from app.sync.service import sync_mailbox

REPO_ROOT = Path(__file__).resolve().parents[2]
_READY = {"ready": True}
FREEZE_SIGNAL = signal.SIGUSR1


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


def freeze_on_signal() -> None:
    """On FREEZE_SIGNAL, report every thread's stack and stop the process where it is."""

    def freeze(_signum: int, frame: FrameType | None) -> None:
        main = threading.main_thread().ident
        others = [_stack(other) for ident, other in sys._current_frames().items() if ident != main]
        report = {"stack": _stack(frame), "threads": others}
        # os.write, not print: the signal may land inside a print of the main thread.
        os.write(sys.stdout.fileno(), (json.dumps(report) + "\n").encode())
        os.kill(os.getpid(), signal.SIGSTOP)

    signal.signal(FREEZE_SIGNAL, freeze)


def _stack(frame: FrameType | None) -> list[str]:
    return [f"{_place(entry.filename)}:{entry.name}" for entry in traceback.extract_stack(frame)]


def _place(filename: str) -> str:
    """Name a source file by its path in the repository or in site-packages."""
    path = Path(filename)
    if path.is_relative_to(REPO_ROOT) and "site-packages" not in path.parts:
        return path.relative_to(REPO_ROOT).as_posix()
    parts = path.parts
    if "site-packages" in parts:
        return "/".join(parts[parts.index("site-packages") + 1 :])
    return path.name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.sync_driver")
    parser.add_argument("mailbox_ids", type=int, nargs="+", metavar="MAILBOX_ID")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--lease-only", action="store_true")
    parser.add_argument("--wait-for-go", action="store_true")
    parser.add_argument("--freeze-on-signal", action="store_true")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.freeze_on_signal:
        freeze_on_signal()
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
        [sys.executable, "-m", "tests.support.sync_driver", *arguments],
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


class DriverSeries:
    """Driver processes set off one after another, each importing while the one before runs.

    `start()` sets off the driver that is ready and launches its successor at once, so a
    test that kills driver after driver waits for no interpreter to start. Leaving the
    `with` block kills whatever still runs.
    """

    def __init__(self, settings: Settings, arguments: Sequence[str]) -> None:
        self._settings = settings
        self._arguments = ["--wait-for-go", *arguments]
        self.processes: list[subprocess.Popen[str]] = []
        self._waiting = self._launch()

    def _launch(self) -> subprocess.Popen[str]:
        process = _launch(self._settings, self._arguments)
        self.processes.append(process)
        return process

    def start(self) -> subprocess.Popen[str]:
        process = self._waiting
        _wait_until_ready(process)
        _give_go(process)
        self._waiting = self._launch()
        return process

    def __enter__(self) -> DriverSeries:
        return self

    def __exit__(self, *exc_info: object) -> None:
        _stop(self.processes)


@dataclass(frozen=True, slots=True)
class KilledDriver:
    """What a driver was doing when it was killed, and the syncs it had reported by then."""

    stack: list[str]
    threads: list[list[str]]  # the other threads' stacks
    synced: list[dict[str, Any]]
    exited: bool

    @property
    def finished(self) -> bool:
        """Say whether the driver was done with its syncs: then the kill interrupted none."""
        return self.exited or bool(self.synced)


def freeze_and_kill(process: subprocess.Popen[str], timeout: float = 30) -> KilledDriver:
    """Stop a `--freeze-on-signal` driver where it is, read its stack, then SIGKILL it."""
    assert process.stdout is not None
    process.send_signal(FREEZE_SIGNAL)  # nothing happens if it has exited already
    readable, _, _ = select.select([process.stdout], [], [], timeout)
    first = process.stdout.readline() if readable else ""
    process.send_signal(signal.SIGKILL)
    rest, err = process.communicate(timeout=timeout)
    # A driver already shutting down may die of the freeze signal's default action instead.
    if not readable or process.returncode not in (0, -signal.SIGKILL, -FREEZE_SIGNAL):
        raise AssertionError(f"the driver neither froze nor ended well: {first}{rest}{err}")
    lines = reports(first + rest)
    frozen = [line for line in lines if "stack" in line]
    return KilledDriver(
        stack=frozen[0]["stack"] if frozen else [],
        threads=frozen[0]["threads"] if frozen else [],
        synced=[line for line in lines if "stack" not in line],
        exited=process.returncode == 0,
    )


if __name__ == "__main__":
    sys.exit(main())
