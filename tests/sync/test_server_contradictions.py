"""A real Dovecot made to leave out what other servers leave out, through a rewriting relay.

Dovecot itself always sends UIDNEXT and lists UIDs faithfully; the relay drops the
lines a test names, so the behaviour that Courier (no UIDNEXT on SELECT) or a server
with a faulty UID listing forces on the sync is tested on the server every test uses.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.db import session_scope
from app.db.models import SyncRun, SyncRunStatus
from app.imap import Security
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.hostile_imap import rewriting_proxy
from tests.support.mirror import sync
from tests.support.server_matrix import NOW, OLD, RECENT, Mirror, append

pytestmark = pytest.mark.parametrize("databases", ["sqlite"], indirect=True)

_UIDNEXT_LINE = re.compile(rb"^\* OK \[UIDNEXT \d+\]")


def _without_uidnext(line: bytes) -> bytes | None:
    return None if _UIDNEXT_LINE.match(line) else line


def test_a_select_without_uidnext_keeps_old_mail_above_the_window_out(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    append(mail_user, "INBOX", "new", RECENT)
    _, imported = append(mail_user, "INBOX", "imported old", OLD)
    with rewriting_proxy(mail_user.dovecot.plain_port, _without_uidnext) as port:
        mailbox_id = add_mailbox(mail_user, port=port, security=Security.NONE)
        mirror = Mirror(engine, settings, mailbox_id, mail_user, ["INBOX"])
        mirror.outside_window = {imported}
        mirror.sync("the first sync")

        _, arrived = append(mail_user, "INBOX", "arrived", NOW)
        result = mirror.sync("the next sync")

    assert result.counts.new == 1, "only the message that arrived is new"
    assert mirror.announced() == [arrived]


class HiddenUid:
    """Leave one UID out of every UID listing (SEARCH results and `FETCH (UID n)` lines)."""

    def __init__(self) -> None:
        self.uid: int | None = None

    def __call__(self, line: bytes) -> bytes | None:
        if self.uid is None:
            return line
        hidden = str(self.uid).encode()
        if re.fullmatch(rb"\* \d+ FETCH \(UID " + hidden + rb"\)", line):
            return None
        if line.startswith(b"* SEARCH"):
            return b" ".join(n for n in line.split(b" ") if n != hidden)
        return line


def test_a_folder_whose_uid_listing_disagrees_with_exists_fails_loudly_and_keeps_its_mail(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    uids = [append(mail_user, "INBOX", f"m{n}", RECENT)[0] for n in range(3)]
    hide = HiddenUid()
    with rewriting_proxy(mail_user.dovecot.plain_port, hide) as port:
        mailbox_id = add_mailbox(mail_user, port=port, security=Security.NONE)
        mirror = Mirror(engine, settings, mailbox_id, mail_user, ["INBOX"])
        mirror.sync("the first sync")

        mail_user.expunge("INBOX", [uids[2]])
        hide.uid = uids[0]
        result = sync(engine, settings, mailbox_id)

        assert (result.status, result.error_code) == (SyncRunStatus.FAILED, "folder_diverged")
        with session_scope(engine) as session:
            run = session.get(SyncRun, result.run_id)
            assert run is not None and run.error is not None
            assert "'INBOX'" in run.error, "the run names the folder and why"
        assert ("INBOX", uids[0]) in mirror.expected(), "still on the server"
        assert ("INBOX", uids[0]) in mirror.stored(), "so still stored, not unlinked"

        hide.uid = None
        mirror.sync("the next sync, the server consistent again")
