"""`imap-bridge apikey` as an operator uses it: a key it makes opens the API until revoked.

SQLite only: the commands' queries do not differ by backend, and each command
is a process of its own (about two seconds); the API checks keys on both.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from app.config import Settings
from app.db import session_scope
from app.db.models import ApiKey
from tests.support.cli import imap_bridge
from tests.support.live_api import LiveApi
from tests.support.secret_watch import SecretKind, register_secret

KEY = re.compile(r"ib_[0-9a-f]{8}_[\w-]{43}")
pytestmark = pytest.mark.parametrize("databases", ["sqlite"], indirect=True)


def test_a_created_key_opens_the_api_until_it_is_revoked(
    live_api: LiveApi, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    created = imap_bridge(settings, tmp_path, "apikey", "create", "--name", "crm backend")
    assert created.returncode == 0, created.stderr
    key = register_secret(SecretKind.API_KEY, created.stdout.strip(), "made by the command")
    assert KEY.fullmatch(key), "stdout is the key alone, ready for KEY=$(...)"
    with session_scope(engine) as session:
        row = session.exec(select(ApiKey).where(ApiKey.name == "crm backend")).one()
    assert key not in row.key_hash
    assert key.split("_")[1] == row.prefix
    headers = {"Authorization": f"Bearer {key}"}
    assert live_api.client.get("/v1/mailboxes", headers=headers).status_code == 200

    listing = imap_bridge(settings, tmp_path, "apikey", "list")
    revoked = imap_bridge(settings, tmp_path, "apikey", "revoke", str(row.id))
    again = imap_bridge(settings, tmp_path, "apikey", "revoke", str(row.id))

    line = next(line for line in listing.stdout.splitlines() if "crm backend" in line)
    assert line.split()[0] == str(row.id)
    assert row.prefix in line
    assert line.split()[-1] == "-", "not revoked yet"
    assert key not in listing.stdout
    assert (revoked.returncode, revoked.stdout) == (0, f'revoked API key {row.id} "crm backend"\n')
    assert again.returncode == 0
    assert "was already revoked" in again.stdout
    refused = live_api.client.get("/v1/mailboxes", headers=headers)
    assert (refused.status_code, refused.json()["code"]) == (401, "unauthorized")


def test_revoking_an_unknown_key_fails(settings: Settings, tmp_path: Path) -> None:
    done = imap_bridge(settings, tmp_path, "apikey", "revoke", "424242")

    assert done.returncode == 1
    assert "API key 424242 does not exist" in done.stderr


def test_a_status_key_opens_only_the_health_routes(
    live_api: LiveApi, settings: Settings, tmp_path: Path
) -> None:
    created = imap_bridge(
        settings, tmp_path, "apikey", "create", "--name", "status page", "--scope", "status"
    )
    assert created.returncode == 0, created.stderr
    key = register_secret(SecretKind.API_KEY, created.stdout.strip(), "a status key")
    headers = {"Authorization": f"Bearer {key}"}

    fleet = live_api.client.get("/v1/health/mailboxes", headers=headers)
    mailboxes = live_api.client.get("/v1/mailboxes", headers=headers)
    listing = imap_bridge(settings, tmp_path, "apikey", "list")

    assert "created status API key" in created.stderr
    assert fleet.status_code == 200
    assert (mailboxes.status_code, mailboxes.json()["code"]) == (403, "insufficient_scope")
    assert listing.stdout.split()[:4] == ["ID", "NAME", "PREFIX", "SCOPE"]
    assert re.search(r"^\d+ +tests +\w+ +full ", listing.stdout, re.M), "the test's own key"
    assert re.search(r"^\d+ +status page +\w+ +status ", listing.stdout, re.M), listing.stdout
