"""A server without CONDSTORE/QRESYNC: flag changes and expunges are still found in one run.

It offers no UNSELECT either, so each run also leaves its folders with CLOSE.
"""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import col, select

from app.config import Settings
from app.db import session_scope
from app.db.models import Email, EmailFolder, Folder
from app.imap import Security
from tests.support.dovecot import Dovecot, MailUser
from tests.support.factories import MailboxFactory
from tests.support.mailgen import append_many
from tests.support.mirror import assert_mirrors_server, sync
from tests.support.snapshot import folder_row

FLAG_COLUMNS = {"seen": "\\Seen", "flagged": "\\Flagged", "answered": "\\Answered"}


def stored_flags(engine: Engine, mailbox_id: int, folder: str) -> dict[int, set[str]]:
    """Each stored UID's system flags, spelled as IMAP spells them."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(EmailFolder.uid, Email.seen, Email.flagged, Email.answered)
            .join(Email, col(Email.id) == EmailFolder.email_id)
            .join(Folder, col(Folder.id) == EmailFolder.folder_id)
            .where(Folder.mailbox_id == mailbox_id, Folder.full_name == folder)
        ).all()
    return {
        uid: {flag for flag, on in zip(FLAG_COLUMNS.values(), values, strict=True) if on}
        for uid, *values in rows
    }


def assert_flags_match(engine: Engine, mailbox_id: int, user: MailUser) -> None:
    on_server = {
        uid: flags & set(FLAG_COLUMNS.values()) for uid, flags in user.flags("INBOX").items()
    }
    assert stored_flags(engine, mailbox_id, "INBOX") == on_server


def test_without_condstore_flag_changes_and_expunges_are_found_in_one_run(
    engine: Engine,
    settings: Settings,
    legacy_dovecot: Dovecot,
    add_mailbox: MailboxFactory,
) -> None:
    user = legacy_dovecot.add_user()
    uids = append_many(user, "INBOX", "in", 60)
    user.add_flags("INBOX", uids[40:50], ["\\Seen"])
    mailbox_id = add_mailbox(user, port=legacy_dovecot.plain_port, security=Security.NONE)
    assert sync(engine, settings, mailbox_id).complete
    inbox = folder_row(engine, mailbox_id, "INBOX")
    assert inbox is not None
    assert inbox.highestmodseq is None, "the server must not offer CONDSTORE"

    user.add_flags("INBOX", uids[:10], ["\\Seen", "\\Flagged"])
    user.remove_flags("INBOX", uids[40:45], ["\\Seen"])
    user.expunge("INBOX", uids[50:55])
    result = sync(engine, settings, mailbox_id)

    assert (result.counts.flags_changed, result.counts.expunged) == (15, 5)
    assert_mirrors_server(engine, mailbox_id, user)
    assert_flags_match(engine, mailbox_id, user)

    # Flags alone, the message count unchanged: still found by the next run.
    user.add_flags("INBOX", uids[20:23], ["\\Answered"])
    result = sync(engine, settings, mailbox_id)

    assert (result.counts.flags_changed, result.counts.expunged) == (3, 0)
    assert_flags_match(engine, mailbox_id, user)
