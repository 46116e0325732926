"""`make demo` on a fresh copy of the project: the mail is synced, new mail is announced,
the printed curl commands work, and Ctrl-C leaves nothing behind.

The copy holds what a clone holds for the demo (Makefile, pyproject.toml, app/,
alembic/) and the suite's virtualenv, which make is told not to rebuild
(`-o .venv/.installed`). The demo puts its directory under TMPDIR, here a
directory of this test's own, so "nothing behind" is checked as "TMPDIR is empty".
Ctrl-C is sent as a terminal sends it: SIGINT to make's whole process group.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from tests.support.secret_watch import SecretKind, register_secret

PROJECT = Path(__file__).resolve().parents[2]
CLONED = ("Makefile", "pyproject.toml", "alembic.ini", "app", "alembic")
START_SECONDS = 180  # a cold start on a loaded machine: Dovecot, 317 APPENDs, CLI, first sync
EVENT_SECONDS = 60
STOP_SECONDS = 120
ARRIVAL_SECONDS = 2
API_KEY = re.compile(r"^API key\s+(ib_\S+)$", re.MULTILINE)
DOCS_URL = re.compile(r"^API docs\s+(http://\S+)/docs$", re.MULTILINE)
READY = "press Ctrl-C to stop everything"
SECTIONS = ("\nstarted\n", "\nAPI key ", "\nAPI docs ", "\nstatus ", "\n  curl ")


@dataclass(frozen=True)
class DemoRun:
    """The running `make demo`, the TMPDIR it was given and the marker in its environment."""

    process: subprocess.Popen[str]
    checkout: Path
    tmpdir: Path
    marker: str
    lines: list[str]

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_until_ready(self) -> str:
        deadline = time.monotonic() + START_SECONDS
        while READY not in self.output:
            assert self.process.poll() is None, f"make demo exited:\n{self.output}"
            assert time.monotonic() < deadline, f"make demo not ready in time:\n{self.output}"
            time.sleep(0.2)
        return self.output


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoRun]:
    """Start `make demo` in a fresh copy of the project; stop and clear it up at the end."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in CLONED:
        source = PROJECT / name
        if source.is_dir():
            shutil.copytree(source, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, checkout / name)
    (checkout / ".venv").symlink_to(Path(sys.prefix))
    tmpdir = Path(tempfile.mkdtemp(prefix="demo"))  # short, and reachable by `dovecot`
    tmpdir.chmod(0o711)
    marker = f"imap-bridge-demo-test-{os.getpid()}-{time.monotonic_ns()}"
    env = {
        key: value
        for key, value in os.environ.items()
        if key.lower() not in Settings.model_fields and key != "PYTHONPATH"
    }
    env.update(TMPDIR=str(tmpdir), DEMO_TEST_MARKER=marker)
    process = subprocess.Popen(
        [
            "make",
            "--no-print-directory",
            "-o",
            ".venv/.installed",
            "demo",
            f"DEMO_ARGS=--port 0 --arrival-seconds {ARRIVAL_SECONDS}",
        ],
        cwd=checkout,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    lines: list[str] = []
    reader = threading.Thread(target=read_lines, args=(process, lines), daemon=True)
    reader.start()
    run = DemoRun(process, checkout, tmpdir, marker, lines)
    try:
        yield run
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for pid in demo_processes(run):  # only after a failed test: do not leave them running
            os.kill(pid, signal.SIGKILL)
        reader.join(timeout=10)
        shutil.rmtree(tmpdir, ignore_errors=True)


def read_lines(process: subprocess.Popen[str], lines: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)


def demo_processes(run: DemoRun) -> set[int]:
    """Pids of live processes of the demo: the marker in their environment, or their working
    directory or command line under its TMPDIR (Dovecot's children clear their environment,
    the embedded Redis daemonizes away from make's process tree)."""
    found = set()
    tmpdir = str(run.tmpdir)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:  # gone, or a zombie
            continue
        if (
            f"DEMO_TEST_MARKER={run.marker}".encode() in environ
            or cwd.startswith(tmpdir)
            or tmpdir in cmdline
        ):
            found.add(int(entry.name))
    return found


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` in the process tree."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.add(child)
            pending.append(child)
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass(frozen=True)
class CurlCommand:
    """A printed curl command, read as the shell reads it, with $API and $KEY set."""

    method: str
    url: str
    headers: dict[str, str]
    body: str | None


def read_curl(line: str, variables: dict[str, str]) -> CurlCommand:
    words = shlex.split(line)
    assert words[0] == "curl", line

    def expand(word: str) -> str:
        for name, value in variables.items():
            word = word.replace(f"${name}", value)
        assert "$" not in word, f"an unset variable in {line!r}"
        return word

    method, url, body, headers = "GET", None, None, {}
    options = iter(words[1:])
    for word in options:
        if word == "-X":
            method = next(options)
        elif word == "-H":
            name, _, value = expand(next(options)).partition(": ")
            headers[name] = value
        elif word == "-d":
            body = next(options)
        elif word in ("-sS", "-sSN"):  # quiet but for errors; -N: unbuffered
            continue
        else:
            assert not word.startswith("-"), f"curl option {word} unknown to this test"
            url = expand(word)
    assert url is not None, line
    return CurlCommand(method, url, headers, body)


def printed_commands(output: str) -> dict[str, CurlCommand]:
    """The curl commands the demo printed, by their comment, after its `API=... KEY=...` line."""
    setup = re.search(r"^  API=(\S+) KEY=(\S+)$", output, re.MULTILINE)
    assert setup is not None, output
    variables = {"API": setup[1], "KEY": setup[2]}
    commands = re.findall(r"^  # (.+)\n  (curl .+)$", output, re.MULTILINE)
    return {purpose: read_curl(command, variables) for purpose, command in commands}


def send(client: httpx.Client, command: CurlCommand) -> Any:
    answer = client.request(
        command.method, command.url, headers=command.headers, content=command.body
    )
    assert answer.status_code == 200, f"{command.method} {command.url}: {answer.text}"
    return answer.json()


def first_event(client: httpx.Client, command: CurlCommand) -> dict[str, Any]:
    """Read the printed event stream until its first event (new mail arrives every 2 s)."""
    with client.stream(
        command.method,
        command.url,
        headers=command.headers,
        timeout=httpx.Timeout(10, read=EVENT_SECONDS),
    ) as stream:
        assert stream.status_code == 200, stream.read()
        for line in stream.iter_lines():
            if line.startswith("data: "):
                event: dict[str, Any] = json.loads(line.removeprefix("data: "))
                return event
    raise AssertionError("the event stream ended without an event")


def test_make_demo_syncs_announces_new_mail_and_ctrl_c_leaves_nothing_behind(
    demo: DemoRun,
) -> None:
    output = demo.wait_until_ready()
    printed_key = API_KEY.search(output)
    assert printed_key, output
    register_secret(SecretKind.API_KEY, printed_key[1], "the demo's")
    assert DOCS_URL.search(output), output
    positions = [output.find(section) for section in SECTIONS]
    assert -1 not in positions and positions == sorted(positions), output
    assert re.search(r"IMAP_ALLOW_PRIVATE_HOSTS=true\n\s+the one setting that differs", output)
    commands = printed_commands(output)
    assert len(commands) == 4, output
    listing, search, flag, events = commands.values()

    with httpx.Client(timeout=60) as client:
        mail = send(client, listing)
        assert mail["items"], f"no synced mail: {mail}"
        mailbox_id = mail["items"][0]["mailbox_id"]

        found = send(client, search)  # on the server: the sync leaves Archive alone
        assert found["total"] > 0, found

        flagged = send(client, flag)
        assert flagged["flagged"] is True, flagged
        on_server = client.post(
            listing.url.split("/emails")[0] + "/search",
            headers=listing.headers,
            json={"folder": "INBOX", "flagged": True, "limit": 500},
        )
        assert on_server.status_code == 200, on_server.text
        assert flagged["message_id"] in {m["message_id"] for m in on_server.json()["items"]}

        event = first_event(client, events)
        assert (event["type"], event["mailbox_id"]) == ("email.received", mailbox_id), event

    started = descendants(demo.process.pid) | demo_processes(demo)
    assert len(started) >= 4, f"make, the demo, Dovecot, the service: {started}"
    os.killpg(demo.process.pid, signal.SIGINT)  # Ctrl-C
    demo.process.wait(timeout=STOP_SECONDS)
    deadline = time.monotonic() + 10
    while (left := {pid for pid in started if running(pid)} | demo_processes(demo)) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    final = demo.output
    assert not left, f"processes of the demo still run: {sorted(left)}\n{final}"
    assert "stopped; removed" in final, final
    assert "Traceback" not in final, final
    assert list(demo.tmpdir.iterdir()) == [], "the demo left files in its TMPDIR"
    assert not (demo.checkout / "var").exists(), "the demo wrote to ./var/, which make run uses"
