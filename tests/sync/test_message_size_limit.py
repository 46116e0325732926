"""Mail over SYNC_MAX_MESSAGE_BYTES is stored from its header, never downloaded, never lost."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import select

from app.config import Settings
from app.db import session_scope
from app.db.models import Email, SyncRunStatus
from app.sync.service import sync_mailbox
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.mailgen import Attachment, make_message

RECENT = datetime.now(UTC) - timedelta(days=2)
# Over the limit below by more than the literal slack (1 MiB): had the sync asked for its
# body, the literal would have been refused and the run failed.
HUGE = make_message(
    subject="huge",
    text="the body that must not be downloaded\n",
    attachments=(Attachment("big.bin", random.Random(3).randbytes(2 * 1024 * 1024)),),
)
LIMIT = 100_000


def test_a_message_over_the_size_limit_is_stored_without_its_body(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    small = mail_user.append("INBOX", make_message(subject="small"), date=RECENT)
    huge = mail_user.append("INBOX", HUGE, date=RECENT)
    mailbox_id = add_mailbox(mail_user)

    result = sync_mailbox(
        engine, mailbox_id, settings.model_copy(update={"sync_max_message_bytes": LIMIT})
    )

    assert result is not None and result.status is SyncRunStatus.SUCCEEDED, result
    with session_scope(engine) as session:
        emails = {e.subject: e for e in session.exec(select(Email)).all()}
        assert set(emails) == {"small", "huge"}, "a message was dropped"
        stored = emails["huge"]
        assert stored.size == len(HUGE)
        assert stored.text_body is None, "the body of a message over the limit was stored"
        assert stored.has_attachments, "its structure still lists the attachment"
        assert emails["small"].text_body is not None
    assert {small, huge} <= set(mail_user.uids("INBOX"))
