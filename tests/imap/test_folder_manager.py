"""Folder discovery against the real test Dovecot: tree, special-use and localized types."""

from __future__ import annotations

import pytest

from app.imap import FolderManager, ImapConnection
from app.imap.folder_manager import folder_type
from tests.support.dovecot import MailUser
from tests.support.mailgen import make_message


def test_special_use_folders_are_typed(connection: ImapConnection) -> None:
    types = {folder.full_name: folder.type for folder in FolderManager(connection).folders()}
    assert types == {
        "INBOX": "inbox",
        "Sent": "sent",
        "Drafts": "drafts",
        "Trash": "trash",
        "Junk": "spam",
        "Archive": "archive",
    }


def test_localized_names_are_typed_when_the_server_gives_no_attribute(
    mail_user: MailUser, connection: ImapConnection
) -> None:
    for name in ["Gesendet", "Envoyés", "Отправленные", "Papierkorb", "Projects/Sent Items"]:
        mail_user.create_folder(name)
    types = {folder.full_name: folder.type for folder in FolderManager(connection).folders()}
    assert types["Gesendet"] == "sent"
    assert types["Envoyés"] == "sent"
    assert types["Отправленные"] == "sent"
    assert types["Papierkorb"] == "trash"
    assert types["Projects/Sent Items"] == "sent"
    assert types["Projects"] == "other"


def test_hierarchy_has_parents_and_inbox_first(
    mail_user: MailUser, connection: ImapConnection
) -> None:
    mail_user.create_folder("Projects/Alpha/Drafts 2026")
    manager = FolderManager(connection)
    folders = manager.folders()
    assert folders[0].full_name == "INBOX"
    by_name = {folder.full_name: folder for folder in folders}
    leaf = by_name["Projects/Alpha/Drafts 2026"]
    assert (leaf.name, leaf.parent, leaf.delimiter) == ("Drafts 2026", "Projects/Alpha", "/")
    assert by_name["Projects/Alpha"].parent == "Projects"
    assert by_name["Projects"].parent is None
    order = [folder.full_name for folder in folders]
    assert order.index("Projects") < order.index("Projects/Alpha") < order.index(leaf.full_name)

    roots = {node.folder.full_name: node for node in manager.tree()}
    alpha = roots["Projects"].children[0]
    assert alpha.folder.full_name == "Projects/Alpha"
    assert [child.folder.name for child in alpha.children] == ["Drafts 2026"]


def test_noselect_parent_is_not_selectable(mail_user: MailUser, connection: ImapConnection) -> None:
    mail_user.create_folder("Parent/Child")  # Dovecot lists the implied parent as \Noselect
    by_name = {folder.full_name: folder for folder in FolderManager(connection).folders()}
    assert by_name["Parent/Child"].selectable
    assert not by_name["Parent"].selectable


def test_status_counts_without_selecting(mail_user: MailUser, connection: ImapConnection) -> None:
    for _ in range(3):
        last_uid = mail_user.append("Sent", make_message())
    status = FolderManager(connection).status("Sent")
    assert status.messages == 3
    assert status.uidnext == last_uid + 1
    assert status.uidvalidity == mail_user.uidvalidity("Sent")
    assert status.highestmodseq is not None


@pytest.mark.parametrize(
    ("full_name", "delimiter", "attributes", "expected"),
    [
        ("inbox", "/", frozenset(), "inbox"),
        ("[Gmail]/Sent Mail", "/", frozenset(), "sent"),
        ("INBOX.Sent Messages", ".", frozenset(), "sent"),
        ("Elementos enviados", None, frozenset(), "sent"),
        ("Whatever", "/", frozenset({"\\Junk"}), "spam"),
        ("[Gmail]/All Mail", "/", frozenset({"\\All"}), "other"),
        ("Sent/2019", "/", frozenset(), "other"),
    ],
)
def test_folder_type_rules(
    full_name: str, delimiter: str | None, attributes: frozenset[str], expected: str
) -> None:
    assert folder_type(full_name, delimiter, attributes) == expected


def test_listing_reports_every_folder_status_in_one_round_trip(
    mail_user: MailUser, connection: ImapConnection
) -> None:
    mail_user.create_folder("Заметки")
    mail_user.append("Заметки", make_message())
    mail_user.append("INBOX", make_message())
    mail_user.append("INBOX", make_message())
    manager = FolderManager(connection)
    before = connection.commands_sent
    listing = manager.listing()
    assert connection.commands_sent == before + 1
    assert {folder.full_name for folder in listing.folders} == set(listing.statuses)
    assert listing.statuses["INBOX"].messages == 2
    assert listing.statuses["Заметки"] == manager.status("Заметки")
