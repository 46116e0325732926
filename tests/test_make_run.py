"""`imap-bridge run` (what `make run` starts) on a fresh machine: the README walkthrough, tested.

The service runs in a subprocess, in an empty directory, with no DATABASE_URL
and no REDIS_URL: SQLite under ./var/ and the embedded Redis, as on a fresh
clone. The steps of the walkthrough test follow the README section "A first
mailbox, with curl" one for one and in the same order; change both together.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis

from app.config import Settings
from tests.support.dovecot import Dovecot, MailUser
from tests.support.mailgen import make_message
from tests.support.secret_watch import SecretKind, register_secret

API_KEY = re.compile(r"^\s+(ib_\w+_[\w-]+)$", re.MULTILINE)
DOCS_URL = re.compile(r"^API docs\s+(http://\S+)/docs$", re.MULTILINE)
KEY_EXISTS = "an API key exists; make another with: imap-bridge apikey create --name NAME"
RECENT = datetime.now(UTC) - timedelta(days=2)
START_SECONDS = 180  # a deadline: at a load of 26 on 2 cores, migrating and starting took over 60 s
StartService = Callable[[], "RunningService"]
SYNC_SECONDS = 30
WATCHING = re.compile(r"watch\.watching")


class RunningService:
    """`imap-bridge run --port 0` in a subprocess, its stdout and stderr read as they come."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "run", "--port", "0"],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def wait_for(self, pattern: re.Pattern[str]) -> re.Match[str]:
        """Wait until the output matches `pattern` (the service printing what it announces)."""
        deadline = time.monotonic() + START_SECONDS
        while (match := pattern.search(self.output)) is None:
            assert self.process.poll() is None, f"imap-bridge run exited:\n{self.output}"
            assert time.monotonic() < deadline, f"no {pattern.pattern!r} in:\n{self.output}"
            time.sleep(0.05)
        return match

    def embedded_redis_pid(self) -> int:
        client = redis.Redis(unix_socket_path=str(self.workdir / "var" / "redis.sock"))
        try:
            info = cast(dict[str, Any], client.info("server"))  # the sync client's answer
            return int(info["process_id"])
        finally:
            client.close()

    def interrupt(self, signum: signal.Signals = signal.SIGINT) -> int:
        """Press Ctrl-C (or send `signum`); return the exit status once every line is read."""
        self.process.send_signal(signum)
        status = self.process.wait(timeout=60)
        self._reader.join(timeout=10)
        return status

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def fresh_environment(dovecot: Dovecot) -> dict[str, str]:
    """The environment minus every setting, plus what the loopback Dovecot with its own CA needs."""
    env = {
        key: value for key, value in os.environ.items() if key.lower() not in Settings.model_fields
    }
    env["IMAP_ALLOW_PRIVATE_HOSTS"] = "true"
    env["IMAP_CA_FILE"] = str(dovecot.ca_file)
    return env


@pytest.fixture
def start_service(
    tmp_path_factory: pytest.TempPathFactory, fresh_environment: dict[str, str]
) -> Iterator[StartService]:
    """Start `imap-bridge run` in one empty directory (short: it holds a unix socket)."""
    workdir = tmp_path_factory.mktemp("run")
    started: list[RunningService] = []

    def start() -> RunningService:
        started.append(RunningService(workdir, fresh_environment))
        return started[-1]

    yield start
    for service in started:
        service.kill()


