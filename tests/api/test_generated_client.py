"""A client generated from the checked-in OpenAPI document works against the running service.

`openapi-python-client` generates the package once per test session (about a
second), refusing any part of the document it cannot turn into code; the test
then drives a mailbox the way a CRM developer would: create it, queue a sync,
let a real arq worker run it, list the mail.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from app.config import Settings
from tests.support.dovecot import MailUser
from tests.support.live_api import LiveApi
from tests.support.mailgen import make_message
from tests.support.worker_process import run_worker

DOCUMENT = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
PACKAGE = "imap_bridge_client"
# The generator knows no message/rfc822 (GET /v1/emails/{id}/raw): to a client it is bytes.
# No post hooks: formatting the generated code with ruff is of no use to a test.
GENERATOR_CONFIG = """\
content_type_overrides:
  message/rfc822: application/octet-stream
post_hooks: []
"""
RECENT = datetime.now(UTC) - timedelta(days=2)


class GeneratedClient:
    """The generated package: `models`, and `call(tag, operation_id)` for its operations."""

    def __init__(self, package: ModuleType) -> None:
        self.package = package
        self.models = importlib.import_module(f"{PACKAGE}.models")

    def connect(self, live_api: LiveApi) -> Any:
        return self.package.AuthenticatedClient(
            base_url=live_api.base_url, token=live_api.api_key, raise_on_unexpected_status=True
        )

    def operation(self, tag: str, operation_id: str) -> Any:
        return importlib.import_module(f"{PACKAGE}.api.{tag}.{operation_id}")


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeneratedClient]:
    """Generate the client package from the checked-in document and import it."""
    root = tmp_path_factory.mktemp("generated-client")
    config = root / "generator.yaml"
    config.write_text(GENERATOR_CONFIG, encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(DOCUMENT),
            "--output-path",
            str(root / PACKAGE),
            "--meta",
            "none",
            "--config",
            str(config),
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"the generator refused the document:\n{done.stdout}{done.stderr}"
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(root))
        yield GeneratedClient(importlib.import_module(PACKAGE))
        for name in [name for name in sys.modules if name.partition(".")[0] == PACKAGE]:
            del sys.modules[name]


def test_generated_client_creates_a_mailbox_syncs_it_and_lists_its_mail(
    generated: GeneratedClient, live_api: LiveApi, settings: Settings, mail_user: MailUser
) -> None:
    for subject in ("Quarterly report", "Lunch on Friday"):
        mail_user.append("INBOX", make_message(subject=subject), date=RECENT)
    models = generated.models
    client = generated.connect(live_api)

    created = generated.operation("mailboxes", "create_mailbox").sync_detailed(
        client=client,
        body=models.MailboxCreate(
            email_address=f"{mail_user.name}@example.com",
            owner=models.OwnerRef(user_id="crm-user-7"),
            imap=models.ImapSettings(
                host=mail_user.dovecot.host,
                port=mail_user.dovecot.tls_port,
                security=models.Security.SSL,
                username=mail_user.name,
            ),
            auth=models.PasswordAuth(type_="password", password=mail_user.password),
        ),
    )
    assert created.status_code == 201, created.content
    mailbox = created.parsed
    assert isinstance(mailbox, models.MailboxRead)

    queue_sync = generated.operation("sync", "queue_sync")
    queued = queue_sync.sync_detailed(mailbox.id, client=client)
    assert queued.status_code == 202, queued.content
    assert isinstance(queued.parsed, models.SyncRunRead)
    run_worker(settings)

    run = generated.operation("sync", "get_sync_run").sync(queued.parsed.id, client=client)
    assert isinstance(run, models.SyncRunRead)
    assert run.status == models.SyncRunStatus.SUCCEEDED
    page = generated.operation("emails", "list_emails").sync(mailbox.id, client=client)
    assert isinstance(page, models.PageEmailSummary)
    assert sorted(email.subject for email in page.items) == ["Lunch on Friday", "Quarterly report"]
    assert page.next_cursor is None
