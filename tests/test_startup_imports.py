"""A command imports only what it needs: `--help` and the IMAP library start at once.

Each check runs in a fresh interpreter and reads `sys.modules` afterwards, so an
import added at the top of the CLI (or an httpx import in the IMAP layer) fails
here by name, long before anyone notices the start-up time (bench: "Start-up").
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# What `--help` must not load: the ORM, the web framework and server, the HTTP client,
# the queue, the database drivers, the IMAP client.
HEAVY_FOR_HELP = {
    "sqlalchemy",
    "sqlmodel",
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "arq",
    "redis",
    "psycopg",
    "pydantic",
    "imapclient",
    "cryptography",
}


def _third_party_after(code: str) -> set[str]:
    """Run `code` in a fresh interpreter; return the top-level non-stdlib modules it loaded."""
    probe = (
        f"{code}\nimport json, sys\n"
        "names = {m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)\n"
        "print(json.dumps(sorted(names)), file=sys.stderr)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(completed.stderr.strip().splitlines()[-1]))


def test_help_loads_none_of_the_heavy_libraries() -> None:
    loaded = _third_party_after(
        "from app.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    assert not loaded & HEAVY_FOR_HELP, f"--help imported {sorted(loaded & HEAVY_FOR_HELP)}"


@pytest.mark.parametrize("command", ["sync", "apikey list", "migrate", "worker", "openapi"])
def test_help_of_each_command_loads_none_of_the_heavy_libraries(command: str) -> None:
    argv = [*command.split(), "--help"]
    loaded = _third_party_after(
        f"from app.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    )
    heavy = sorted(loaded & HEAVY_FOR_HELP)
    assert not heavy, f"{command} --help imported {heavy}"


def test_the_imap_library_does_not_load_the_http_client() -> None:
    loaded = _third_party_after("import app.imap")
    unwanted = loaded & {"httpx", "httpcore", "sqlalchemy", "sqlmodel", "fastapi"}
    assert not unwanted, f"import app.imap loaded {sorted(unwanted)}"