def process_running(pid: int) -> bool:
    """Say whether the process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_until_stopped(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while process_running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not process_running(pid)


def next_event_after(client: httpx.Client, action: Callable[[], object]) -> dict[str, Any]:
    """Open `GET /v1/events?types=email.received`, do `action`, return the first event."""
    with client.stream(
        "GET",
        "/v1/events",
        params={"types": "email.received"},
        timeout=httpx.Timeout(SYNC_SECONDS),
    ) as stream:
        assert stream.status_code == 200, stream.read()
        action()
        for line in stream.iter_lines():
            if line.startswith("data: "):
                envelope: dict[str, Any] = json.loads(line.removeprefix("data: "))
                return envelope
    raise AssertionError("the event stream ended without an event")


def test_the_readme_walkthrough_creates_syncs_and_lists_a_mailbox(
    start_service: StartService, mail_user: MailUser
) -> None:
    subjects = ["Welcome to the CRM", "Your invoice"]
    for subject in subjects:
        mail_user.append("INBOX", make_message(subject=subject), date=RECENT)

    # make run: migrates, prints a first API key and the docs URL
    service = start_service()
    key = register_secret(SecretKind.API_KEY, service.wait_for(API_KEY)[1], "first run's")
    api = service.wait_for(DOCS_URL)[1]
    redis_pid = service.embedded_redis_pid()
    with httpx.Client(
        base_url=api, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        assert client.get("/docs").status_code == 200

        # 1. register the mailbox
        created = client.post(
            "/v1/mailboxes",
            json={
                "email_address": f"{mail_user.name}@example.com",
                "owner": {"user_id": "crm-user-1", "email": "owner@example.com"},
                "imap": {
                    "host": mail_user.dovecot.host,
                    "port": mail_user.dovecot.tls_port,
                    "security": "ssl",
                    "username": mail_user.name,
                },
                "auth": {"type": "password", "password": mail_user.password},
            },
        )
        assert created.status_code == 201, created.text
        mailbox_id = created.json()["id"]

        # 2. sync it now
        queued = client.post(f"/v1/mailboxes/{mailbox_id}/sync")
        assert queued.status_code == 202, queued.text
        run_id = queued.json()["id"]

        # 3. follow the run until it is over: the worker inside `run` does it
        deadline = time.monotonic() + SYNC_SECONDS
        while (run := client.get(f"/v1/sync-runs/{run_id}").json())["status"] in {
            "queued",
            "running",
        }:
            assert time.monotonic() < deadline, f"the sync did not finish: {run}"
            time.sleep(0.2)
        assert (run["status"], run["error"]) == ("succeeded", None)

        # 4. its mail
        emails = client.get(f"/v1/mailboxes/{mailbox_id}/emails").json()
        assert sorted(email["subject"] for email in emails["items"]) == sorted(subjects)

        # 5. new mail arrives as an SSE event within seconds, through the watcher
        service.wait_for(WATCHING)
        arrived = next_event_after(
            client, lambda: mail_user.append("INBOX", make_message(subject="Just in"))
        )
        assert (arrived["type"], arrived["mailbox_id"]) == ("email.received", mailbox_id)

    # Ctrl-C: both halves stop, the embedded Redis too
    status = service.interrupt()
    assert status == 0, service.output
    assert "Traceback" not in service.output
    assert mail_user.password not in service.output
    assert wait_until_stopped(redis_pid), "the embedded Redis outlived imap-bridge run"
    assert not (service.workdir / "var" / "redis.sock").exists()


def test_a_second_run_keeps_the_data_prints_no_new_key_and_stops_on_sigterm(
    start_service: StartService,
) -> None:
    first = start_service()
    key = register_secret(SecretKind.API_KEY, first.wait_for(API_KEY)[1], "first run's")
    first.wait_for(DOCS_URL)
    assert first.interrupt() == 0, first.output

    second = start_service()
    api = second.wait_for(DOCS_URL)[1]
    redis_pid = second.embedded_redis_pid()
    answer = httpx.get(f"{api}/v1/mailboxes", headers={"Authorization": f"Bearer {key}"})
    status = second.interrupt(signal.SIGTERM)

    assert answer.status_code == 200
    assert KEY_EXISTS in second.output
    assert API_KEY.search(second.output) is None
    assert status == 0, second.output
    assert "Traceback" not in second.output
    assert wait_until_stopped(redis_pid), "the embedded Redis outlived imap-bridge run"


def test_the_access_log_of_imap_bridge_run_holds_no_oauth_code_or_state(
    start_service: StartService, caplog: pytest.LogCaptureFixture
) -> None:
    """The product's own logging setup (uvicorn's handlers, at INFO) redacts the callback URL."""
    caplog.set_level(logging.WARNING, logger="httpx")  # this test's client logs its own URLs
    service = start_service()
    api = service.wait_for(DOCS_URL)[1]
    code = register_secret(SecretKind.OAUTH_CODE, f"4/0A{secrets.token_urlsafe(30)}", "code")
    state = register_secret(SecretKind.OAUTH_CODE, secrets.token_urlsafe(24), "state")

    page = httpx.get(f"{api}/oauth/gmail/callback", params={"code": code, "state": state})
    status = service.interrupt()

    assert page.status_code == 400  # a state this service never issued
    assert status == 0, service.output
    assert "/oauth/gmail/callback?[redacted]" in service.output, "no redacted access line"
    assert code not in service.output, "the OAuth code reached the log"
    assert state not in service.output, "the OAuth state reached the log"


def test_with_watch_enabled_false_run_holds_no_connection_to_a_mailbox(
    start_service: StartService, fresh_environment: dict[str, str], mail_user: MailUser
) -> None:
    fresh_environment.update(WATCH_ENABLED="false", WATCH_REFRESH_SECONDS="0.2")
    service = start_service()
    key = register_secret(SecretKind.API_KEY, service.wait_for(API_KEY)[1], "first run's")
    api = service.wait_for(DOCS_URL)[1]
    assert re.search(r"^watcher\s+off$", service.output, re.MULTILINE), service.output
    with httpx.Client(
        base_url=api, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        created = client.post(
            "/v1/mailboxes",
            json={
                "email_address": f"{mail_user.name}@example.com",
                "owner": None,
                "imap": {
                    "host": mail_user.dovecot.host,
                    "port": mail_user.dovecot.tls_port,
                    "security": "ssl",
                    "username": mail_user.name,
                },
                "auth": {"type": "password", "password": mail_user.password},
            },
        )
        assert created.status_code == 201, created.text
        url = f"/v1/mailboxes/{created.json()['id']}"
        deadline = time.monotonic() + SYNC_SECONDS
        while client.get(url).json()["last_synced_at"] is None:  # the first sync is over
            assert time.monotonic() < deadline, "the first sync did not finish"
            time.sleep(0.2)
    quiet_until = time.monotonic() + 3  # fifteen of the watcher's refreshes
    while time.monotonic() < quiet_until:
        assert mail_user.open_sessions() == 0, "a connection is held with watching off"
        time.sleep(0.2)
    assert service.interrupt() == 0, service.output
