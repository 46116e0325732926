"""What the parent hands a measuring child process, and what the child hands back.

    parent: Job -> JSON file -> python -m bench.child FILE
    child:  import Job.operation ("module:function"), run it -> Measurement -> JSON on stdout

A process per row makes its peak RSS that row's alone and keeps one row's
imports (SQLAlchemy, our sync engine) out of another's memory, which is why
this module and the peers' module import nothing from `app`.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

# Commands a session costs whatever it does; every other command is about one folder.
SESSION_COMMANDS = frozenset(
    {"CAPABILITY", "LOGIN", "AUTHENTICATE", "ID", "LIST", "LSUB", "NAMESPACE", "ENABLE", "LOGOUT"}
)


@dataclass(frozen=True, slots=True)
class Server:
    """The IMAP user a row reads: over implicit TLS, or over plain IMAP without a CA file."""

    host: str
    port: int
    ca_file: str  # empty: plain IMAP (the per-server rows)
    username: str
    password: str

    @property
    def plain(self) -> bool:
        return not self.ca_file


@dataclass(frozen=True, slots=True)
class Fleet:
    """Many mailboxes synced by `imap-bridge worker` processes through the cron path.

    The Dovecot users are `<user_prefix>-00000`, `-00001`..., all with the job
    server's password; each is registered once in the job's database.
    """

    redis_url: str
    queue_name: str
    workers: int
    max_jobs: int  # SYNC_MAX_JOBS of each worker
    connections_per_host: int  # IMAP_MAX_CONNECTIONS_PER_HOST, shared by the workers
    mailboxes: int
    user_prefix: str
    timeout_seconds: float
    clients: int = 0  # concurrent API clients while the cycle runs (the load row)

    @property
    def usernames(self) -> list[str]:
        return user_names(self.user_prefix, self.mailboxes)


def user_names(prefix: str, count: int) -> list[str]:
    """Name the Dovecot users of a fleet, in the order they are registered."""
    return [f"{prefix}-{n:05d}" for n in range(count)]


@dataclass(frozen=True, slots=True)
class Job:
    """What one child process measures; with `repeat` > 1 it reports the median run."""

    operation: str  # "module:function", the function taking a Job and returning a Measurement
    server: Server
    folders: tuple[str, ...]
    database_url: str | None = None
    mailbox_id: int | None = None
    secret_key: str | None = None
    repeat: int = 1
    profile_path: str | None = None
    scratch_dir: str | None = None  # files a row keeps between its runs (mbsync's Maildir)
    fleet: Fleet | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Job:
        data: dict[str, Any] = json.loads(text)
        data["server"] = Server(**data["server"])
        data["folders"] = tuple(data["folders"])
        if data.get("fleet") is not None:
            data["fleet"] = Fleet(**data["fleet"])
        return cls(**data)


@dataclass(frozen=True, slots=True)
class Measurement:
    """One row's figures.

    `command_count` is every IMAP command of the (median) run, `folder_commands`
    those about one folder (SELECT, STATUS, FETCH...), and `commands` their names
    when the row can see them. `flags_changed` is what a resync saw, when it says.
    """

    seconds: float
    messages: int
    bytes: int
    command_count: int = 0
    folder_commands: int = 0
    commands: list[str] = field(default_factory=list)
    peak_rss_kb: int = 0
    flags_changed: int = 0
    figures: dict[str, float] = field(default_factory=dict)  # what the columns have no room for

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Measurement:
        return cls(**json.loads(text))


def service_environment(job: Job) -> dict[str, str]:
    """The environment a service process (`imap-bridge ...`, uvicorn) reads the job's setup from."""
    assert job.database_url is not None
    assert job.secret_key is not None
    return {
        **os.environ,
        "DATABASE_URL": job.database_url,
        "SECRET_KEYS": job.secret_key,
        "IMAP_ALLOW_PRIVATE_HOSTS": "true",
        "IMAP_CA_FILE": job.server.ca_file,
    }


def folder_scoped(commands: list[str]) -> int:
    """Count the commands that are about one folder rather than the session."""
    return sum(1 for name in commands if name.upper() not in SESSION_COMMANDS)


def median_run(runs: list[Measurement]) -> Measurement:
    """Return the run of median duration (the upper one of an even count)."""
    middle = statistics.median_high(run.seconds for run in runs)
    return next(run for run in runs if run.seconds == middle)
