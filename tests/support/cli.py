"""Run the `imap-bridge` command in a process of its own, configured by its environment alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.config import Settings


def imap_bridge(settings: Settings, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the command in a fresh process whose only configuration is the environment."""
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "SECRET_KEYS": ",".join(key.get_secret_value() for key in settings.secret_keys),
        "IMAP_ALLOW_PRIVATE_HOSTS": "true",
        "IMAP_CA_FILE": str(settings.imap_ca_file),
    }
    env.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
