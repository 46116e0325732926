"""Run the `imap-bridge` command in a process of its own, configured by its environment alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.config import Settings


def cli_environment(settings: Settings, **variables: str) -> dict[str, str]:
    """The environment of a fresh process that has the test's database and keys, REDIS_URL unset."""
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "SECRET_KEYS": ",".join(key.get_secret_value() for key in settings.secret_keys),
        "IMAP_ALLOW_PRIVATE_HOSTS": "true",
        "IMAP_CA_FILE": str(settings.imap_ca_file),
        **variables,
    }
    env.pop("REDIS_URL", None)
    return env


def imap_bridge(settings: Settings, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the command to its end; its output is captured."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=workdir,
        env=cli_environment(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start_imap_bridge(
    settings: Settings, workdir: Path, *args: str, **variables: str
) -> subprocess.Popen[str]:
    """Start the command and return at once; its output goes to pipes."""
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", *args],
        cwd=workdir,
        env=cli_environment(settings, **variables),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
