"""The API does what its OpenAPI document says: schemathesis with every check and the
stateful phase, against a real uvicorn with PostgreSQL and the test Dovecot.

Bounded to stay a test, not a fuzzing campaign: five examples per operation, twenty
stateful scenarios, one worker and deterministic generation, so a run repeats the same
requests; PostgreSQL only, as a second backend would double the time and the schema
checks do not depend on it. `tests/support/schemathesis_hooks.py` makes valid cases ones the
API can carry out.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.main import create_app
from tests.support.dovecot import MailUser
from tests.support.live_api import create_api_key, serving

OAUTH_ORIGIN = "https://crm.example.com"  # the one opener origin the run allows

# What the document states and the API does on purpose, which the checks would flag:
# - 502/503/504 are the documented answers about an IMAP server (negative cases name
#   hosts that do not exist); a 500 is a bug and still fails.
# - Rules no JSON Schema can state (uid_from <= uid_to, a folder id of this mailbox, a
#   provider's client id format, "email_address or imap", known event types in a
#   comma-separated list) refuse some valid-looking input with a 422 naming the field;
#   the OAuth callback page answers a state it never issued with a 400 page.
# - The event stream never ends: each case reads it for one second.
CONFIG = """
workers = 1
request-timeout = 30
suppress-health-check = ["all"]

[generation]
max-examples = 5
deterministic = true
no-shrink = true
database = "none"

[checks.not_a_server_error]
expected-statuses = ["1XX", "2XX", "3XX", "4XX", "502", "503", "504"]

[phases.stateful]
max-steps = 6

[phases.stateful.generation]
max-examples = 20

[[operations]]
include-operation-id = [
    "search_remote_folder",
    "update_folder_settings",
    "configure_oauth_provider",
    "check_oauth_connection",
]
checks.positive_data_acceptance.expected-statuses = [
    "2XX", "3XX", "401", "403", "404", "409", "422", "429", "5XX",
]

[[operations]]
include-operation-id = "stream_events"
request-timeout = 1
checks.positive_data_acceptance.expected-statuses = [
    "2XX", "3XX", "401", "403", "404", "409", "422", "429", "5XX",
]

[[operations]]
include-operation-id = "oauth_callback_page"
checks.positive_data_acceptance.expected-statuses = ["2XX", "3XX", "400", "404", "409", "5XX"]
"""


@pytest.mark.parametrize("databases", ["postgresql"], indirect=True)
def test_the_api_answers_as_its_openapi_document_says(
    settings: Settings, engine: Engine, mail_user: MailUser, tmp_path: Path
) -> None:
    """No check fails on any operation; a failure names the operation (`PATCH
    /v1/mailboxes/{mailbox_id}`), the check (`ST103 Undocumented status code`), the answer
    and a curl line that reproduces it."""
    unbounded = settings.model_copy(
        update={
            "api_rate_limit_per_minute": 1_000_000,  # 429 is tested in test_limits.py
            "webhook_allow_private_hosts": True,
            "imap_connect_timeout": 1,  # generated hosts fail fast
            "oauth_allowed_origins": [OAUTH_ORIGIN],
        }
    )
    api_key = create_api_key(engine)
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    env = os.environ | {
        "SCHEMATHESIS_HOOKS": "tests.support.schemathesis_hooks",
        "SCHEMATHESIS_IMAP_HOST": mail_user.dovecot.host,
        "SCHEMATHESIS_IMAP_PORT": str(mail_user.dovecot.tls_port),
        "SCHEMATHESIS_IMAP_USERNAME": mail_user.name,
        "SCHEMATHESIS_IMAP_PASSWORD": mail_user.password,
        "SCHEMATHESIS_OAUTH_ORIGIN": OAUTH_ORIGIN,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    with serving(create_app(unbounded)) as base_url:
        command = [
            *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config)),
            *("run", f"{base_url}/openapi.json", "--checks", "all", "--no-color"),
            *("--header", f"Authorization: Bearer {api_key}"),
        ]
        run = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path, check=False
        )
    assert run.returncode == 0, f"the API and its OpenAPI document disagree:\n{run.stdout}"
