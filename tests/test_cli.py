"""`imap-bridge sync` as an operator runs it: a separate process, configured by the environment."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from app.config import Settings
from app.db import session_scope
from app.db.models import SyncRun, SyncTrigger, utcnow
from app.security import SecretBox
from tests.support.cli import imap_bridge
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.mailgen import make_message
from tests.support.secret_watch import SecretKind, register_secret
from tests.support.snapshot import email_count

RECENT = datetime.now(UTC) - timedelta(days=3)
SUMMARY = re.compile(
    r"^synced (?P<mailboxes>\d+) mailbox(es)?: (?P<messages>[\d,]+) messages?,"
    r" [\d,]+\.\d MB in [\d,]+\.\d s(?: \((?P<problems>[^)]*)\))?$"
)


def summary(output: str) -> re.Match[str]:
    last_line = output.strip().splitlines()[-1]
    match = SUMMARY.match(last_line)
    assert match, f"no summary line at the end of: {output!r}"
    return match


def test_sync_one_mailbox_stores_its_mail_and_prints_a_summary(
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    tmp_path: Path,
) -> None:
    for n in range(2):
        mail_user.append("INBOX", make_message(subject=f"m{n}"), date=RECENT)
    later = utcnow() + timedelta(hours=1)
    mailbox_id = add_mailbox(mail_user, next_sync_at=later)  # not due: asked for by id

    done = imap_bridge(settings, tmp_path, "sync", "--mailbox", str(mailbox_id))

    assert done.returncode == 0, done.stderr
    result = summary(done.stdout)
    assert (result["mailboxes"], result["messages"], result["problems"]) == ("1", "2", None)
    assert email_count(engine, mailbox_id) == 2
    with session_scope(engine) as session:
        triggers = session.exec(select(SyncRun.trigger).where(SyncRun.mailbox_id == mailbox_id))
        assert list(triggers) == [SyncTrigger.CLI]


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)  # no query differs by backend
def test_sync_of_a_missing_mailbox_fails_with_a_clear_message(
    settings: Settings, tmp_path: Path
) -> None:
    done = imap_bridge(settings, tmp_path, "sync", "--mailbox", "424242")

    assert done.returncode == 1
    assert "mailbox 424242 does not exist" in done.stderr
    assert summary(done.stdout)["problems"] == "1 failed"


def test_sync_without_a_mailbox_syncs_the_due_ones_and_reports_failures(
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    tmp_path: Path,
) -> None:
    mail_user.append("INBOX", make_message(), date=RECENT)
    due = add_mailbox(mail_user)
    not_due = add_mailbox(
        mail_user, email_address="later@example.com", next_sync_at=utcnow() + timedelta(hours=1)
    )
    wrong_password = add_mailbox(
        mail_user,
        email_address="wrong@example.com",
        password_enc=SecretBox.from_settings(settings).encrypt(
            register_secret(SecretKind.IMAP_PASSWORD, "not-the-password", "wrong")
        ),
    )

    done = imap_bridge(settings, tmp_path, "sync")

    assert done.returncode == 1
    result = summary(done.stdout)
    assert (result["mailboxes"], result["messages"], result["problems"]) == ("1", "1", "1 failed")
    assert f"mailbox {wrong_password} failed" in done.stderr
    assert email_count(engine, due) == 1
    assert email_count(engine, not_due) == 0


def test_sync_with_the_database_down_says_so_without_a_traceback(
    settings: Settings, tmp_path: Path
) -> None:
    nobody_listens = "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2"
    down = settings.model_copy(update={"database_url": nobody_listens})

    done = imap_bridge(down, tmp_path, "sync")

    assert done.returncode == 1
    assert "imap-bridge: the database did not answer" in done.stderr
    assert "Traceback" not in done.stderr
