"""Each server quirk the matrix met, on the server that has it, in a test of its own."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.sync.service import sync_mailbox
from tests.support.debian_servers import Courier, Cyrus
from tests.support.factories import MailboxFactory
from tests.support.imap_account import ImapAccount
from tests.support.server_matrix import NOW, OLD, RECENT, Mirror, append, enable_sync
from tests.support.snapshot import events_of, folder_row

pytestmark = pytest.mark.parametrize("databases", ["sqlite"], indirect=True)


def test_without_uidnext_on_select_old_mail_above_the_window_is_never_fetched_as_new(
    engine: Engine, settings: Settings, courier: Courier, add_mailbox: MailboxFactory
) -> None:
    """Courier sends no [UIDNEXT] on SELECT: the first sync's high mark is still the server's."""
    user = courier.add_user()
    append(user, "INBOX", "new", RECENT)
    _, imported = append(user, "INBOX", "imported old", OLD)  # the highest UID, out of window
    mailbox_id = add_mailbox(user)
    mirror = Mirror(engine, settings, mailbox_id, user, ["INBOX"])
    mirror.outside_window = {imported}
    mirror.sync("the first sync")

    _, arrived = append(user, "INBOX", "arrived", NOW)
    result = mirror.sync("the next sync")

    assert result.counts.new == 1, "only the message that arrived is new"
    assert mirror.announced() == [arrived]


def _folders_sharing_a_uidvalidity(user: ImapAccount, names: list[str]) -> None:
    """Create `names` within one second, as Cyrus then gives them one UIDVALIDITY."""
    for _ in range(3):
        for name in names:
            user.create_folder(name)
        if len({user.uidvalidity(name) for name in names}) == 1:
            return
        for name in reversed(names):
            user.delete_folder(name)
    raise AssertionError(f"Cyrus gave {names} different UIDVALIDITYs three times")


def _synced_folders(
    engine: Engine, settings: Settings, mailbox_id: int, names: list[str]
) -> dict[str, int]:
    sync_mailbox(engine, mailbox_id, settings, folders_only=True)
    enable_sync(engine, mailbox_id, names)
    rows = {name: folder_row(engine, mailbox_id, name) for name in names}
    return {name: row.id for name, row in rows.items() if row is not None and row.id is not None}


def test_a_renamed_folder_and_subfolder_sharing_a_uidvalidity_keep_their_mail(
    engine: Engine, settings: Settings, cyrus: Cyrus, add_mailbox: MailboxFactory
) -> None:
    """Cyrus's UIDVALIDITY is the clock: parent and child created in one second share it."""
    user = cyrus.add_user()
    _folders_sharing_a_uidvalidity(user, ["Projects", "Projects/2026"])
    append(user, "Projects", "plan", RECENT)
    append(user, "Projects/2026", "budget", RECENT)
    mailbox_id = add_mailbox(user)
    ids = _synced_folders(engine, settings, mailbox_id, ["Projects", "Projects/2026"])
    mirror = Mirror(engine, settings, mailbox_id, user, ["INBOX", "Projects", "Projects/2026"])
    mirror.sync("the first sync")

    user.rename_folder("Projects", "Clients")
    mirror.folders = ["INBOX", "Clients", "Clients/2026"]
    mirror.sync("the rename")

    renamed = events_of(engine, mailbox_id, "folder.renamed")
    assert {(e["folder_id"], e["new_name"]) for e in renamed} == {
        (ids["Projects"], "Clients"),
        (ids["Projects/2026"], "Clients/2026"),
    }, "each folder keeps its row, its mail and its sync setting under the new name"


def test_folders_sharing_a_uidvalidity_one_deleted_one_renamed_are_told_apart_by_content(
    engine: Engine, settings: Settings, cyrus: Cyrus, add_mailbox: MailboxFactory
) -> None:
    """Two folders share a UIDVALIDITY; one is deleted, the other renamed: UIDVALIDITY
    cannot tell which is which (pairing the wrong one would give its UIDs to the other's
    mail), the mail each holds can."""
    user = cyrus.add_user()
    _folders_sharing_a_uidvalidity(user, ["Alpha", "Beta"])
    append(user, "Alpha", "alpha mail", RECENT)
    append(user, "Beta", "beta mail", RECENT)
    mailbox_id = add_mailbox(user)
    ids = _synced_folders(engine, settings, mailbox_id, ["Alpha", "Beta"])
    mirror = Mirror(engine, settings, mailbox_id, user, ["INBOX", "Alpha", "Beta"])
    mirror.sync("the first sync")

    user.delete_folder("Alpha")
    user.rename_folder("Beta", "Gamma")
    mirror.folders = ["INBOX", "Gamma"]
    mirror.sync("a delete and a rename")

    renamed = events_of(engine, mailbox_id, "folder.renamed")
    assert [(e["folder_id"], e["new_name"]) for e in renamed] == [(ids["Beta"], "Gamma")]
    deleted = events_of(engine, mailbox_id, "folder.deleted")
    assert [(e["full_name"], e["kept"]) for e in deleted] == [("Alpha", True)]


def test_a_folder_renamed_on_courier_keeps_its_row_and_downloads_nothing_again(
    engine: Engine, settings: Settings, courier: Courier, add_mailbox: MailboxFactory
) -> None:
    """Courier's RENAME gives the folder a new UIDVALIDITY: the rename is told by content."""
    user = courier.add_user()
    user.create_folder("INBOX.Projects")
    append(user, "INBOX.Projects", "plan", RECENT)
    append(user, "INBOX.Projects", "budget", RECENT)
    mailbox_id = add_mailbox(user)
    ids = _synced_folders(engine, settings, mailbox_id, ["INBOX.Projects"])
    mirror = Mirror(engine, settings, mailbox_id, user, ["INBOX", "INBOX.Projects"])
    mirror.sync("the first sync")
    before = user.uidvalidity("INBOX.Projects")

    user.rename_folder("INBOX.Projects", "INBOX.Clients")
    assert user.uidvalidity("INBOX.Clients") != before, "the quirk this test is about"
    mirror.folders = ["INBOX", "INBOX.Clients"]
    result = mirror.sync("the rename")

    assert [
        (e["folder_id"], e["new_name"]) for e in events_of(engine, mailbox_id, "folder.renamed")
    ] == [(ids["INBOX.Projects"], "INBOX.Clients")]
    assert result.counts.new == 0, "its mail is relinked by identity, not downloaded again"
    assert mirror.announced() == []


def test_a_folder_deleted_while_another_appears_with_other_mail_is_no_rename(
    engine: Engine, settings: Settings, courier: Courier, add_mailbox: MailboxFactory
) -> None:
    user = courier.add_user()
    user.create_folder("INBOX.Alpha")
    append(user, "INBOX.Alpha", "alpha mail", RECENT)
    mailbox_id = add_mailbox(user)
    _synced_folders(engine, settings, mailbox_id, ["INBOX.Alpha"])
    mirror = Mirror(engine, settings, mailbox_id, user, ["INBOX", "INBOX.Alpha"])
    mirror.sync("the first sync")

    user.delete_folder("INBOX.Alpha")
    user.create_folder("INBOX.Beta")
    append(user, "INBOX.Beta", "beta mail", RECENT)  # as many messages, other mail
    mirror.folders = ["INBOX"]
    mirror.sync("a delete and a create")

    assert events_of(engine, mailbox_id, "folder.renamed") == []
    deleted = events_of(engine, mailbox_id, "folder.deleted")
    assert [(e["full_name"], e["kept"]) for e in deleted] == [("INBOX.Alpha", True)]
